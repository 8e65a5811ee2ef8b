"""Guarding an output path: checked before any work, locked while a run writes it, OS errors named.

- :func:`check_output` refuses, before the model runs, an output that is a folder, whose parent is a
  file or not writable, or that exists already (unless ``overwrite`` or ``resume``).
- :class:`OutputLock` holds ``<output>.lock`` with an exclusive ``flock`` for the whole run, so two
  runs into one output cannot race; the kernel drops the lock when a run dies (``kill -9``), so a
  ``--resume`` after a crash is never blocked by a stale file. An output URL (``s3://...``) has no
  lock: a local ``flock`` cannot guard a bucket and object stores offer no lock to build one on, so
  run one writer per output URL.
- :func:`writing` turns an ``OSError`` of the write path (read-only disk, ENOSPC, permission) into
  :class:`~dino_boc.errors.OutputError` naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from dino_boc.errors import DinoBocError, ImageReadError, OutputError
from dino_boc.io.fs import is_url, url_exists, url_isdir

__all__ = ["check_output", "OutputLock", "writing", "lock_path", "display_path"]

log = logging.getLogger(__name__)

_HINTS = {
    errno.ENOSPC: "the disk is full; free some space (or choose an output on another disk)",
    errno.EDQUOT: "the disk quota is exceeded; free some space (or choose an output on another disk)",
    errno.EFBIG: "the file is larger than this file system or the process's file-size limit allows; free space or "
                 "choose another disk",
    errno.EROFS: "the file system is read-only; choose an output on a writable disk",
    errno.EACCES: "permission denied; choose a folder you may write to, or fix its permissions",
    errno.EPERM: "permission denied; choose a folder you may write to, or fix its permissions",
    errno.EISDIR: "a folder is in the way; choose another output name",
    errno.ENOTDIR: "a file is in the way where a folder is needed; choose another output path",
}


def display_path(path: str | os.PathLike) -> str:
    """A path as text that any writer can store: undecodable bytes of the file name are kept as
    ``\\xNN`` escapes (``bad\\xff.tif``), everything else unchanged."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", errors="backslashreplace")


def lock_path(output: str | os.PathLike) -> Path:
    """``<output>.lock``, next to the output (named after the full output name)."""
    out = Path(output)
    return out.with_name(out.name + ".lock")


def _explain(exc: OSError, path: str | os.PathLike | None) -> str:
    where = display_path(exc.filename if exc.filename is not None else (path or "?"))
    hint = _HINTS.get(exc.errno or -1, "check the output folder")
    return f"cannot write {where!r}: {exc.strerror or exc}; {hint}"


@contextlib.contextmanager
def writing(path: str | os.PathLike | None = None, *, after: str = "") -> Iterator[None]:
    """Turn an ``OSError`` raised while writing into :class:`OutputError` (our own errors pass).

    Args:
        path: the file or folder being written, for the message when the error names none.
        after: a sentence added to the message (e.g. that committed shards are kept for ``--resume``).
    """
    try:
        yield
    except DinoBocError:
        raise
    except OSError as exc:
        raise OutputError(_explain(exc, path) + (f". {after}" if after else "")) from exc


def _refuse_existing(shown: str) -> OutputError:
    return OutputError(
        f"output {shown!r} exists already; pass overwrite=True (--overwrite) to replace it, resume=True "
        f"(--resume) to continue the run that wrote it, or choose another name"
    )


def check_output(output: str | os.PathLike, *, overwrite: bool, resume: bool) -> bool:
    """Check, before any work, that ``output`` can be written; returns whether it exists already.

    Raises:
        OutputError: ``output`` is a folder (or, for a URL, a prefix with objects under it, or in a bucket
            that does not exist); its parent is a file or cannot be created or written; it exists and
            neither ``overwrite`` nor ``resume`` is given.
    """
    if is_url(output):
        return _check_url_output(str(output), overwrite=overwrite, resume=resume)
    out = Path(output)
    shown = display_path(out)
    if out.is_dir():
        example = display_path(out / "features.parquet")
        raise OutputError(f"output {shown!r} is a folder; give a file name such as {example!r}")
    parent = out.parent
    for folder in (parent, *parent.parents):
        if folder.exists() and not folder.is_dir():
            raise OutputError(
                f"output {shown!r}: {display_path(folder)!r} is a file, not a folder; choose another output path"
            )
        if folder.exists():
            break
    with writing(parent):
        parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write into {display_path(parent)!r}: permission denied or read-only; choose another output"
        )
    exists = out.exists() or out.is_symlink()
    if exists and not (overwrite or resume):
        raise _refuse_existing(shown)
    return exists


def _check_url_output(url: str, *, overwrite: bool, resume: bool) -> bool:
    """:func:`check_output` for an object-store URL: its bucket exists, it is not a prefix, it exists only
    with ``overwrite``/``resume``. Write access is found out by the first write (the run's first manifest)."""
    protocol, rest = url.split("://", 1)
    bucket = f"{protocol}://{rest.split('/', 1)[0]}"
    try:
        if rest.split("/", 1)[0] and not url_exists(bucket):
            raise OutputError(f"output {url!r}: the bucket {bucket!r} does not exist (or is not visible with these "
                              "credentials); create it or fix the URL")
        if url_isdir(url):
            raise OutputError(f"output {url!r} is a prefix with objects under it (a folder); give a file name such "
                              f"as {url.rstrip('/') + '/features.parquet'!r}")
        exists = url_exists(url)
    except ImageReadError as exc:
        raise OutputError(f"cannot check the output {url!r}: {exc}") from exc
    if exists and not (overwrite or resume):
        raise _refuse_existing(url)
    return exists


class OutputLock:
    """An exclusive lock on ``<output>.lock`` for the duration of a run (``with OutputLock(out): ...``).

    An output URL is not locked (``path`` is None): nothing stops two runs writing one URL at once, so
    run one writer per output URL.

    Raises:
        OutputError: another process holds the lock (its pid is named), or the lock file cannot be made.
    """

    def __init__(self, output: str | os.PathLike) -> None:
        self.path: Path | None = None if is_url(output) else lock_path(output)
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        if self.path is None:
            log.info("an output URL has no lock: do not run two jobs into the same URL at once")
            return self
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks; runs are not guarded
            log.warning("no file locking on this platform; do not run two jobs into %s at once", self.path)
            return self
        while True:
            with writing(self.path):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputError(
                        f"another run (pid {holder}) is writing {display_path(self.path)[:-5]!r}; wait for it to "
                        f"finish or choose another output"
                    ) from exc
                raise OutputError(_explain(exc, self.path)) from exc
            try:  # the file may have been removed by the previous holder between open and flock: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
