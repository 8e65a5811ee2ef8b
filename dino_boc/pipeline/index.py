"""The run's input list on disk: record ``i`` and its label image by position, memory flat in the count.

A screen lists 10^5-10^7 inputs (~1 KB each as Python objects: 10 GB for 10^7). :class:`InputIndex`
keeps up to :data:`SPILL` of them in memory and a longer list in a private SQLite file
(``$TMPDIR/dino_boc_inputs_*/inputs.sqlite``, under 1 KB per input on disk, deleted when the run
ends): the listing streams into it once, then the DataLoader's workers read the records they embed by
position. While it is written the index also
makes record ids unique across inputs (as :func:`dino_boc.io.collect_sources` does: a repeated id
gets ``#2``, ``#3``, ... appended) and computes the inputs' identity (count and SHA-256 over the ordered
inputs, :func:`inputs_digest`) that a resume must find again.

Usage::

    index = InputIndex.build((record, mask) for ...)   # mask: label image path, "" or None
    len(index); index[i]; index.mask(i); index.identity
    index.close()                                        # or ``with InputIndex.build(...) as index:``
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

from dino_boc.errors import OutputError
from dino_boc.io import ImageRecord

__all__ = ["InputIndex", "inputs_digest", "identity_entry"]

_BATCH = 2048  # records written per transaction
SPILL = 4096
"""Inputs held in memory (a few MB); a longer list goes to a SQLite file."""


def identity_entry(record: ImageRecord, mask: str | None) -> bytes:
    """One input's line of the identity digest: its id, files, channel names and label image."""
    names = None if record.channel_names is None else list(record.channel_names)
    entry = [record.id, list(record.paths), names, mask or ""]
    return os.fsencode(json.dumps(entry)) + b"\n"  # json escapes undecodable bytes (\udcff)


def inputs_digest(pairs: Iterable[tuple[ImageRecord, str | None]]) -> dict[str, int | str]:
    """``{"count": n, "sha256": ...}`` over ordered ``(record, label image)`` pairs (see :func:`identity_entry`)."""
    digest, n = hashlib.sha256(), 0
    for record, mask in pairs:
        digest.update(identity_entry(record, mask))
        n += 1
    return {"count": n, "sha256": digest.hexdigest()}


class _Masks(Sequence[str]):
    """``index.masks[i]``: the label image of input ``i`` (a view, nothing held in memory)."""

    def __init__(self, index: "InputIndex") -> None:
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._index.mask(j) for j in range(*i.indices(len(self)))]
        return self._index.mask(i)


