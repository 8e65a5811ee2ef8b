"""Final outputs: Parquet, AnnData ``.h5ad`` or ``.npy`` + index CSV, plus the errors CSV.

``finalize(shard_dir, output)`` merges the shards of every rank in input order (``merge.py``) and
streams them into the output, which is written under a temporary name and renamed. An output URL
(``s3://bucket/run/features.parquet``) is written the same way in a local temporary folder, then
uploaded one object PUT per file: the errors file and side files first, the table last, so a table in
the bucket is always a whole run. Spec: ``docs/outputs.md``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dino_boc.errors import ConfigError, InputError, require
from dino_boc.io.fs import is_url
from dino_boc.outputs.guard import writing
from dino_boc.outputs.merge import Chunk, MergePlan, empty_fraction, iter_merged, plan_merge
from dino_boc.outputs.provenance import Provenance
from dino_boc.outputs.shards import ShardDir
from dino_boc.outputs.store import atomic_write, parent_store

__all__ = [
    "OutputFormat", "finalize", "read_provenance", "output_format", "sidecar_paths", "sidecar_urls", "PROVENANCE_KEY",
]

log = logging.getLogger(__name__)

OutputFormat = Literal["parquet", "h5ad", "npy"]
PROVENANCE_KEY = "dino_boc"
_SUFFIXES: dict[str, OutputFormat] = {".parquet": "parquet", ".pq": "parquet", ".h5ad": "h5ad", ".npy": "npy"}


def output_format(path: str | os.PathLike) -> OutputFormat:
    """The format an output path asks for, from its suffix.

    Raises:
        ConfigError: an unknown suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ConfigError(f"output {str(path)!r} has suffix {suffix!r}; expected one of {sorted(_SUFFIXES)}")
    return _SUFFIXES[suffix]


def sidecar_paths(output: str | os.PathLike) -> dict[str, Path]:
    """Files written next to ``output``: ``errors`` (always, named after the full output name, so that
    ``x.parquet`` and ``x.h5ad`` keep their own), ``index`` and ``provenance`` (``.npy`` only).
    For an output URL, :func:`sidecar_urls` gives the same names as URLs."""
    out = Path(output)
    return {
        "errors": out.with_name(out.name + ".errors.csv"),
        "index": out.with_name(out.stem + ".index.csv"),
        "provenance": out.with_name(out.stem + ".provenance.json"),
    }


def sidecar_urls(output: str) -> dict[str, str]:
    """:func:`sidecar_paths` of an output URL: the same file names, next to it in the bucket."""
    store, name = parent_store(output)
    return {key: store.where(path.name) for key, path in sidecar_paths(name).items()}


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


# finalize warns when more than this share of the written table's feature cells is empty
MOSTLY_EMPTY = 0.5


def reason_kind(reason: str) -> str:
    """The part of a failure reason before the first colon (``"ImageReadError"``)."""
    return reason.split(":", 1)[0].strip() or reason


def finalize(shard_dir: ShardDir, output_path: str | os.PathLike, *, row_group_rows: int = 8192) -> dict[str, Any]:
    """Merge a run's shards into one output in input order, plus ``<output>.errors.csv``.

    Call it once, on rank 0, after every rank closed its ``ShardWriter``. Memory holds about one shard
    per rank and feature schema (the ``obs`` table of ``.h5ad`` outputs is built in memory).

    Args:
        shard_dir: the folder (or URL prefix) given to the ``ShardWriter`` of every rank.
        output_path: ``.parquet`` (default of the CLI), ``.h5ad`` (needs ``dino-boc[anndata]``) or
            ``.npy`` (writes ``<stem>.index.csv`` and ``<stem>.provenance.json`` beside it); a path or a
            URL (``s3://bucket/run/features.parquet``: written in a local temporary folder, ``$TMPDIR``,
            then uploaded, side files first and the table last).
        row_group_rows: rows per Parquet row group / per write.

    Returns:
        summary ``{"output", "format", "errors_file", "n_ok" (inputs embedded), "n_rows",
        "n_failed", "by_reason" {kind: count}, "feature_columns" F, "complete"}``.

    Raises:
        ConfigError: unknown suffix, or an inconsistent shard folder (see ``merge.plan_merge``).
        InputError: ``shard_dir`` holds no manifest.
        MissingExtraError: ``.h5ad`` without anndata installed.
        OutputError: the output cannot be written (read-only, disk full, a folder in the way, a bucket
            that refuses the upload); the shards are left as they are.
    """
    fmt = output_format(output_path)
    plan = plan_merge(shard_dir)
    if not plan.complete:
        log.warning("some ranks in %s did not close their writer; the output holds only committed rows", shard_dir)
    url = str(output_path) if is_url(output_path) else None
    staging = Path(tempfile.mkdtemp(prefix="dino_boc_output_")) if url else None
    try:
        output = staging / parent_store(url)[1] if url else Path(output_path)
        _write_output(plan, output, fmt, row_group_rows, shard_dir)
        if url:
            _upload(output, url)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    shown = url or str(output)
    summary = {
        "output": shown,
        "format": fmt,
        "errors_file": sidecar_urls(url)["errors"] if url else str(sidecar_paths(output)["errors"]),
        "n_ok": plan.n_inputs,
        "n_rows": plan.n_rows,
        "n_failed": len(plan.failures),
        "by_reason": dict(Counter(reason_kind(f["reason"]) for f in plan.failures)),
        "feature_columns": len(plan.feature_names),
        "complete": plan.complete,
        "empty_fraction": empty_fraction(plan),
    }
    if summary["empty_fraction"] > MOSTLY_EMPTY:
        log.warning(
            "%s: %.0f%% of its feature cells are empty: its rows have %d different channel-name sets, so they share "
            "few columns (e.g. per-file names such as ImageJ slice labels). Name the channels alike with "
            "channel_names= (--channel-names DNA,ER,...) or keep common ones with channels= (--channels)",
            shown, 100 * summary["empty_fraction"], len(plan.schema_codes),
        )
    log.info("wrote %s: %d rows from %d inputs, %d failed", shown, plan.n_rows, plan.n_inputs, len(plan.failures))
    return summary


