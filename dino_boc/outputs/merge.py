"""Merge the shards of every rank into one stream of rows in input order, with flat memory.

Shards are visited by their smallest input index. After a shard is loaded, every buffered row whose
index is below the next shard's smallest index is final: no later shard can hold a smaller one. Those
rows are emitted; the rest wait. The buffer therefore holds the shards whose index ranges overlap
(about one per rank and feature schema), never the whole table.

Mixed feature schemas (e.g. 3- and 5-channel images) are merged into the union of their feature
columns, ordered by first appearance in input order; a row lacks the columns of other schemas (null
in Parquet, NaN in ``.npy`` / AnnData).

The shard folder may be a local folder or an object-store prefix (``outputs/store.py``): shards are
read one at a time through the same store interface either way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dino_boc.errors import ConfigError, DinoBocError, InputError
from dino_boc.outputs.columns import INDEX, order_metadata_columns
from dino_boc.outputs.provenance import Provenance
from dino_boc.outputs.shards import FEATURES_COLUMN, Manifest, ShardDir, bad_shards, read_manifests
from dino_boc.outputs.store import Store

__all__ = ["MergePlan", "Chunk", "plan_merge", "iter_merged"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardRef:
    """One committed shard: its rank folder (a store), file name, rank, rows, smallest index, schema id."""

    store: Store
    name: str
    rank: int
    rows: int
    min_index: int
    schema: str

    @property
    def path(self) -> str:
        """Path or URL of the shard, for messages."""
        return self.store.where(self.name)


@dataclass(frozen=True)
class MergePlan:
    """Everything ``finalize`` needs to know before reading any feature.

    Attributes:
        provenance: the run's provenance.
        shards: committed shards, by smallest input index.
        metadata_schema: unified metadata columns (``Metadata_index`` first), in output order.
        feature_names: union of the feature columns, F of them, in output order.
        schema_codes: feature schema id -> row code.
        schema_columns: per code, positions (F_s,) of that schema's features in ``feature_names``.
        present: bool (n_codes, F); which feature columns each schema has.
        failures: ``{"index", "path", "reason"}`` sorted by index, one per failed input that has no rows.
        n_rows: rows of the merged table.
        n_inputs: distinct input indices with rows.
        complete: True when every rank closed its writer.
    """

    provenance: Provenance
    shards: list[ShardRef]
    metadata_schema: pa.Schema
    feature_names: list[str]
    schema_codes: dict[str, int]
    schema_columns: list[np.ndarray]
    present: np.ndarray
    failures: list[dict[str, Any]]
    n_rows: int
    n_inputs: int
    complete: bool


@dataclass(frozen=True)
class Chunk:
    """Consecutive merged rows: metadata (unified schema), features (n, F) float32, schema code (n,)."""

    metadata: pa.Table
    features: np.ndarray
    codes: np.ndarray

    def __len__(self) -> int:
        return self.metadata.num_rows

    @property
    def index(self) -> np.ndarray:
        return self.metadata.column(INDEX).to_numpy()

    def take(self, order: np.ndarray) -> "Chunk":
        return Chunk(self.metadata.take(pa.array(order)), self.features[order], self.codes[order])

    def slice(self, start: int, stop: int | None = None) -> "Chunk":
        stop = len(self) if stop is None else stop
        return Chunk(self.metadata.slice(start, stop - start), self.features[start:stop], self.codes[start:stop])

    @staticmethod
    def concat(chunks: list["Chunk"]) -> "Chunk":
        if len(chunks) == 1:
            return chunks[0]
        return Chunk(
            pa.concat_tables([c.metadata for c in chunks]).combine_chunks(),
            np.concatenate([c.features for c in chunks]),
            np.concatenate([c.codes for c in chunks]),
        )


def unify_types(types: list[pa.DataType]) -> pa.DataType:
    """One type for a metadata column seen with several: ints -> int64, ints and floats -> float64,
    anything else mixed -> string; all-null stays null."""
    real = [t for t in types if not pa.types.is_null(t)]
    if not real:
        return pa.null()
    if all(t == real[0] for t in real):
        return real[0]
    if all(pa.types.is_integer(t) for t in real):
        return pa.int64()
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in real):
        return pa.float64()
    return pa.string()


def _check_provenance(manifests: list[Manifest]) -> Provenance:
    first = manifests[0]
    for other in manifests[1:]:
        diff = first.provenance.differences(other.provenance)
        if diff:
            raise ConfigError(
                f"{first.directory} and {other.directory} were written with different {diff}; "
                f"a shard folder must hold one run only"
            )
    return first.provenance


def _check_disjoint(manifests: list[Manifest]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted starts/stops of all committed index ranges; raises if two shards share an input."""
    runs = sorted((s, e, m.store.where(sh["file"])) for m in manifests for sh in m.shards for s, e in sh["indices"])
    for (s0, e0, f0), (s1, _, f1) in zip(runs, runs[1:]):
        if s1 < e0:
            raise ConfigError(
                f"input index {s1} is in two shards ({f0}, {f1}); the folder mixes two runs over the same "
                f"inputs. Delete it and run again"
            )
    starts = np.array([r[0] for r in runs], dtype=np.int64)
    stops = np.array([r[1] for r in runs], dtype=np.int64)
    return starts, stops


