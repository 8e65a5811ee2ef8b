"""URLs as inputs: one place that turns a path or URL into bytes, a listing or a zarr store, via fsspec.

Any path the readers accept may be a URL (``s3://``, ``gs://``, ``https://``, ``file://``, anything
fsspec knows). Object stores are read with the protocol's fsspec filesystem (``s3fs``, ``gcsfs``:
``pip install "dino-boc[remote]"``); the standard environment of each is honoured as those libraries do
(``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, credentials files), so the same command works against MinIO,
Ceph or a local test server.

Options for the filesystems (``{"anon": True}`` for public buckets such as ``s3://cellpainting-gallery``,
``{"endpoint_url": ...}``, ...) are set for a block of code with :func:`storage_options`, or for the
whole process with :func:`set_storage_options`. A run (``embed_dataset(..., storage_options=...)``, the
CLI's ``--anon`` / ``--storage-option KEY=VALUE``) takes one set, :func:`run_storage_options`, and
carries it in its :class:`~dino_boc.io.options.ReadOptions` to every reader, DataLoader worker
processes included (spawned workers do not inherit this module's state). The options may hold
credentials: nothing of the library writes them to a file or a log.

Listings are paged (:func:`list_pages`): an S3 or GCS prefix is read :data:`LIST_PAGE_SIZE` keys per
request, so listing a prefix of 10^6 objects holds one page, not the million names.

Whole objects are fetched in one request (a Cell Painting site is a few MB per channel, and one GET is
the fastest way to read it from an object store); transient failures (5xx answers, timeouts, resets) are
retried with exponential backoff, and what still fails is an :class:`~dino_boc.errors.ImageReadError`
naming the URL, which a batch run records in its errors file before going on.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import posixpath
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from dino_boc.errors import ImageReadError, InputError, MissingExtraError

__all__ = [
    "RETRIES",
    "READ_TIMEOUT_S",
    "FETCH_THREADS",
    "map_fetches",
    "with_retries",
    "is_url",
    "storage_options",
    "set_storage_options",
    "get_storage_options",
    "filesystem",
    "fetch",
    "open_bytes",
    "url_exists",
    "url_isdir",
    "url_glob",
    "url_parent",
    "url_join",
    "zarr_store",
    "parse_storage_option",
    "LIST_PAGE_SIZE",
    "list_pages",
    "url_is_folder",
    "run_storage_options",
]

logger = logging.getLogger(__name__)

FETCH_THREADS = 8
"""Objects of one input (e.g. the 5 channel files of a Cell Painting site) fetched at once, per worker."""

RETRIES = 4
"""Tries of one fetch after the first, waiting 0.25 s, 0.5 s, 1 s, 2 s (x ``backoff``) in between."""

READ_TIMEOUT_S = 60.0
"""A connection that sends nothing for this long is a (transient) failure: a stalled object is retried."""

_EXTRA = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "http": "aiohttp", "https": "aiohttp"}
_OPTIONS: dict[str, Any] = {}
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, InputError)
T = TypeVar("T")


def is_url(path: Any) -> bool:
    """True when ``path`` is a string with a ``protocol://`` prefix (``s3://b/k``, ``https://h/p``, ``file:///x``)."""
    if not isinstance(path, str) or "://" not in path:
        return False
    protocol = path.split("://", 1)[0]
    return protocol.isidentifier() or protocol.replace("+", "").replace("-", "").isalnum()


def set_storage_options(options: Mapping[str, Any] | None) -> None:
    """Use ``options`` for every URL opened from now on in this process (None or ``{}``: the defaults)."""
    _OPTIONS.clear()
    _OPTIONS.update(options or {})


def get_storage_options() -> dict[str, Any]:
    """The options currently passed to every fsspec filesystem."""
    return dict(_OPTIONS)


