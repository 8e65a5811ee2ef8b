"""Feature shards committed atomically, a manifest per rank, and resume; in a local folder or a bucket.

Layout of a shard directory (spec: ``docs/outputs.md``), a local folder or an object-store prefix
(``s3://bucket/run/features.parquet.shards``)::

    SHARD_DIR/rank-00000/manifest.json         committed shards, their input indices, failures, provenance
    SHARD_DIR/rank-00000/shard-000000.parquet  rows sorted by input index
    SHARD_DIR/rank-00001/...                   one folder per torchrun rank

A shard is written whole under its final name (locally: a temporary name, fsync, rename; in a bucket:
one object PUT, see ``outputs/store.py``); only then is the manifest, written the same way, updated to
list it with its sha256. A crash at any point leaves the manifest describing whole shards only; any
other shard in the rank's folder is removed when the rank resumes.

Usage in a pipeline::

    writer = ShardWriter(shard_dir, provenance, shard_size=4096, rank=rank, resume=resume)
    writer.add(indices, metadata_rows, features, feature_names)   # any number of times
    writer.add_failure(index, path, reason)
    writer.close()
    # after a barrier, on rank 0: dino_boc.outputs.finalize(shard_dir, "features.parquet")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dino_boc.errors import ConfigError, DinoBocError, InputError
from dino_boc.io.digest import file_sha256
from dino_boc.outputs.columns import INDEX, METADATA_PREFIX, check_feature_names, plain_value
from dino_boc.outputs.guard import display_path, writing
from dino_boc.outputs.provenance import FORMAT_VERSION, Provenance
from dino_boc.outputs.store import Store, as_store, atomic_write

__all__ = [
    "ShardWriter", "Manifest", "done_indices", "read_manifests", "rank_dir", "MANIFEST_NAME", "file_sha256",
    "bad_shards", "drop_bad_shards", "remove_shards", "atomic_write", "done_mask", "DEFAULT_SHARD_SIZE",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
DEFAULT_SHARD_SIZE = 4096
"""Rows per committed shard (a crash loses at most this many rows per rank)."""
FEATURES_COLUMN = "__features__"  # fixed_size_list<float32>[F] inside shards only
_SHARD_NAME = re.compile(r"shard-(\d{6,})\.parquet")
_KEPT = "Shards committed so far are kept: run again with --resume (resume=True) once this is fixed"

ShardDir = str | os.PathLike | Store
"""A shard folder: a local path, a URL prefix (``s3://bucket/run/features.parquet.shards``) or a Store."""


def rank_name(rank: int) -> str:
    """``rank-00000``: the name of the folder rank ``rank`` writes into."""
    return f"rank-{int(rank):05d}"


def rank_dir(shard_dir: ShardDir, rank: int) -> Path | str:
    """The folder rank ``rank`` writes into: ``SHARD_DIR/rank-00000`` (a Path, or a URL for a URL ``shard_dir``)."""
    return as_store(shard_dir).child(rank_name(rank)).root


def index_ranges(indices: np.ndarray) -> list[list[int]]:
    """Sorted unique indices as half-open runs ``[[start, stop], ...]``."""
    a = np.unique(np.asarray(indices, dtype=np.int64))
    if a.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(a) != 1) + 1
    starts = a[np.r_[0, breaks]]
    stops = a[np.r_[breaks - 1, a.size - 1]] + 1
    return [[int(s), int(e)] for s, e in zip(starts, stops)]


def schema_id(feature_names: Sequence[str]) -> str:
    """Short stable id of a feature schema (the ordered feature names)."""
    return hashlib.sha256(json.dumps(list(feature_names)).encode()).hexdigest()[:16]