def _write_output(plan: MergePlan, output: Path, fmt: OutputFormat, row_group_rows: int, shard_dir: ShardDir) -> None:
    """The table and its side files at the local path ``output``, each under a temporary name then renamed."""
    writers: dict[str, Callable[[MergePlan, Path, int], None]] = {
        "parquet": write_parquet,
        "h5ad": write_h5ad,
        "npy": write_npy,
    }
    kept = f"The shards in {shard_dir} are kept: run again with --resume (resume=True) once this is fixed"
    try:
        with writing(output, after=kept):
            output.parent.mkdir(parents=True, exist_ok=True)
            writers[fmt](plan, output, row_group_rows)
            write_errors(sidecar_paths(output)["errors"], plan.failures)
    except BaseException:
        for side in (output, *sidecar_paths(output).values()):
            _tmp(side).unlink(missing_ok=True)  # no half-written temporary left behind
        raise


def _upload(local: Path, url: str) -> None:
    """Upload a finished local output to ``url``: each side file, then the table (the commit), one PUT each."""
    store, name = parent_store(url)
    sides = [p for p in sidecar_paths(local).values() if p.is_file()]
    for path in [*sides, local]:
        store.put_file(name if path == local else path.name, path)
    log.info("uploaded %s and %d side file(s)", url, len(sides))


def write_errors(path: Path, failures: list[dict[str, Any]]) -> None:
    """``index,path,reason`` per failed input, by index (a header only when none failed)."""
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["index", "path", "reason"])
    for f in failures:
        w.writerow([f["index"], f["path"], f["reason"]])
    data = text.getvalue().encode()
    atomic_write(path, lambda fh: fh.write(data))


def _feature_arrays(chunk: Chunk, plan: MergePlan) -> list[pa.Array]:
    """Feature columns of a chunk; columns a row's schema lacks are null."""
    feats = np.asfortranarray(chunk.features)
    present = plan.present[np.unique(chunk.codes)]
    everywhere, nowhere = present.all(0), ~present.any(0)
    out = []
    for j in range(feats.shape[1]):
        if everywhere[j]:
            out.append(pa.array(feats[:, j], type=pa.float32()))
        elif nowhere[j]:
            out.append(pa.nulls(len(chunk), type=pa.float32()))
        else:
            out.append(pa.array(feats[:, j], type=pa.float32(), mask=~plan.present[chunk.codes, j]))
    return out


def write_parquet(plan: MergePlan, output: Path, row_group_rows: int) -> None:
    """Metadata columns, then one float32 column per feature; provenance under schema metadata key
    ``dino_boc``. Written row group by row group."""
    fields = list(plan.metadata_schema) + [pa.field(n, pa.float32()) for n in plan.feature_names]
    schema = pa.schema(fields, metadata={PROVENANCE_KEY: plan.provenance.to_json()})
    tmp = _tmp(output)
    with pq.ParquetWriter(tmp, schema) as w:
        for chunk in iter_merged(plan, rows=row_group_rows):
            arrays = list(chunk.metadata.columns) + _feature_arrays(chunk, plan)
            w.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=row_group_rows)
    os.replace(tmp, output)


