"""Where shards, manifests and outputs are written: a local folder or an object-store prefix, one interface.

A :class:`Store` holds named files directly under one root and writes each of them whole:

- :class:`LocalStore`, a folder: a file is written to ``.NAME.tmp`` in the same folder, flushed to disk
  (``fsync``) and renamed onto ``NAME`` (``os.replace`` is atomic on POSIX file systems).
- :class:`UrlStore`, a prefix of an object store (``s3://bucket/run``, ``gs://...``, anything fsspec can
  write): there is no rename, but an object PUT is atomic, so a file is first written to a local
  temporary file, hashed, then uploaded under its final name in one PUT (a multipart upload too becomes
  visible only when it completes). Every request is retried on transient errors
  (:func:`dino_boc.io.fs.with_retries`); what still fails is an :class:`~dino_boc.errors.OutputError`
  naming the URL.

The shard commit protocol is built on it (``outputs/shards.py``): a shard is put, then the manifest that
lists it with its sha256 is put; a file the manifest does not list is a leftover of a crash.

Usage::

    store = as_store("s3://bucket/run/features.parquet.shards")   # or a local path
    sha = store.child("rank-00000").put_atomic("shard-000000.parquet", lambda f: f.write(data))
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from dino_boc.errors import ImageReadError, InputError, OutputError
from dino_boc.io.digest import file_sha256
from dino_boc.io.fs import filesystem, is_url, url_parent, with_retries
from dino_boc.outputs.guard import writing

__all__ = ["Store", "LocalStore", "UrlStore", "as_store", "parent_store", "atomic_write"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Writer = Callable[[BinaryIO], object]

_KEPT = "Shards committed so far are kept: run again with --resume (resume=True) once this is fixed"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Writer) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync, then rename onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Store(abc.ABC):
    """Files written whole under one root (a folder or a URL prefix).

    Names are plain file names (no ``/``); :meth:`child` gives the store of a sub-folder.
    """

    root: Path | str

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def __str__(self) -> str:
        return str(self.root)

    @abc.abstractmethod
    def where(self, name: str) -> str:
        """The path or URL of ``name``, for messages and summaries."""

    @abc.abstractmethod
    def child(self, name: str) -> "Store":
        """The store of the sub-folder ``name``."""

    def ensure(self) -> None:
        """Create the root if the storage needs folders (nothing for object stores).

        Raises:
            OutputError: the folder cannot be created.
        """

    @abc.abstractmethod
    def put_atomic(self, name: str, write: Writer) -> str:
        """Write ``name`` whole: ``write(file)`` fills it; readers see the old file or the new one, never a part.

        Returns:
            the sha256 of the bytes written (64 hex digits).

        Raises:
            OutputError: the file cannot be written (after the retries, for object stores).
        """

    @abc.abstractmethod
    def put_file(self, name: str, source: str | os.PathLike) -> None:
        """Copy the local file ``source`` to ``name``, whole (one PUT for object stores).

        Raises:
            OutputError: the file cannot be written.
        """

    @abc.abstractmethod
    def read(self, name: str, use: Callable[[BinaryIO], T]) -> T:
        """``use(file)`` on ``name`` opened for reading (seekable); retried on transient errors for URLs.

        Raises:
            FileNotFoundError: there is no such file.
            OutputError: an object that still cannot be read after the retries.
        """

    def sha256(self, name: str) -> str:
        """sha256 of the bytes of ``name``, read in 1 MiB blocks.

        Raises:
            FileNotFoundError: there is no such file.
        """
        def digest(f: BinaryIO) -> str:
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return h.hexdigest()

        return self.read(name, digest)

    @abc.abstractmethod
    def exists(self, name: str) -> bool:
        """Whether the file ``name`` exists."""

    @abc.abstractmethod
    def list(self) -> list[str]:
        """Names of the files directly under the root, sorted; empty when the root does not exist."""

    @abc.abstractmethod
    def folders(self) -> list[str]:
        """Names of the sub-folders (prefixes) directly under the root, sorted."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name``; a missing file is not an error."""

    @abc.abstractmethod
    def delete_all(self) -> bool:
        """Remove the root and everything under it. Returns whether there was anything to remove.

        Raises:
            OutputError: it cannot be removed.
        """