class InputIndex(Sequence[ImageRecord]):
    """The run's inputs, in order (see the module doc): a read-only sequence of :class:`ImageRecord`.
    Up to :data:`SPILL` inputs are held in memory; a longer list is written to a SQLite file, which
    pickles as its path, so DataLoader workers (forked or spawned) open it themselves.

    Attributes:
        path: the SQLite file, or None for a list held in memory.
        identity: ``{"count": n, "sha256": ...}`` of the ordered inputs (recorded in the provenance).
        has_masks: whether the inputs carry label images (single-cell mode).
    """

    def __init__(self, path: str | os.PathLike | None, *, count: int, identity: dict[str, int | str],
                 has_masks: bool, rows: list[tuple[ImageRecord, str | None]] | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.identity = identity
        self.has_masks = has_masks
        self._count = count
        self._rows = rows
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._cleanup: weakref.finalize | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, entries: Iterable[tuple[ImageRecord, str | None]], *,
              directory: str | os.PathLike | None = None) -> "InputIndex":
        """Stream ``(record, label image or None)`` pairs into a new index, in order.

        Args:
            entries: the inputs; a label image of ``None`` for every entry means no single-cell masks.
            directory: where the private folder of the file is made (default: the system's temp folder).

        Returns:
            The index; a file-backed one deletes its folder on :meth:`close` or when garbage-collected.

        Raises:
            OutputError: the index file cannot be written (full disk, size limit): point ``TMPDIR`` (or
                ``directory``) at a folder with space.
        """
        writer = _Writer(directory)
        try:
            digest, n, masks = hashlib.sha256(), 0, False
            for record, mask in entries:
                record = writer.unique(record)  # a repeated id gets "#2", "#3", ... as collect_sources gives
                digest.update(identity_entry(record, mask))
                masks = masks or mask is not None
                writer.add(n, record, mask)
                n += 1
            writer.finish()
        except BaseException:
            writer.discard()
            raise
        identity = {"count": n, "sha256": digest.hexdigest()}
        if writer.conn is None:
            return cls(None, count=n, identity=identity, has_masks=masks, rows=writer.rows)
        index = cls(writer.path, count=n, identity=identity, has_masks=masks)
        index._cleanup = weakref.finalize(index, shutil.rmtree, str(writer.path.parent), True)
        return index

    # ------------------------------------------------------------------ reading
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # one connection per process (workers fork)
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._pid = os.getpid()
        return self._conn

    def __len__(self) -> int:
        return self._count

    def _position(self, i: int) -> int:
        if not -self._count <= i < self._count:
            raise IndexError(f"input {i} of {self._count}")
        return i % self._count

    def _column(self, i: int, column: str):
        """One column (``record`` blob or ``mask``) of input ``i`` in the SQLite file."""
        query = f"SELECT {column} FROM inputs WHERE i = ?"  # column: one of two fixed names
        return self._connection().execute(query, (i,)).fetchone()[0]

    @overload
    def __getitem__(self, i: int) -> ImageRecord: ...
    @overload
    def __getitem__(self, i: slice) -> list[ImageRecord]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        i = self._position(int(i))
        if self._rows is not None:
            return self._rows[i][0]
        return pickle.loads(self._column(i, "record"))  # our own file, written by build() in a private folder

    def __iter__(self) -> Iterator[ImageRecord]:
        if self._rows is not None:
            yield from (r for r, _ in self._rows)
            return
        for (blob,) in self._connection().execute("SELECT record FROM inputs ORDER BY i"):
            yield pickle.loads(blob)

    def mask(self, i: int) -> str:
        """The label image of input ``i`` (``""`` when none matched)."""
        i = self._position(int(i))
        return (self._rows[i][1] if self._rows is not None else self._column(i, "mask")) or ""

    @property
    def masks(self) -> Sequence[str] | None:
        """Per input its label image (a lazy view), or None outside single-cell mode."""
        return _Masks(self) if self.has_masks else None

    # ------------------------------------------------------------------ life
    def __getstate__(self) -> dict:
        return {"path": self.path, "identity": self.identity, "has_masks": self.has_masks, "count": self._count,
                "rows": self._rows}

    def __setstate__(self, state: dict) -> None:  # a worker's copy: reads, never deletes
        self.__init__(state["path"], count=state["count"], identity=state["identity"], has_masks=state["has_masks"],
                      rows=state["rows"])

    def close(self) -> None:
        """Close the connection and delete the file (the copy that built it only)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> "InputIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "in memory" if self.path is None else repr(str(self.path))
        return f"InputIndex({self._count} inputs, {where})"


class _Writer:
    """Holds the first :data:`SPILL` inputs in memory, then moves them and the rest to a SQLite file."""

    def __init__(self, directory: str | os.PathLike | None) -> None:
        self.directory = directory
        self.rows: list[tuple[ImageRecord, str | None]] = []
        self.ids: dict[str, int] = {}
        self.batch: list[tuple[int, bytes, str | None]] = []
        self.conn: sqlite3.Connection | None = None
        self.path: Path | None = None

    def unique(self, record: ImageRecord) -> ImageRecord:
        """``record``, its id suffixed ``#n`` when it is the n-th (n > 1) record with that id."""
        if self.conn is None:
            n = self.ids[record.id] = self.ids.get(record.id, 0) + 1
        else:
            with self._writing():
                n = self.conn.execute("INSERT INTO ids VALUES (?, 1) ON CONFLICT(id) DO UPDATE SET n = n + 1 "
                                      "RETURNING n", (record.id,)).fetchone()[0]
        return record if n == 1 else dataclasses.replace(record, id=f"{record.id}#{n}")

    def add(self, i: int, record: ImageRecord, mask: str | None) -> None:
        if self.conn is None:
            self.rows.append((record, mask))
            if len(self.rows) > SPILL:
                self._spill()
            return
        self.batch.append((i, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL), mask))
        if len(self.batch) >= _BATCH:
            self._flush()

    def _spill(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="dino_boc_inputs_", dir=self.directory)) / "inputs.sqlite"
        with self._writing():
            self.conn = sqlite3.connect(self.path)
            self.conn.executescript(
                "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                "CREATE TABLE inputs (i INTEGER PRIMARY KEY, record BLOB NOT NULL, mask TEXT);"
                "CREATE TABLE ids (id TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;"
            )
            self.conn.executemany("INSERT INTO ids VALUES (?, ?)", self.ids.items())
        for i, (record, mask) in enumerate(self.rows):
            self.batch.append((i, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL), mask))
        self.rows, self.ids = [], {}
        self._flush()

    def _flush(self) -> None:
        with self._writing():
            self.conn.executemany("INSERT INTO inputs VALUES (?, ?, ?)", self.batch)
        self.batch.clear()

    def finish(self) -> None:
        self.ids = {}
        if self.conn is not None:
            self._flush()
            with self._writing():
                self.conn.execute("DROP TABLE ids")
                self.conn.commit()
            self.conn.close()

    def discard(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.path is not None:
            shutil.rmtree(self.path.parent, ignore_errors=True)

    @contextlib.contextmanager
    def _writing(self):
        try:
            yield
        except sqlite3.Error as exc:
            raise OutputError(
                f"cannot write the run's input list {self.path} ({exc}): long input lists are kept on disk, under "
                "1 KB per input; point TMPDIR at a folder with space"
            ) from exc