@contextlib.contextmanager
def storage_options(options: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Iterator[None]:
    """Open URLs with these fsspec options inside the block, e.g. ``with storage_options(anon=True): ...``.

    Example:
        >>> with dino_boc.io.fs.storage_options(anon=True):
        ...     dino_boc.embed_dataset("s3://cellpainting-gallery/.../load_data.csv", "features.parquet")
    """
    saved = dict(_OPTIONS)
    set_storage_options({**saved, **dict(options or {}), **kwargs})
    try:
        yield
    finally:
        set_storage_options(saved)


def parse_storage_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from the command line; ``true``/``false``/numbers become bool/int/float.

    Raises:
        InputError: no ``=`` or an empty key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"storage option {text!r}; expected KEY=VALUE, e.g. endpoint_url=http://127.0.0.1:9000")
    low = value.strip().lower()
    if low in ("true", "false"):
        return key.strip(), low == "true"
    for kind in (int, float):
        try:
            return key.strip(), kind(value)
        except ValueError:
            pass
    return key.strip(), value


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower()


def filesystem(url: str):
    """The fsspec filesystem for ``url`` with the current storage options.

    Raises:
        MissingExtraError: fsspec or the protocol's package (s3fs, gcsfs, aiohttp) is not installed.
    """
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec comes with the io extras
        raise MissingExtraError('reading URLs needs fsspec: pip install "dino-boc[remote]"') from exc
    protocol = _protocol(url)
    # the options are for object stores; plain HTTP and local files take none
    options = {} if protocol in ("file", "local", "http", "https") else dict(_OPTIONS)
    if protocol in ("http", "https"):
        import aiohttp

        options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=READ_TIMEOUT_S,
                                                                     sock_read=READ_TIMEOUT_S)}
    elif protocol in ("s3", "s3a") and "config_kwargs" not in options:
        options["config_kwargs"] = {"read_timeout": READ_TIMEOUT_S, "connect_timeout": READ_TIMEOUT_S}
    elif protocol in ("gs", "gcs") and options.pop("anon", False):
        options.setdefault("token", "anon")  # --anon: gcsfs's word for public buckets
    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError as exc:
        package = _EXTRA.get(protocol, f"the fsspec backend for {protocol}://")
        raise MissingExtraError(f'reading {protocol}:// URLs needs {package}: pip install "dino-boc[remote]"') from exc


def _transient(exc: BaseException) -> bool:
    """Worth another try: timeouts, resets, 5xx answers; not missing objects or refused access."""
    if isinstance(exc, _PERMANENT) or isinstance(exc, MissingExtraError):
        return False
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    text = f"{type(exc).__name__} {exc}".lower()
    if any(s in text for s in ("nosuchkey", "not found", "404", "403", "accessdenied", "forbidden")):
        return False
    return isinstance(exc, (OSError, TimeoutError, ConnectionError)) or any(
        s in text for s in ("timeout", "timed out", "reset", "disconnect", "500", "502", "503", "504", "slowdown")
    )


