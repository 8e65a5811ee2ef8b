"""Profile tables on disk: read a feature table, build profiles plate by plate from a Parquet file (memory
bounded by one plate), write profiles with their recorded steps.

``make_profiles_from_file`` gives the same profiles as ``make_profiles`` on the whole table: aggregation
works within wells, so reading one plate at a time (Parquet row filters on the plate column) changes nothing
but the memory, which is that of the largest plate plus the well table.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from dino_boc.errors import InputError
from dino_boc.eval.profiles import (
    ProfileConfig,
    Profiles,
    aggregate,
    as_float,
    channel_presence,
    common_features,
    feature_columns,
    finish_profiles,
    make_profiles,
)
from dino_boc.outputs.read import parse_records, read_features, table_format

__all__ = ["PROFILES_KEY", "read_table", "make_profiles_from_file", "write_profiles"]

logger = logging.getLogger(__name__)

#: Parquet schema-metadata key (and ``<output>.profiles.json`` sidecar key) holding the steps
PROFILES_KEY = "dino_boc_profiles"


#: the feature-table reader (:func:`dino_boc.outputs.read.read_features`): ``(table, records)`` of a .parquet,
#: .h5ad, .npy, .csv(.gz) or .tsv(.gz) table, records being its ``dino_boc*`` JSON entries (``{}`` for CSV)
read_table = read_features


def make_profiles_from_file(path: str | os.PathLike, *, config: ProfileConfig = ProfileConfig()) -> Profiles:
    """:func:`~dino_boc.eval.profiles.make_profiles` on a file; a Parquet table that is aggregated by strata
    including ``config.plate_col`` is read and aggregated one plate at a time.

    Args:
        path: feature table (:func:`~dino_boc.outputs.read.read_features`: .parquet, .h5ad, .npy, .csv, .tsv).
        config: the steps and their settings.

    Returns:
        :class:`~dino_boc.eval.profiles.Profiles`, the input's schema metadata kept as its ``source``.

    Raises:
        InputError: as :func:`~dino_boc.eval.profiles.make_profiles`, or an unreadable file.
    """
    p = Path(path)
    by_plate = (config.aggregate != "none" and config.plate_col in config.strata and p.exists()
                and table_format(p) == "parquet")
    if not by_plate:
        table, meta = read_table(p)
        return make_profiles(table, config=config, source={"input": str(path), **meta})
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    dataset = ds.dataset(p, format="parquet")
    empty = dataset.schema.empty_table().to_pandas()
    missing = [c for c in config.strata if c not in empty.columns]
    if missing:
        raise InputError(f"strata columns {missing} are not in {p}; pass strata naming a well, or --aggregate none")
    feats = feature_columns(empty, config.features)
    plates = dataset.to_table(columns=[config.plate_col]).column(0).unique().to_pylist()
    steps: list[dict[str, Any]] = [{"step": "config", **asdict(config)}]
    scratch: list[dict[str, Any]] = []
    parts, presence, n_rows = [], None, 0
    for plate in plates:
        field = pc.field(config.plate_col)
        rows = dataset.to_table(filter=field.is_null() if plate is None else field == plate).to_pandas()
        n_rows += len(rows)
        presence = _merge_presence(presence, channel_presence(rows, feats))
        parts.append(aggregate(as_float(rows, feats), feats, config, scratch))
        logger.info("plate %s: %d rows -> %d wells", plate, len(rows), len(parts[-1]))
        del rows
    kept = common_features(presence, feats, config.channel_sets, steps)
    wells = pd.concat(parts, ignore_index=True)
    dropped_meta = sorted({c for s in scratch for c in s["metadata_dropped"]})
    wells = wells.drop(columns=[c for c in feats if c not in set(kept)] + [c for c in dropped_meta if c in wells])
    steps.append({**scratch[0], "metadata_dropped": dropped_meta, "rows_in": n_rows, "rows_out": len(wells),
                  "features_in": len(kept), "features_out": len(kept), "plates_read_one_at_a_time": len(plates)})
    return finish_profiles(wells, kept, config=config, steps=steps,
                           source={"input": str(path), **parse_records(dataset.schema.metadata or {})})


def _merge_presence(a, b):
    """Combine two :func:`~dino_boc.eval.profiles.channel_presence` results (sets present in either)."""
    if a is None or b is None:
        return b if a is None else a
    index = a[0].index.union(b[0].index)
    return (a[0].reindex(index, fill_value=False) | b[0].reindex(index, fill_value=False),
            a[1].add(b[1], fill_value=0))


def write_profiles(profiles: Profiles, output: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write profiles as Parquet (steps in the schema metadata under :data:`PROFILES_KEY`, the input's
    ``dino_boc`` provenance kept) or CSV (steps in ``<output>.profiles.json``).

    Raises:
        InputError: the output exists and ``overwrite`` is False, or an unknown suffix.
    """
    out = Path(output)
    name = out.name.lower()
    sidecar = out.with_name(out.name + ".profiles.json")
    if not name.endswith((".parquet", ".csv", ".csv.gz")):
        raise InputError(f"output {str(output)!r}: expected a .parquet, .csv or .csv.gz file name")
    if not overwrite and (out.exists() or (not name.endswith(".parquet") and sidecar.exists())):
        raise InputError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = profiles.provenance()
    tmp = out.with_name(out.name + ".tmp")
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(profiles.table, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        for key, value in (profiles.source or {}).items():
            meta[key.encode()] = json.dumps(value).encode()
        meta[PROFILES_KEY.encode()] = json.dumps(record).encode()
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    else:
        profiles.table.to_csv(tmp, index=False, compression="gzip" if name.endswith(".gz") else None)
        sidecar.write_text(json.dumps({PROFILES_KEY: record, **(profiles.source or {})}, indent=2))
    os.replace(tmp, out)
    return out
