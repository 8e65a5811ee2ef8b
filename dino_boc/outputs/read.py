"""Reading feature tables back: every format :mod:`dino_boc.outputs.writers` writes, and CSV/TSV tables.

One reader for the evaluation, profiling and plotting code: ``read_features(path)`` gives the table as a
``pandas.DataFrame`` (``Metadata_*`` columns, then one column per feature) and the JSON records the file
carries (the provenance under ``dino_boc``; a profile table's steps under ``dino_boc_profiles``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from dino_boc.errors import InputError, require
from dino_boc.io.formats import reading
from dino_boc.outputs.columns import METADATA_PREFIX
from dino_boc.outputs.provenance import Provenance
from dino_boc.outputs.writers import PROVENANCE_KEY, sidecar_paths

__all__ = ["FeatureTable", "TableFormat", "read_features", "table_format", "parse_records"]

logger = logging.getLogger(__name__)

TableFormat = Literal["parquet", "h5ad", "npy", "csv", "tsv"]
#: file-name endings and the format each is read as (a folder is a partitioned Parquet dataset)
_ENDINGS: dict[str, TableFormat] = {
    ".parquet": "parquet", ".pq": "parquet", ".h5ad": "h5ad", ".npy": "npy",
    ".csv": "csv", ".csv.gz": "csv", ".tsv": "tsv", ".tsv.gz": "tsv",
}


class FeatureTable(NamedTuple):
    """A feature table read from disk.

    Attributes:
        table: ``(N, ...)`` ``Metadata_*`` columns, then the feature columns (float; NaN where a row lacks one).
        records: every JSON record the file carries under a ``dino_boc*`` key (``{}`` for a plain CSV).
    """

    table: pd.DataFrame
    records: dict[str, Any]

    @property
    def provenance(self) -> Provenance | None:
        """The :class:`~dino_boc.outputs.Provenance` of the run that wrote the table, or None when it has none.

        Raises:
            ConfigError: the record is not a provenance of this format_version.
        """
        record = self.records.get(PROVENANCE_KEY)
        return None if record is None else Provenance.from_dict(record)


def table_format(path: str | os.PathLike) -> TableFormat:
    """The format of a feature table, from its name (a folder is a Parquet dataset).

    Raises:
        InputError: an ending that is not a feature table's.
    """
    p = Path(path)
    if p.is_dir():
        return "parquet"
    name = p.name.lower()
    for ending, fmt in sorted(_ENDINGS.items(), key=lambda e: -len(e[0])):  # ".csv.gz" before ".gz"
        if name.endswith(ending):
            return fmt
    raise InputError(f"cannot read {str(path)!r}: expected a .parquet or .csv feature table (or {', '.join(_ENDINGS)} "
                     "as dino-boc embed and profile write)")


def read_features(path: str | os.PathLike, *, metadata_as_text: bool = False) -> FeatureTable:
    """Read a feature table written by ``dino-boc embed`` / ``dino-boc profile``, or a CSV/TSV of the same shape.

    Args:
        path: ``.parquet``/``.pq`` (file or dataset folder), ``.h5ad`` (``X``, ``obs``, ``var_names``), ``.npy``
            (with its ``<stem>.index.csv`` and ``<stem>.provenance.json``), ``.csv``/``.tsv`` (optionally ``.gz``).
        metadata_as_text: read the ``Metadata_*`` columns of text files (CSV/TSV, the ``.npy`` index) as
            written, as strings (plate ``000123`` stays ``"000123"``); typed formats keep their types.

    Returns:
        :class:`FeatureTable` ``(table, records)``; ``.provenance`` parses the run's provenance.

    Raises:
        InputError: a missing file, an unknown ending, an ``.npy`` without its side files.
        ImageReadError: a corrupt or truncated file, or one this user may not read (the message says which).
        MissingExtraError: ``.h5ad`` without ``pip install "dino-boc[anndata]"``.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"feature table {str(path)!r} does not exist; expected a .parquet, .h5ad, .npy or .csv file")
    fmt = table_format(p)
    reader = {"parquet": _parquet, "h5ad": _h5ad, "npy": _npy, "csv": _text, "tsv": _text}[fmt]
    with reading(p, {"h5ad": "anndata", "parquet": "pyarrow"}.get(fmt, "pandas")):
        return reader(p, metadata_as_text)


def parse_records(metadata: Mapping[Any, Any]) -> dict[str, Any]:
    """The ``dino_boc*`` entries of a file's key -> JSON mapping (Parquet schema metadata, AnnData ``uns``, the
    ``.npy`` sidecar), parsed; an entry that is not JSON is left out with a warning."""
    out = {}
    for key, value in metadata.items():
        name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
        if name.startswith(PROVENANCE_KEY):
            try:
                out[name] = json.loads(value) if isinstance(value, (str, bytes)) else value
            except ValueError:
                logger.warning("record %r is not JSON; left out", name)
    return out


def _parquet(p: Path, metadata_as_text: bool) -> FeatureTable:
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    return FeatureTable(table.to_pandas(), parse_records(table.schema.metadata or {}))


def _csv(p: Path, sep: str, metadata_as_text: bool) -> pd.DataFrame:
    text: dict[Any, type] = {}
    if metadata_as_text:
        header = pd.read_csv(p, sep=sep, nrows=0).columns
        text = {c: str for c in header if str(c).startswith(METADATA_PREFIX)}
    return pd.read_csv(p, sep=sep, dtype=text or None, low_memory=False)


def _text(p: Path, metadata_as_text: bool) -> FeatureTable:
    sep = "\t" if table_format(p) == "tsv" else ","
    return FeatureTable(_csv(p, sep, metadata_as_text), {})


def _h5ad(p: Path, metadata_as_text: bool) -> FeatureTable:
    anndata = require("anndata", "anndata")
    adata = anndata.read_h5ad(p)
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    feats = pd.DataFrame(x, columns=[str(v) for v in adata.var_names])
    table = pd.concat([adata.obs.reset_index(drop=True), feats], axis=1)
    return FeatureTable(table, parse_records(adata.uns))


def _npy(p: Path, metadata_as_text: bool) -> FeatureTable:
    side = sidecar_paths(p)
    missing = [str(side[k]) for k in ("index", "provenance") if not side[k].is_file()]
    if missing:
        raise InputError(f"{str(p)!r} comes without {missing}; an .npy output is read with the index CSV and "
                         "provenance JSON written beside it (keep the three files together)")
    record = json.loads(side["provenance"].read_text())
    x = np.load(p, allow_pickle=False)
    names = record.get("feature_names")
    if x.ndim != 2 or not isinstance(names, list) or len(names) != x.shape[1]:
        raise InputError(f"{str(p)!r} has shape {x.shape} but {side['provenance'].name} names "
                         f"{len(names) if isinstance(names, list) else 'no'} features; expected (N, F) and F names")
    meta = _csv(side["index"], ",", metadata_as_text)
    if len(meta) != len(x):
        raise InputError(f"{side['index'].name} has {len(meta)} rows but {p.name} {len(x)}; expected one per row")
    return FeatureTable(pd.concat([meta, pd.DataFrame(x, columns=names)], axis=1), parse_records(record))