@dataclass
class Manifest:
    """One rank's ``manifest.json``.

    Attributes:
        store: the rank folder (``directory`` gives its path or URL).
        rank: torchrun rank that wrote it.
        provenance: provenance of the run (of its first start when resumed).
        closed: True once the writer was closed (the rank finished).
        feature_schemas: schema id -> ordered feature names.
        shards: per shard ``{"file", "rows", "min_index", "max_index", "indices": [[start, stop], ...],
            "schema", "metadata_columns": {name: [index, row, position]}, "sha256"}`` (``sha256`` of the
            shard file, checked on merge and resume; absent in manifests of dino-boc 0.1).
        failures: ``{"index", "path", "reason"}`` per input that could not be embedded.
    """

    store: Store
    rank: int
    provenance: Provenance
    closed: bool = False
    feature_schemas: dict[str, list[str]] = field(default_factory=dict)
    shards: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def directory(self) -> Path | str:
        """The rank folder: a Path, or a URL for shards in an object store."""
        return self.store.root

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "rank": self.rank,
            "closed": self.closed,
            "provenance": self.provenance.to_dict(),
            "feature_schemas": self.feature_schemas,
            "shards": self.shards,
            "failures": self.failures,
        }

    @classmethod
    def read(cls, directory: ShardDir) -> "Manifest":
        """Read ``directory/manifest.json`` (a folder, a URL prefix or a store).

        Raises:
            ConfigError: unreadable JSON or a newer format_version.
            OutputError: an object store that still fails after the retries.
        """
        store = as_store(directory)
        path = store.where(MANIFEST_NAME)
        try:
            data = json.loads(store.read(MANIFEST_NAME, lambda f: f.read()))
        except DinoBocError:
            raise
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or UTF-8
            raise ConfigError(f"cannot read {path}: {exc}; delete {store} and run again with resume") from exc
        if data.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"{path} has format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}; "
                f"finish it with the dino-boc version that started it"
            )
        return cls(
            store=store,
            rank=int(data["rank"]),
            provenance=Provenance.from_dict(data["provenance"]),
            closed=bool(data["closed"]),
            feature_schemas={k: list(v) for k, v in data["feature_schemas"].items()},
            shards=list(data["shards"]),
            failures=list(data["failures"]),
        )

    def write(self) -> None:
        """Put ``manifest.json`` whole (the commit point of every shard it lists)."""
        text = json.dumps(self.to_dict(), separators=(",", ":")).encode()
        with writing(self.store.where(MANIFEST_NAME), after=_KEPT):
            self.store.put_atomic(MANIFEST_NAME, lambda f: f.write(text))


def read_manifests(shard_dir: ShardDir) -> list[Manifest]:
    """Every rank's manifest under ``shard_dir`` (rank order); empty when there is none."""
    root = as_store(shard_dir)
    ranks = [root.child(d) for d in root.folders() if d.startswith("rank-")]
    return [Manifest.read(r) for r in ranks if r.exists(MANIFEST_NAME)]


def remove_shards(shard_dir: ShardDir) -> bool:
    """Delete a shard folder (or prefix) and everything in it; returns whether there was one.

    Raises:
        OutputError: it cannot be deleted.
    """
    return as_store(shard_dir).delete_all()


def _done_runs(shard_dir: ShardDir, include_failed: bool) -> Iterator[tuple[int, int]]:
    """Half-open runs ``(start, stop)`` of the input indices the manifests record as done."""
    for manifest in read_manifests(shard_dir):
        for shard in manifest.shards:
            for start, stop in shard["indices"]:
                yield int(start), int(stop)
        if include_failed:
            for f in manifest.failures:
                yield int(f["index"]), int(f["index"]) + 1


def done_indices(shard_dir: ShardDir, *, include_failed: bool = True) -> set[int]:
    """Input indices a resumed run can skip: in a committed shard (or recorded as failed).

    On several ranks, call it on every rank *before* any rank opens its writer (then ``barrier()``), or
    on rank 0 and broadcast it, so that all ranks shard the same pending list. For millions of inputs
    use :func:`done_mask` (one byte per input instead of a Python int per done input).
    """
    done: set[int] = set()
    for start, stop in _done_runs(shard_dir, include_failed):
        done.update(range(start, stop))
    return done