class LocalStore(Store):
    """A local folder (see the module doc: temporary file, ``fsync``, rename)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def where(self, name: str) -> str:
        return str(self.root / name)

    def child(self, name: str) -> "LocalStore":
        return LocalStore(self.root / name)

    def ensure(self) -> None:
        with writing(self.root):
            self.root.mkdir(parents=True, exist_ok=True)

    def put_atomic(self, name: str, write: Writer) -> str:
        atomic_write(self.root / name, write)
        return file_sha256(self.root / name)

    def put_file(self, name: str, source: str | os.PathLike) -> None:
        with writing(self.root / name):
            with open(source, "rb") as src:
                atomic_write(self.root / name, lambda f: shutil.copyfileobj(src, f, 1 << 20))

    def read(self, name: str, use: Callable[[BinaryIO], T]) -> T:
        with open(self.root / name, "rb") as f:
            return use(f)

    def sha256(self, name: str) -> str:
        return file_sha256(self.root / name)

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def list(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_file())

    def folders(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def delete(self, name: str) -> None:
        with writing(self.root / name):
            (self.root / name).unlink(missing_ok=True)

    def delete_all(self) -> bool:
        if not self.root.exists():
            return False
        with writing(self.root):
            shutil.rmtree(self.root)
        return True


class UrlStore(Store):
    """A prefix of an object store, through fsspec with the process's storage options (see the module doc).

    Nothing here locks: two runs writing one prefix at once would mix their files. Run one writer per
    output URL.
    """

    def __init__(self, root: str) -> None:
        if not is_url(root):
            raise InputError(f"{root!r} is not a URL; expected s3://bucket/prefix or the like (as_store picks LocalStore "
                             "for local folders)")
        self.root = str(root).rstrip("/")

    def where(self, name: str) -> str:
        return f"{self.root}/{name}"

    def child(self, name: str) -> "UrlStore":
        return UrlStore(self.where(name))

    @property
    def _fs(self):
        return filesystem(self.root)

    def _call(self, action: Callable[[], T], url: str, doing: str) -> T:
        """``action()`` retried on transient errors; a missing object stays FileNotFoundError, the rest is
        an OutputError that names the URL and the cause."""
        try:
            return with_retries(action, url)
        except ImageReadError as exc:
            cause = exc.__cause__ or exc
            if isinstance(cause, FileNotFoundError) and doing == "write":
                raise OutputError(f"cannot write {url!r}: its bucket does not exist ({cause}); create the bucket or "
                                  f"fix the URL. {_KEPT}") from exc
            if isinstance(cause, FileNotFoundError):
                raise FileNotFoundError(f"no such object: {url!r}") from cause
            raise OutputError(
                f"cannot {doing} {url!r}: {type(cause).__name__}: {cause}. Check the URL, the credentials (write "
                f"access to the bucket; AWS_ENDPOINT_URL or --storage-option for other S3 servers) and the network. "
                f"{_KEPT}"
            ) from exc

    def put_atomic(self, name: str, write: Writer) -> str:
        fd, tmp = tempfile.mkstemp(prefix="dino_boc_", suffix=f".{name}")
        try:
            with writing(tmp, after=_KEPT):
                with os.fdopen(fd, "wb") as f:
                    write(f)
            sha = file_sha256(tmp)
            self.put_file(name, tmp)
        finally:
            os.unlink(tmp)
        return sha

    def put_file(self, name: str, source: str | os.PathLike) -> None:
        url = self.where(name)
        self._call(lambda: self._fs.put_file(os.fspath(source), url), url, "write")
        log.debug("put %s", url)

    def read(self, name: str, use: Callable[[BinaryIO], T]) -> T:
        url = self.where(name)

        def action() -> T:
            with self._fs.open(url, "rb") as f:
                return use(f)

        return self._call(action, url, "read")

    def exists(self, name: str) -> bool:
        url = self.where(name)
        fs = self._fs
        fs.invalidate_cache(url)
        return self._call(lambda: fs.isfile(url), url, "read")

    def _entries(self) -> list[dict]:
        fs = self._fs
        fs.invalidate_cache(self.root)
        try:
            return self._call(lambda: fs.ls(self.root, detail=True), self.root, "list")
        except FileNotFoundError:
            return []

    def list(self) -> list[str]:
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in self._entries() if e["type"] == "file")

    def folders(self) -> list[str]:
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in self._entries() if e["type"] == "directory")

    def delete(self, name: str) -> None:
        url = self.where(name)
        try:
            self._call(lambda: self._fs.rm_file(url), url, "delete")
        except FileNotFoundError:
            pass

    def delete_all(self) -> bool:
        fs = self._fs
        fs.invalidate_cache(self.root)
        try:
            self._call(lambda: fs.rm(self.root, recursive=True), self.root, "delete")
        except FileNotFoundError:
            return False
        fs.invalidate_cache(self.root)
        return True


def _is_remote(location: object) -> bool:
    """A URL other than ``file://`` (local files keep the rename protocol)."""
    return is_url(location) and str(location).split("://", 1)[0].lower() not in ("file", "local")


def _local(location: str | os.PathLike) -> Path:
    return Path(str(location).split("://", 1)[1]) if is_url(location) else Path(location)


def as_store(location: str | os.PathLike | Store) -> Store:
    """A store for a local folder (or ``file://`` URL) or an object-store prefix (a store is returned as it is)."""
    if isinstance(location, Store):
        return location
    if _is_remote(location):
        return UrlStore(str(location))
    return LocalStore(_local(location))


def parent_store(location: str | os.PathLike) -> tuple[Store, str]:
    """(the store of the folder holding ``location``, its file name): ``s3://b/run/x.parquet`` ->
    (``UrlStore("s3://b/run")``, ``"x.parquet"``)."""
    if _is_remote(location):
        url = str(location).rstrip("/")
        return UrlStore(url_parent(url)), url.rsplit("/", 1)[-1]
    path = _local(location)
    return LocalStore(path.parent), path.name