def write_npy(plan: MergePlan, output: Path, row_group_rows: int) -> None:
    """float32 (n, F) ``.npy`` (NaN where a row lacks a column), ``<stem>.index.csv`` with the
    metadata columns row for row, ``<stem>.provenance.json`` ``{"dino_boc": ..., "feature_names": ...}``."""
    side = sidecar_paths(output)
    tmp_npy, tmp_csv = _tmp(output), _tmp(side["index"])
    arr = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.float32, shape=(plan.n_rows, len(plan.feature_names)))
    row = 0
    with pacsv.CSVWriter(tmp_csv, plan.metadata_schema) as w:
        for chunk in iter_merged(plan, rows=row_group_rows):
            arr[row : row + len(chunk)] = chunk.features
            row += len(chunk)
            w.write_table(chunk.metadata)
    arr.flush()
    del arr
    sidecar = {PROVENANCE_KEY: plan.provenance.to_dict(), "feature_names": plan.feature_names, "n_rows": plan.n_rows}
    text = json.dumps(sidecar, indent=1).encode()
    atomic_write(side["provenance"], lambda f: f.write(text))
    os.replace(tmp_csv, side["index"])
    os.replace(tmp_npy, output)


def _obs_column(col: pa.ChunkedArray) -> Any:
    """An Arrow metadata column as something anndata writes: strings as categoricals, nullable ints
    and bools as pandas nullable dtypes."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        return pd.Categorical(col.to_pylist())
    if col.null_count and pa.types.is_integer(t):
        return pd.array(col.to_pylist(), dtype="Int64")
    if col.null_count and pa.types.is_boolean(t):
        return pd.array(col.to_pylist(), dtype="boolean")
    return col.to_numpy()


def write_h5ad(plan: MergePlan, output: Path, row_group_rows: int) -> None:
    """AnnData: X float32 (n, F) written chunk by chunk, ``obs`` = metadata, ``var_names`` = feature
    names, ``uns["dino_boc"]`` = provenance JSON string."""
    anndata = require("anndata", "anndata")
    h5py = require("h5py", "anndata")
    io_module = getattr(anndata, "io", None)  # anndata >= 0.11; 0.10 keeps it in experimental
    write_elem = getattr(io_module, "write_elem", None) or anndata.experimental.write_elem

    tmp = _tmp(output)
    tables = []
    with h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        x = f.create_dataset("X", shape=(plan.n_rows, len(plan.feature_names)), dtype="float32")
        x.attrs["encoding-type"], x.attrs["encoding-version"] = "array", "0.2.0"
        row = 0
        for chunk in iter_merged(plan, rows=row_group_rows):
            x[row : row + len(chunk)] = chunk.features
            row += len(chunk)
            tables.append(chunk.metadata)
        meta = pa.concat_tables(tables) if tables else plan.metadata_schema.empty_table()
        obs = pd.DataFrame({name: _obs_column(meta.column(name)) for name in meta.column_names})
        obs.index = pd.Index([str(i) for i in range(meta.num_rows)])
        write_elem(f, "obs", obs)
        write_elem(f, "var", pd.DataFrame(index=pd.Index(plan.feature_names, dtype=object)))
        write_elem(f, "uns", {PROVENANCE_KEY: plan.provenance.to_json()})
        for key in ("obsm", "varm", "layers", "obsp", "varp"):
            write_elem(f, key, {})
    os.replace(tmp, output)


def _h5ad_provenance(f) -> Any:
    h5py = require("h5py", "anndata")
    with h5py.File(f, "r") as h5:
        node = h5.get(f"uns/{PROVENANCE_KEY}")
        return None if node is None else node[()]


def read_provenance(path: str | os.PathLike) -> Provenance:
    """The provenance recorded in a dino_boc output (``.parquet``, ``.h5ad`` or ``.npy``), a path or a URL.

    Raises:
        InputError: the file carries no dino_boc provenance.
        FileNotFoundError: there is no such file.
    """
    fmt = output_format(path)
    store, name = parent_store(path)
    if fmt == "parquet":
        text = (store.read(name, pq.read_schema).metadata or {}).get(PROVENANCE_KEY.encode())
    elif fmt == "h5ad":
        text = store.read(name, _h5ad_provenance)
    else:
        side = sidecar_paths(name)["provenance"].name
        data = store.read(side, json.load) if store.exists(side) else {}
        text = json.dumps(data[PROVENANCE_KEY]) if PROVENANCE_KEY in data else None
    if text is None:
        raise InputError(f"{path} carries no {PROVENANCE_KEY!r} provenance; expected an output written by dino_boc")
    return Provenance.from_json(text)