def done_mask(shard_dir: ShardDir, n: int, *, include_failed: bool = True) -> np.ndarray:
    """:func:`done_indices` as a bool array ``(n,)``: True where input ``i`` is done.

    Raises:
        ConfigError: a manifest names an input index ``>= n`` (the shards are another run's).
    """
    mask = np.zeros(n, dtype=bool)
    for start, stop in _done_runs(shard_dir, include_failed):
        if stop > n:
            raise ConfigError(f"{shard_dir}: its manifests name input {stop - 1} but this run has {n} inputs; "
                              "they belong to another run: delete that folder or pass overwrite=True")
        mask[start:stop] = True
    return mask


def bad_shards(manifest: Manifest) -> list[dict[str, Any]]:
    """The shards of a manifest whose file is missing or whose sha256 differs from the one recorded."""
    bad = []
    for shard in manifest.shards:
        if "sha256" not in shard:  # written before checksums existed
            if not manifest.store.exists(shard["file"]):
                bad.append(shard)
            continue
        try:
            ok = manifest.store.sha256(shard["file"]) == shard["sha256"]
        except FileNotFoundError:
            ok = False
        if not ok:
            bad.append(shard)
    return bad


def drop_bad_shards(shard_dir: ShardDir) -> int:
    """Before a resume: remove shards that are missing or fail their checksum from their manifest (their
    inputs are then embedded again) and delete their files. Returns the number of shards dropped."""
    dropped = 0
    for manifest in read_manifests(shard_dir):
        bad = bad_shards(manifest)
        if not bad:
            continue
        names = {s["file"] for s in bad}
        for name in sorted(names):
            log.warning("%s fails its checksum (changed or damaged on disk); its inputs are embedded again",
                        manifest.store.where(name))
            manifest.store.delete(name)
        manifest.shards = [s for s in manifest.shards if s["file"] not in names]
        manifest.write()
        dropped += len(names)
    return dropped


@dataclass
class _Buffer:
    names: list[str]
    indices: list[np.ndarray] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    n: int = 0


