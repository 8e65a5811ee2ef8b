"""The Cell Painting Gallery layout: per-site embeddings and per-plate well-level profiles.

From a feature table written by :func:`dino_boc.embed_dataset` (one row per site, or per cell; a path or
a URL), with
the Gallery's ``Metadata_Batch``, ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site`` columns (as
its ``load_data.csv`` has), :func:`write_cpg_layout` writes under ``root`` (a folder or a URL)::

    <root>/embeddings/<model>/<batch>/<plate>/<well>-<site>/embedding.parquet   rows of that site
    <root>/profiles/<model>/<batch>/<plate>/<plate>.parquet                     one row per well (mean)

Every file keeps the ``Metadata_*`` columns; the features are ``wide`` (one column per feature, as in
the table), ``all_emb`` (one list column holding the F features in column order, the form the JUMP
profiling recipe loads) or ``channel_emb`` (one list column ``<ch>_emb`` per channel). A plate's profile
is written after all its sites, so a plate with a profile file is complete (object stores have no
rename; the last file written is the commit). The table is read one plate at a time.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from dino_boc.errors import InputError
from dino_boc.features import parse_feature_name
from dino_boc.io.fs import is_url, url_join
from dino_boc.outputs.store import parent_store

__all__ = ["CpgFeatures", "CPG_FEATURES", "CPG_KEYS", "CpgSummary", "write_cpg_layout"]

CpgFeatures = Literal["wide", "all_emb", "channel_emb"]
CPG_FEATURES: tuple[str, ...] = get_args(CpgFeatures)
CPG_KEYS = ("Metadata_Batch", "Metadata_Plate", "Metadata_Well", "Metadata_Site")
_WELL_KEYS = ("Metadata_Source", "Metadata_Batch", "Metadata_Plate", "Metadata_Well")


@dataclasses.dataclass(frozen=True)
class CpgSummary:
    """What :func:`write_cpg_layout` wrote: counts and the profile file of each plate."""

    n_sites: int
    n_wells: int
    profiles: list[str]


def write_cpg_layout(
    table: str | os.PathLike,
    root: str | os.PathLike,
    *,
    model: str,
    features: CpgFeatures = "wide",
) -> CpgSummary:
    """Write a feature table in the Gallery layout under ``root`` (local folder or ``s3://``/``gs://`` URL).

    Args:
        table: a Parquet feature table (``Metadata_*`` columns, then F feature columns): a path or a URL.
        root: where ``embeddings/`` and ``profiles/`` go.
        model: the model name used as a folder (e.g. ``dino-boc-vitl16``); no ``/``.
        features: ``"wide"``, ``"all_emb"`` or ``"channel_emb"`` (see the module doc).

    Returns:
        counts of sites and wells written, and the profile files.

    Raises:
        InputError: a missing ``Metadata_Batch/Plate/Well/Site`` column or an empty key cell, an unknown
            ``features``, a ``model`` with a ``/``. Use a LoadData table (as the Gallery ships) as input.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    if features not in CPG_FEATURES:
        raise InputError(f"features={features!r}; expected one of {CPG_FEATURES}")
    if not model or "/" in model:
        raise InputError(f"model={model!r} is a folder name in the layout; pass a name without '/'")
    columns = _read(table, pq.read_schema).names
    missing = [c for c in CPG_KEYS if c not in columns]
    if missing:
        raise InputError(
            f"{str(table)!r} has no {missing} column(s); the Gallery layout needs {list(CPG_KEYS)} (embed a "
            "Gallery load_data.csv, or add these columns to your table of inputs)"
        )
    keys = _read(table, pd.read_parquet, columns=list(CPG_KEYS[:2])).drop_duplicates()
    n_sites = n_wells = 0
    profiles = []
    for batch, plate in keys.itertuples(index=False):
        df = _read(table, pd.read_parquet, filters=[("Metadata_Batch", "==", batch), ("Metadata_Plate", "==", plate)])
        _check_keys(df, table)
        feats = [c for c in df.columns if not c.startswith("Metadata_")]
        meta = [c for c in df.columns if c.startswith("Metadata_")]
        base = _join(root, "embeddings", model, str(batch), str(plate))
        for (well, site), rows in df.groupby(["Metadata_Well", "Metadata_Site"], sort=True):
            _write(_shape(rows, meta, feats, features), _join(base, f"{well}-{_site(site)}", "embedding.parquet"))
            n_sites += 1
        well_keys = [c for c in _WELL_KEYS if c in df.columns]
        grouped = df.groupby(well_keys, sort=True)
        wells = grouped[feats].mean().reset_index()
        wells.insert(len(well_keys), "Metadata_Count_Rows", grouped.size().to_numpy())
        profile = _join(root, "profiles", model, str(batch), str(plate), f"{plate}.parquet")
        _write(_shape(wells, [c for c in wells.columns if c.startswith("Metadata_")], feats, features), profile)
        profiles.append(profile)
        n_wells += len(wells)
    return CpgSummary(n_sites=n_sites, n_wells=n_wells, profiles=profiles)


def _read(table: str | os.PathLike, reader: Any, **kwargs: Any) -> Any:
    """``reader(file, **kwargs)`` on the table, a local file or an object (retried on transient errors)."""
    store, name = parent_store(table)
    return store.read(name, lambda f: reader(f, **kwargs))


def _check_keys(df, table) -> None:
    for col in CPG_KEYS:
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            raise InputError(f"{str(table)!r}: {int(empty.sum())} row(s) with an empty {col}; every row needs one")


def _site(site) -> str:
    """``1`` for 1 and 1.0 (CSV readers may give floats), else the text."""
    if isinstance(site, (float, np.floating)) and float(site).is_integer():
        return str(int(site))
    return str(site)


def _shape(df, meta: list[str], feats: list[str], features: CpgFeatures):
    """The rows in the requested feature form (Metadata_* first)."""
    import pandas as pd

    out = df[meta].reset_index(drop=True)
    values = df[feats].to_numpy(dtype=np.float32)
    if features == "wide":
        return pd.concat([out, pd.DataFrame(values, columns=feats)], axis=1)
    if features == "all_emb":
        out["all_emb"] = list(values)
        return out
    by_channel: dict[str, list[int]] = {}
    for j, name in enumerate(feats):
        parsed = parse_feature_name(name)
        by_channel.setdefault(parsed.channel if parsed and parsed.channel else "all", []).append(j)
    for channel, idx in by_channel.items():
        out[f"{channel}_emb"] = list(values[:, idx])
    return out


def _join(root: str | os.PathLike, *parts: str) -> str:
    if is_url(root):
        return url_join(str(root), "/".join(parts))
    return str(Path(root, *parts))


def _write(df, dest: str) -> None:
    """Write one Parquet file whole: locally via a temporary file and rename; to a URL as one object PUT."""
    store, name = parent_store(dest)
    store.ensure()
    store.put_atomic(name, lambda f: df.to_parquet(f, index=False))
