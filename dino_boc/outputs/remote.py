"""An output URL (``s3://bucket/run/features.parquet``): the run writes locally, then uploads, table last.

Object stores have no atomic rename, and a shard half-written to a bucket must never be trusted. So a
run whose output is a URL keeps its shards and manifest in a local staging folder named after the URL
(``~/.cache/dino_boc/remote-outputs/<hash>/``, or ``$DINO_BOC_STAGING``), where ``--resume`` finds them
after a crash; when the run is done its files are uploaded one object PUT each, the errors file and side
files first and the table last, so a table object in the bucket is always a complete run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from dino_boc.io.fs import filesystem, is_url, url_parent, with_retries

__all__ = ["staging_path", "upload_outputs"]


def staging_path(url: str) -> Path:
    """The local file a run writes before uploading to ``url`` (the same for every run of that URL)."""
    root = Path(os.environ.get("DINO_BOC_STAGING") or Path.home() / ".cache" / "dino_boc" / "remote-outputs")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return root / digest / url.rstrip("/").rsplit("/", 1)[-1]


def upload_outputs(local: str | os.PathLike, url: str) -> list[str]:
    """Upload the table at ``local`` and its side files (``<stem>.*`` next to it) next to ``url``.

    Side files go first, the table last (the commit). Each upload is retried on transient errors.

    Returns:
        the URLs written, in order.

    Raises:
        ImageReadError: an upload that still failed after the retries (the local files are kept).
    """
    local = Path(local)
    if not is_url(url):
        raise ValueError(f"{url!r} is not a URL")
    stem = local.name.split(".")[0]
    sides = sorted(p for p in local.parent.iterdir() if p.is_file() and p != local and p.name.startswith(stem + ".")
                   and not p.name.endswith(".lock"))  # the run's lock stays local
    fs = filesystem(url)
    written = []
    for path in [*sides, local]:
        dest = url if path == local else f"{url_parent(url)}/{path.name}"
        with_retries(lambda p=path, d=dest: fs.put_file(str(p), d), dest)
        written.append(dest)
    return written