def _failures(manifests: list[Manifest], starts: np.ndarray, stops: np.ndarray) -> list[dict[str, Any]]:
    """Last failure per index, dropping indices that were embedded after all (a retry succeeded)."""
    latest = {int(f["index"]): f for m in manifests for f in m.failures}
    out = []
    for index in sorted(latest):
        k = int(np.searchsorted(starts, index, side="right")) - 1
        if not (k >= 0 and index < stops[k]):
            out.append(latest[index])
    return out


def _check_checksums(manifests: list[Manifest]) -> None:
    """Every listed shard must exist and match the sha256 its manifest recorded."""
    for m in manifests:
        bad = bad_shards(m)
        if bad:
            raise ConfigError(
                f"{m.store.where(bad[0]['file'])} is missing or fails its sha256 checksum ({len(bad)} shard(s) in "
                f"{m.directory}); it was changed or damaged on disk. Run again with resume=True (--resume): the "
                f"damaged shards are dropped and their inputs embedded again"
            )


def _read_schema(ref: ShardRef) -> pa.Schema:
    try:
        return ref.store.read(ref.name, pq.read_schema)
    except DinoBocError:
        raise
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(
            f"manifest lists {ref.path}, which cannot be read ({exc}); the shard folder was changed by hand. "
            f"Delete {ref.store} and run again with resume"
        ) from exc


def plan_merge(shard_dir: ShardDir) -> MergePlan:
    """Read all manifests and shard footers (not the features) and plan the merged table.

    Args:
        shard_dir: a local folder or a URL prefix (``s3://bucket/run/features.parquet.shards``).

    Raises:
        InputError: no manifest under ``shard_dir``.
        ConfigError: ranks with different provenance, an input in two shards, a listed shard missing or
            failing its checksum.
        OutputError: an object store that still fails after the retries.
    """
    manifests = read_manifests(shard_dir)
    if not manifests:
        raise InputError(f"{shard_dir} holds no rank-*/manifest.json; expected the shard folder of an embedding run")
    provenance = _check_provenance(manifests)
    _check_checksums(manifests)
    starts, stops = _check_disjoint(manifests)
    refs: list[ShardRef] = []
    first_meta: dict[str, tuple] = {INDEX: (-1,)}
    meta_types: dict[str, list[pa.DataType]] = {}
    schema_first: dict[str, int] = {}
    schema_names: dict[str, list[str]] = {}
    for m in manifests:
        for sh in m.shards:
            ref = ShardRef(m.store, sh["file"], m.rank, int(sh["rows"]), int(sh["min_index"]), sh["schema"])
            refs.append(ref)
            for name, seen in sh["metadata_columns"].items():
                first_meta[name] = min(first_meta.get(name, tuple(seen)), tuple(seen))
            for fld in _read_schema(ref):
                if fld.name != FEATURES_COLUMN:
                    meta_types.setdefault(fld.name, []).append(fld.type)
            schema_first[ref.schema] = min(schema_first.get(ref.schema, ref.min_index), ref.min_index)
            schema_names[ref.schema] = m.feature_schemas[ref.schema]
    refs.sort(key=lambda r: (r.min_index, r.rank, r.name))
    meta_order = order_metadata_columns(first_meta)
    metadata_schema = pa.schema([pa.field(n, unify_types(meta_types.get(n, [pa.int64()]))) for n in meta_order])
    feature_names: list[str] = []
    position: dict[str, int] = {}
    codes: dict[str, int] = {}
    for key in sorted(schema_first, key=lambda k: (schema_first[k], k)):
        codes[key] = len(codes)
        for name in schema_names[key]:
            if name not in position:
                position[name] = len(feature_names)
                feature_names.append(name)
    columns = [np.array([position[n] for n in schema_names[k]], dtype=np.int64) for k in codes]
    present = np.zeros((len(codes), len(feature_names)), dtype=bool)
    for code, cols in enumerate(columns):
        present[code, cols] = True
    return MergePlan(
        provenance=provenance,
        shards=refs,
        metadata_schema=metadata_schema,
        feature_names=feature_names,
        schema_codes=codes,
        schema_columns=columns,
        present=present,
        failures=_failures(manifests, starts, stops),
        n_rows=sum(r.rows for r in refs),
        n_inputs=int((stops - starts).sum()),
        complete=all(m.closed for m in manifests),
    )