def _metadata_array(values: list[Any]) -> pa.Array:
    """Arrow array of plain metadata values; a column mixing types becomes strings."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def shard_table(indices: np.ndarray, rows: list[dict[str, Any]], features: np.ndarray) -> tuple[pa.Table, dict]:
    """Rows sorted by index -> shard table and each metadata column's first appearance.

    Returns:
        (table with ``Metadata_index``, the metadata columns and ``__features__``,
        {column: [input index, row within that input, position in the row]}).
    """
    first_seen: dict[str, list[int]] = {}
    sub, prev = 0, None
    for r, row in enumerate(rows):
        sub = sub + 1 if indices[r] == prev else 0
        prev = indices[r]
        for pos, key in enumerate(row):
            if key not in first_seen:
                first_seen[key] = [int(indices[r]), sub, pos]
    columns: dict[str, pa.Array] = {INDEX: pa.array(indices, type=pa.int64())}
    for key in first_seen:
        columns[key] = _metadata_array([plain_value(row.get(key)) for row in rows])
    flat = pa.array(np.ascontiguousarray(features, dtype=np.float32).reshape(-1), type=pa.float32())
    columns[FEATURES_COLUMN] = pa.FixedSizeListArray.from_arrays(flat, features.shape[1])
    return pa.table(columns), first_seen


class ShardWriter:
    """Collects feature rows of one rank and commits them as Parquet shards of ``shard_size`` rows.

    Rows of different feature schemas (e.g. 3- and 5-channel images, whose F differ) are buffered
    separately, so every shard has one schema; ``finalize`` merges them with missing columns as null.

    Args:
        shard_dir: folder or URL prefix of the run's shards (the writer uses ``shard_dir/rank-NNNNN``).
        provenance: what produces the rows.
        shard_size: rows per shard; memory holds at most this many rows per feature schema.
        rank: torchrun rank (0 when not distributed).
        resume: continue the shards of an earlier run of this rank. Without it, a rank folder that
            already holds shards is an error, so that two runs are never mixed.

    Raises:
        ConfigError: shards exist and ``resume`` is False, or the earlier run used another model,
            preprocessing or feature layout (its provenance differs).
        OutputError: the folder or bucket cannot be written (after the retries, for object stores).
    """

    def __init__(
        self,
        shard_dir: ShardDir,
        provenance: Provenance,
        shard_size: int = DEFAULT_SHARD_SIZE,
        rank: int = 0,
        *,
        resume: bool = False,
    ) -> None:
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ConfigError(f"shard_size={shard_size!r} must be a positive integer")
        self.shard_size = shard_size
        self.store = as_store(shard_dir).child(rank_name(rank))
        self.directory = self.store.root
        self.store.ensure()
        self._buffers: dict[str, _Buffer] = {}
        self._pending_failures: list[dict[str, Any]] = []
        self._closed = False
        self._manifest = Manifest(self.store, int(rank), provenance)
        if self.store.exists(MANIFEST_NAME):
            old = Manifest.read(self.store)
            if old.shards or old.failures:
                self._manifest = self._resume_from(old, provenance, resume)
        self._seq = 1 + max((int(_SHARD_NAME.fullmatch(s["file"]).group(1)) for s in self._manifest.shards), default=-1)
        self._remove_strays()
        self._manifest.write()

    @property
    def provenance(self) -> Provenance:
        """The run's provenance (the first start's, when resumed)."""
        return self._manifest.provenance

    @property
    def committed_rows(self) -> int:
        return sum(s["rows"] for s in self._manifest.shards)

    @staticmethod
    def _resume_from(old: Manifest, provenance: Provenance, resume: bool) -> Manifest:
        if not resume:
            raise ConfigError(
                f"{old.directory} already holds {len(old.shards)} shards of an earlier run; pass resume=True "
                f"(--resume) to continue it, or choose an empty output directory"
            )
        diff = old.provenance.differences(provenance)
        if diff:
            raise ConfigError(
                f"cannot resume {old.directory}: the earlier run differs in {diff}; use the same model and "
                f"settings, or start in an empty output directory"
            )
        log.info("resuming %s: %d shards, %d failures committed", old.directory, len(old.shards), len(old.failures))
        old.closed = False
        return old

    def _remove_strays(self) -> None:
        """Delete temporary files and shards the manifest does not list (left by a crash)."""
        listed = {s["file"] for s in self._manifest.shards}
        for name in self.store.list():
            if name.endswith(".tmp") or (_SHARD_NAME.fullmatch(name) and name not in listed):
                log.info("removing %s, left by an interrupted run", self.store.where(name))
                self.store.delete(name)

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError(f"ShardWriter for {self.directory} is closed; open a new one with resume=True")

    def add(
        self,
        indices: Sequence[int] | np.ndarray,
        metadata_rows: Sequence[dict[str, Any]],
        features: np.ndarray,
        feature_names: Sequence[str],
    ) -> None:
        """Buffer rows; commit a shard when a schema's buffer reaches ``shard_size`` rows.

        All rows of one input (all cells of a field of view) must come in the same call, so that a
        committed input is always complete.

        Args:
            indices: (n,) global input index of each row (repeated for the cells of one input).
            metadata_rows: n dicts of metadata, every key starting with ``Metadata_`` (see
                ``columns.metadata_row``); values None, bool, int, float or str (others are stored as
                str).
            features: float (n, F).
            feature_names: F names, the model's ``feature_names``.

        Raises:
            InputError: mismatched lengths, F == 0, negative indices, bad feature or metadata names.
        """
        self._check_open()
        idx = np.asarray(indices)
        if idx.size and idx.dtype.kind not in "iu":
            raise InputError(f"indices must be integers; got dtype {idx.dtype}")
        idx = idx.astype(np.int64).reshape(-1)
        feats = np.array(features, dtype=np.float32, copy=True)
        rows = list(metadata_rows)
        if feats.ndim != 2 or feats.shape[1] == 0:
            raise InputError(f"features must be (n, F) with F > 0; got shape {feats.shape}")
        if not len(idx) == len(rows) == feats.shape[0]:
            raise InputError(
                f"got {len(idx)} indices, {len(rows)} metadata rows and {feats.shape[0]} feature rows; "
                f"expected one of each per output row"
            )
        if idx.size == 0:
            return
        if idx.min() < 0:
            raise InputError(f"input indices must be >= 0; got {int(idx.min())}")
        names = check_feature_names(feature_names, feats.shape[1])
        for row in rows:
            bad = [k for k in row if k == INDEX or not str(k).startswith(METADATA_PREFIX)]
            if bad:
                raise InputError(
                    f"metadata keys {bad} are not allowed: every key must start with {METADATA_PREFIX!r} "
                    f"(build rows with dino_boc.outputs.metadata_row) and {INDEX!r} is set by the writer"
                )
        key = schema_id(names)
        buf = self._buffers.setdefault(key, _Buffer(names))
        buf.indices.append(idx)
        buf.rows.extend(rows)
        buf.features.append(feats)
        buf.n += len(idx)
        if buf.n >= self.shard_size:
            self._commit(key)

    def add_failure(self, index: int, path: str | os.PathLike, reason: str | BaseException) -> None:
        """Record an input that could not be embedded; committed with the next shard or at close.

        Args:
            index: global input index.
            path: the input's path (or description).
            reason: ``"ErrorClass: message"`` or the exception itself (formatted that way); the
                summary counts failures by the part before the first colon.
        """
        self._check_open()
        if isinstance(reason, BaseException):
            reason = f"{type(reason).__name__}: {reason}"
        failure = {"index": int(index), "path": display_path(path), "reason": display_path(str(reason))}
        self._pending_failures.append(failure)

    def _commit(self, key: str) -> None:
        buf = self._buffers.pop(key)
        idx = np.concatenate(buf.indices)
        order = np.argsort(idx, kind="stable")
        idx = idx[order]
        table, first_seen = shard_table(idx, [buf.rows[i] for i in order], np.concatenate(buf.features)[order])
        name = f"shard-{self._seq:06d}.parquet"
        self._seq += 1
        with writing(self.store.where(name), after=_KEPT):
            sha = self.store.put_atomic(name, lambda f: pq.write_table(table, f))
        self._manifest.feature_schemas.setdefault(key, buf.names)
        self._manifest.shards.append(
            {
                "file": name,
                "rows": int(idx.size),
                "min_index": int(idx[0]),
                "max_index": int(idx[-1]),
                "indices": index_ranges(idx),
                "schema": key,
                "metadata_columns": first_seen,
                "sha256": sha,
            }
        )
        self._write_manifest()
        log.debug("committed %s (%d rows)", self.store.where(name), idx.size)

    def _write_manifest(self) -> None:
        self._manifest.failures.extend(self._pending_failures)
        self._pending_failures = []
        self._manifest.write()

    def flush(self) -> None:
        """Commit every buffered row (shards may be smaller than ``shard_size``) and the failures."""
        self._check_open()
        for key in sorted(self._buffers):
            self._commit(key)
        self._write_manifest()

    def close(self) -> None:
        """Flush and mark this rank finished in its manifest. Idempotent."""
        if self._closed:
            return
        self.flush()
        self._manifest.closed = True
        self._manifest.write()
        self._closed = True

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self.flush()  # rows already buffered are complete inputs; keep them for resume

