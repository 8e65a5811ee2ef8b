"""Reading CSV/TSV/Parquet tables of inputs, and turning their cells into plain metadata values."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dino_boc.errors import ImageReadError, InputError
from dino_boc.io.formats import reading

__all__ = ["TABLE_SUFFIXES", "is_table", "read_table", "metadata_value", "row_metadata", "resolve"]

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def is_table(path: str | os.PathLike) -> bool:
    """True when the suffix is one of :data:`TABLE_SUFFIXES`."""
    return Path(path).name.lower().endswith(TABLE_SUFFIXES)


def read_table(path: str | os.PathLike):
    """Read a CSV/TSV/Parquet table with pandas.

    CSV/TSV cells are kept exactly as written, as strings (``Metadata_Plate=000123`` stays
    ``"000123"``, ``NA`` stays ``"NA"``, site ``01`` stays ``"01"``; an empty cell is ``""``): a table
    of inputs is metadata, not numbers to infer. Parquet columns keep their stored types.

    Args:
        path: the table.

    Returns:
        pandas.DataFrame.

    Raises:
        ImageReadError: missing or unreadable table.
        InputError: a table without rows.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"no such table: {str(p)!r}")
    with reading(p, "pandas"):
        if p.name.lower().endswith((".parquet", ".pq")):
            df = pd.read_parquet(p)
        else:
            sep = "\t" if p.name.lower().endswith(".tsv") else ","
            df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False)
    if len(df) == 0:
        raise InputError(f"{str(p)!r} has no rows; expected one row per image")
    df.columns = [str(c) for c in df.columns]
    return df


def metadata_value(value: Any) -> str | int | float:
    """A table cell as a plain ``str``, ``int`` (bools stay bools) or ``float`` (missing -> NaN)."""
    if value is None:
        return math.nan
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return math.nan
    except (TypeError, ValueError):
        pass
    return str(value)


def row_metadata(row: dict[str, Any], columns: Sequence[str]) -> dict[str, str | int | float]:
    """The ``columns`` of one row (``DataFrame.to_dict('records')`` entry) as plain values."""
    return {col: metadata_value(row[col]) for col in columns}


def resolve(path: str, base: Path) -> str:
    """``path`` as is when absolute, else relative to ``base`` (the table's folder)."""
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else base / p)
