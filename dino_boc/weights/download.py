"""Downloading released checkpoints from a URL (e.g. the signed links Meta e-mails for Cell-DINO):
resumable, with a progress bar, checked against the SHA-256 prefix that released file names carry
(``dinov2_vitl16_...-ef7c17ff.pth`` must hash to ``ef7c17ff...``)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dino_boc.errors import WeightsError

__all__ = ["is_url", "download", "expected_sha256_prefix", "check_sha256_prefix", "public_url"]

logger = logging.getLogger(__name__)

#: ``name-<8 to 64 hex digits>.pth``: the hash prefix torch.hub / the DINOv2 release put in file names
_HASHED = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt|bin|safetensors)$")
_CHUNK = 1 << 20


def is_url(spec: str | os.PathLike) -> bool:
    return isinstance(spec, str) and spec.startswith(("http://", "https://"))


def public_url(url: str) -> str:
    """``url`` without its query string and credentials (a signed link must not be recorded)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


def expected_sha256_prefix(filename: str) -> str | None:
    """The hash prefix a released file name carries (``...-ef7c17ff.pth`` -> ``"ef7c17ff"``), or None."""
    m = _HASHED.search(filename)
    return m.group(1) if m else None


def check_sha256_prefix(path: Path, digest: str, *, name: str | None = None) -> None:
    """Refuse a file whose SHA-256 does not start with the prefix in its (released) name.

    Raises:
        WeightsError: the file is corrupt, truncated or not the release its name says.
    """
    prefix = expected_sha256_prefix(name or path.name)
    if prefix and not digest.startswith(prefix):
        raise WeightsError(
            f"{name or path.name} should have a SHA-256 starting with {prefix} (its name says so), but {path} "
            f"hashes to {digest}: the download is corrupt or incomplete. Delete it and download it again"
        )


def _filename(url: str) -> str:
    name = unquote(Path(urlsplit(url).path).name)
    if not name or name in (".", ".."):
        raise WeightsError(f"cannot tell a file name from the URL {public_url(url)}; download it and pass the path")
    return name


def download(url: str, folder: str | os.PathLike, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``folder`` and return the file, resuming an interrupted download.

    The bytes go to ``<name>.part`` first; a later call sends ``Range: bytes=<size>-`` and appends (a server
    that ignores ranges makes it start over). When complete, the SHA-256 is checked against the prefix in
    the file name (if any) and the file is renamed to ``<name>``; an existing complete file is reused.

    Args:
        url: ``http://`` or ``https://`` URL, e.g. a signed download link (its query string is never logged).
        folder: where the file is kept.
        progress: show a progress bar (tqdm).
        timeout: seconds without data before giving up.

    Raises:
        WeightsError: HTTP errors, an interrupted transfer (run again to resume), or a hash mismatch (the
            partial file is removed).
    """
    name = _filename(url)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target, part = folder / name, folder / (name + ".part")
    if target.is_file():
        logger.info("reusing %s", target)
        return target
    h = hashlib.sha256()
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    shown = public_url(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            if have and resp.status == 206:
                with open(part, "rb") as f:  # resume: the hash starts from the bytes already here
                    for block in iter(lambda: f.read(_CHUNK), b""):
                        h.update(block)
                mode = "ab"
            else:
                have, mode = 0, "wb"
            total = resp.length + have if resp.length is not None else None
            _copy(resp, part, mode, h, have=have, total=total, desc=name, progress=progress)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"downloading {shown} failed: HTTP {exc.code} {exc.reason}; signed links expire, "
                           "request a new one if needed") from None
    except (urllib.error.URLError, HTTPException, OSError) as exc:
        size = part.stat().st_size if part.is_file() else 0
        raise WeightsError(f"downloading {shown} was interrupted after {size} bytes ({exc}); run the same "
                           f"command again to resume from {part}") from None
    digest = h.hexdigest()
    try:
        check_sha256_prefix(part, digest, name=name)
    except WeightsError:
        part.unlink()
        raise
    os.replace(part, target)
    logger.info("downloaded %s to %s (SHA-256 %s)", shown, target, digest)
    return target


def _copy(resp, part: Path, mode: str, h, *, have: int, total: int | None, desc: str, progress: bool) -> None:
    from tqdm.auto import tqdm

    expected = None if total is None else total - have
    got = 0
    with open(part, mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=desc,
                                       disable=not progress) as bar:
        for block in iter(lambda: resp.read(_CHUNK), b""):
            out.write(block)
            h.update(block)
            got += len(block)
            bar.update(len(block))
    if expected is not None and got < expected:
        raise HTTPException(f"got {got} of {expected} bytes")