def with_retries(action: Callable[[], T], what: str, *, retries: int | None = None, backoff: float = 0.25) -> T:
    """Run ``action``; retry transient failures ``retries`` (default :data:`RETRIES`) times with exponential backoff.

    Raises:
        ImageReadError: a permanent failure at once, or the last transient one, naming ``what``.
    """
    retries = RETRIES if retries is None else retries
    for attempt in range(retries + 1):
        try:
            return action()
        except Exception as exc:  # fsspec backends raise their own classes; _transient sorts them
            if isinstance(exc, MissingExtraError):
                raise
            if isinstance(exc, FileNotFoundError):
                raise ImageReadError(f"no such object: {what!r}; check the URL (and --anon for public buckets)") from exc
            if not _transient(exc) or attempt == retries:
                tries = f" after {attempt + 1} tries" if attempt else ""
                raise ImageReadError(
                    f"cannot fetch {what!r}{tries}: {type(exc).__name__}: {exc}. Check the URL, credentials "
                    "(--anon for public buckets, AWS_ENDPOINT_URL for other S3 servers) and the network"
                ) from exc
            wait = backoff * 2**attempt
            logger.info("fetching %s failed (%s: %s); retrying in %.2f s", what, type(exc).__name__, exc, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def fetch(url: str) -> bytes:
    """The whole object at ``url`` (retried on transient errors).

    Raises:
        ImageReadError: missing object, refused access, or transient errors that persisted.
    """
    fs = filesystem(url)
    return with_retries(lambda: fs.cat_file(url), url)


def open_bytes(path: str | os.PathLike) -> str | os.PathLike | io.BytesIO:
    """A local path unchanged; a URL fetched into a seekable in-memory file (``.name`` = the URL)."""
    if not is_url(path):
        return path
    buffer = io.BytesIO(fetch(str(path)))
    buffer.name = str(path)
    return buffer


def map_fetches(read: Callable[[Any], T], paths: Sequence[Any], *, threads: int | None = None) -> Iterator[T]:
    """``read`` of each path, in order; URLs are read by up to ``threads`` (:data:`FETCH_THREADS`) threads at once.

    Local paths are read one after another (no threads). The first failure, in ``paths`` order, is raised
    when its result is reached.
    """
    if not any(is_url(p) for p in paths) or len(paths) < 2:
        return map(read, paths)
    from concurrent.futures import ThreadPoolExecutor

    def run() -> Iterator[T]:
        with ThreadPoolExecutor(max_workers=min(len(paths), threads or FETCH_THREADS)) as pool:
            yield from pool.map(read, paths)

    return run()


def url_exists(url: str) -> bool:
    """Whether an object or prefix exists at ``url`` (retried; False when it does not)."""
    fs = filesystem(url)
    return with_retries(lambda: fs.exists(url), url)


def url_isdir(url: str) -> bool:
    """Whether ``url`` is a prefix ("folder") rather than an object."""
    fs = filesystem(url)
    return with_retries(lambda: fs.isdir(url), url)


def url_glob(pattern: str) -> list[str]:
    """Objects matching ``pattern`` (``*``, ``?``, ``[``, ``**``), sorted, as full URLs."""
    fs = filesystem(pattern)
    found = with_retries(lambda: fs.glob(pattern), pattern)
    return sorted(_full(pattern, p) for p in found)


def url_parent(url: str) -> str:
    """The URL of the "folder" holding ``url``."""
    return url.rstrip("/").rsplit("/", 1)[0]


def url_join(base: str, relative: str) -> str:
    """``relative`` under the URL ``base`` (``..`` resolved); an absolute URL ``relative`` is kept."""
    if is_url(relative):
        return relative
    protocol, rest = base.split("://", 1)
    return f"{protocol}://{posixpath.normpath(posixpath.join(rest, relative))}"


def _full(like: str, path: str) -> str:
    """fsspec lists ``bucket/key``; give back ``s3://bucket/key`` (HTTP listings are already full URLs)."""
    return path if is_url(path) else f"{_protocol(like)}://{path.lstrip('/') if _protocol(like) != 'file' else path}"


LIST_PAGE_SIZE = 1000
"""Keys per listing request (S3 ``ListObjectsV2`` ``MaxKeys``, GCS ``maxResults``; 1000 is S3's maximum)."""

_PAGED = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


def run_storage_options(options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The one set of fsspec options of a run: those in force now (:func:`storage_options`,
    :func:`set_storage_options`) updated with the run's own ``options``.

    Returns:
        A new dict; pass it on explicitly (e.g. in ``ReadOptions.storage_options``) to processes that do
        not inherit this one's state.
    """
    return {**_OPTIONS, **dict(options or {})}


def list_pages(url: str, *, prefix: str = "", page_size: int | None = None) -> Iterator[list[tuple[str, bool]]]:
    """One "folder" of an object store, one request's page at a time.

    S3 (``ListObjectsV2`` with ``Delimiter="/"``) and GCS (``objects.list`` with ``delimiter="/"``) are
    read page by page with continuation tokens, bypassing the fsspec listing cache (which would keep
    every name): memory holds one page. Other protocols (``file://``, ``https://`` index pages, ...)
    are listed with fsspec's ``ls``, the folder as one page. Each request is retried like a fetch.

    Args:
        url: the folder, e.g. ``s3://bucket/plates/p1`` (a trailing ``/`` is ignored).
        prefix: only names in the folder starting with this stem (the store filters them), e.g. the
            fixed part ``r01`` of a glob ``r01*.tiff``.
        page_size: keys per request; None: :data:`LIST_PAGE_SIZE`.

    Returns:
        An iterator of pages; a page is a list of ``(URL, is_folder)`` (objects, and sub-folders without
        their trailing ``/``), sorted as the store orders keys: by bytes, a sub-folder ``a`` as ``a/``
        (so after ``a.tif`` and ``a-1.tif``, before ``a0.tif``). Pages follow one another in that order.

    Raises:
        ImageReadError: the listing failed (no such bucket, refused access, persistent errors).
        MissingExtraError: the protocol's package is not installed.
        InputError: ``page_size`` is not a positive int.
    """
    size = LIST_PAGE_SIZE if page_size is None else page_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"page_size={page_size!r}; expected a positive number of keys per listing request")
    fs = filesystem(url)
    kind = _PAGED.get(_protocol(url))
    if kind is None:
        yield _ls_page(fs, url, prefix)
        return
    bucket, key, _ = fs.split_path(url)
    stem = (key.strip("/") + "/" if key.strip("/") else "") + prefix
    protocol = _protocol(url)
    token: str | None = None
    pages = 0
    while True:
        page = with_retries(lambda: _list_request(fs, kind, bucket, stem, size, token), url)
        pages += 1
        if kind == "s3":
            folders = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            names = [c["Key"] for c in page.get("Contents", [])]
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        else:
            folders, names = list(page.get("prefixes", [])), [i["name"] for i in page.get("items", [])]
            token = page.get("nextPageToken")
        logger.debug("listing %s: page %d, %d keys", url, pages, len(folders) + len(names))
        entries = sorted([(f, True) for f in folders] + [(n, False) for n in names if not n.endswith("/")])
        yield [(f"{protocol}://{bucket}/{k.rstrip('/')}", is_dir) for k, is_dir in entries]
        if not token:
            return


def url_is_folder(url: str) -> bool:
    """Whether anything is listed under ``url/``: one key is asked for, and nothing is cached (fsspec's
    ``isdir`` lists, and keeps, the whole folder).

    Raises:
        ImageReadError: refused access, persistent errors (a missing bucket is False).
    """
    try:
        return bool(next(list_pages(url, page_size=1), []))
    except ImageReadError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return False
        raise


def _list_request(fs, kind: str, bucket: str, stem: str, size: int, token: str | None) -> dict:
    """One listing request (a page) through the filesystem's own client, its event loop and its retries."""
    from fsspec.asyn import sync

    if kind == "s3":
        kwargs = {"Bucket": bucket, "Prefix": stem, "Delimiter": "/", "MaxKeys": size}
        if token:
            kwargs["ContinuationToken"] = token
        return sync(fs.loop, fs._call_s3, "list_objects_v2", **kwargs)
    params = {"prefix": stem or None, "delimiter": "/", "maxResults": size, "pageToken": token}
    return sync(fs.loop, fs._call, "GET", "b/{}/o", bucket, json_out=True, **params)


def _ls_page(fs, url: str, prefix: str) -> list[tuple[str, bool]]:
    """A folder of a filesystem without paged listings, as one page sorted like :func:`list_pages`."""
    found = with_retries(lambda: fs.ls(url.rstrip("/"), detail=True), url)
    entries = []
    for info in found:
        full = _full(url, str(info["name"])).rstrip("/")
        if full.rsplit("/", 1)[-1].startswith(prefix) and full != url.rstrip("/"):
            entries.append((full + "/" if info.get("type") == "directory" else full, info.get("type") == "directory"))
    return [(name.rstrip("/") if is_dir else name, is_dir) for name, is_dir in sorted(entries)]


def zarr_store(path: str | os.PathLike):
    """What ``zarr.open(store=...)`` takes: a local path unchanged, a URL as a read-only fsspec store."""
    if not is_url(path):
        return str(path)
    from zarr.storage import FsspecStore

    filesystem(str(path))  # a missing backend is a MissingExtraError naming the extra
    options = dict(_OPTIONS) if _protocol(str(path)) not in ("http", "https") else {}
    return FsspecStore.from_url(str(path).rstrip("/"), storage_options=options, read_only=True)