def empty_fraction(plan: MergePlan) -> float:
    """The share of the merged table's feature cells that are empty (rows whose schema lacks a column).

    A union table of rows with different channel names has empty cells wherever a row lacks a channel;
    when most cells are empty, the rows share few columns (per-file names, e.g. ImageJ slice labels).
    """
    if plan.n_rows == 0 or not plan.feature_names:
        return 0.0
    rows = np.zeros(len(plan.schema_codes), dtype=np.int64)
    for ref in plan.shards:
        rows[plan.schema_codes[ref.schema]] += ref.rows
    empty = int((rows * (~plan.present).sum(axis=1)).sum())
    return empty / (plan.n_rows * len(plan.feature_names))


def load_shard(ref: ShardRef, plan: MergePlan) -> Chunk:
    """One shard in the unified layout (metadata cast to the plan's types, features widened to F)."""
    table = ref.store.read(ref.name, pq.read_table)
    n = table.num_rows
    meta = []
    for fld in plan.metadata_schema:
        if fld.name in table.column_names:
            col = table.column(fld.name)
            meta.append(col if col.type == fld.type else col.cast(fld.type))
        else:
            meta.append(pa.nulls(n, type=fld.type))
    code = plan.schema_codes[ref.schema]
    cols = plan.schema_columns[code]
    flat = table.column(FEATURES_COLUMN).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    own = flat.reshape(n, cols.size).astype(np.float32, copy=False)
    if cols.size == len(plan.feature_names) and np.array_equal(cols, np.arange(cols.size)):
        features = own
    else:
        features = np.full((n, len(plan.feature_names)), np.nan, dtype=np.float32)
        features[:, cols] = own
    return Chunk(pa.Table.from_arrays(meta, schema=plan.metadata_schema), features, np.full(n, code, dtype=np.int32))


def iter_merged(plan: MergePlan, *, rows: int = 8192) -> Iterator[Chunk]:
    """Yield the merged table in input order, in chunks of at least ``rows`` rows (the last may be
    smaller). Rows of one input keep the order they were added in."""
    buffered: Chunk | None = None
    ready: list[Chunk] = []
    n_ready = 0
    for j, ref in enumerate(plan.shards):
        piece = load_shard(ref, plan)
        buffered = piece if buffered is None else Chunk.concat([buffered, piece])
        index = buffered.index
        if np.any(np.diff(index) < 0):
            buffered = buffered.take(np.argsort(index, kind="stable"))
            index = buffered.index
        bound = plan.shards[j + 1].min_index if j + 1 < len(plan.shards) else None
        k = len(buffered) if bound is None else int(np.searchsorted(index, bound, side="left"))
        if k:
            ready.append(buffered.slice(0, k))
            n_ready += k
            buffered = buffered.slice(k)
        if n_ready >= rows:
            yield Chunk.concat(ready)
            ready, n_ready = [], 0
    if ready:
        yield Chunk.concat(ready)
