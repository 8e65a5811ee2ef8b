"""Reading CSV/TSV/Parquet tables of inputs, and turning their cells into plain metadata values."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dino_boc.errors import ImageReadError, InputError
from dino_boc.io.formats import reading
from dino_boc.io.fs import filesystem, is_url, open_bytes, url_join, url_parent

__all__ = [
    "TABLE_SUFFIXES", "is_table", "read_table", "iter_table_chunks", "table_header", "metadata_value", "row_metadata",
    "resolve", "table_parent", "table_name",
]

TABLE_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".parquet", ".pq")


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

    p = str(path) if is_url(path) else Path(path)
    if not is_url(p) and not p.is_file():
        raise ImageReadError(f"no such table: {str(p)!r}")
    name = str(p).lower()
    data = open_bytes(p)  # i17: a URL is fetched once (with retries), then parsed from memory
    compression = "gzip" if name.endswith(".gz") else "infer"
    with reading(p, "pandas"):
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(data)
        else:
            sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
            df = pd.read_csv(data, sep=sep, compression=compression, dtype=str, keep_default_na=False)
    if len(df) == 0:
        raise InputError(f"{str(p)!r} has no rows; expected one row per image")
    df.columns = [str(c) for c in df.columns]
    return df


@contextlib.contextmanager
def _opened(path: str | os.PathLike):
    """A binary file object: a URL streamed through fsspec (not fetched whole), a local file opened."""
    if is_url(path):
        with filesystem(str(path)).open(str(path), "rb") as f:
            yield f
        return
    if not Path(path).is_file():
        raise ImageReadError(f"no such table: {str(path)!r}")
    with open(path, "rb") as f:
        yield f


def iter_table_chunks(path: str | os.PathLike, *, chunk_rows: int = 8192) -> Iterator:
    """A table as pandas DataFrames of at most ``chunk_rows`` rows each, in row order, holding only one
    chunk at a time (memory does not grow with the table's length).

    Cells are read as :func:`read_table` reads them (CSV/TSV as written, as text; Parquet with its stored
    types, one row-group batch at a time); column names are strings. A URL is streamed through fsspec.

    Args:
        path: ``.csv``, ``.tsv``, ``.csv.gz``, ``.tsv.gz``, ``.parquet`` or ``.pq``, local or URL.
        chunk_rows: rows per chunk.

    Raises:
        ImageReadError: a missing or unreadable table.
        InputError: a table without rows.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    name = str(path).lower()
    n = 0
    with _opened(path) as f, reading(path, "pandas"):
        if name.endswith((".parquet", ".pq")):
            chunks = (b.to_pandas() for b in pq.ParquetFile(f).iter_batches(batch_size=chunk_rows))
        else:
            sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
            chunks = pd.read_csv(f, sep=sep, chunksize=chunk_rows, dtype=str, keep_default_na=False,
                                 compression="gzip" if name.endswith(".gz") else None)
        for chunk in chunks:
            chunk.columns = [str(c) for c in chunk.columns]
            n += len(chunk)
            yield chunk
    if n == 0:
        raise InputError(f"{str(path)!r} has no rows; expected one row per image")


def table_header(path: str | os.PathLike) -> list[str]:
    """The column names of a table (reads its first rows only).

    Raises:
        ImageReadError: a missing or unreadable table.
        InputError: a table without rows.
    """
    return list(next(iter_table_chunks(path, chunk_rows=1)).columns)


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


def resolve(path: str, base: Path | str) -> str:
    """``path`` as is when absolute (or a URL), else relative to ``base`` (the table's folder, maybe a URL)."""
    if is_url(path):
        return path
    if is_url(base):  # i17
        return url_join(str(base), path)
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else base / p)


def table_parent(path: str | os.PathLike) -> Path | str:
    """The folder of a table, where its relative paths start: a Path, or a URL for a remote table."""
    return url_parent(str(path)) if is_url(path) else Path(path).parent


def table_name(path: str | os.PathLike) -> str:
    """The file name of a local or remote table (for record ids)."""
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_url(path) else Path(path).name
