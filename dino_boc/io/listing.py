"""Streamed input lists: tables read in chunks, so memory does not grow with the number of rows.

:func:`iter_table_records` yields the same records as :func:`dino_boc.io.collect_sources` gives for
one table (a LoadData table, or a table with a path column), in the same order with the same ids, but
holds only ``chunk_rows`` rows at a time: CSV (also ``.csv.gz``) through pandas' chunked reader,
Parquet one row group batch at a time through pyarrow. Local paths and URLs alike (URLs are streamed
through fsspec, not fetched whole).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from dino_boc.errors import InputError
from dino_boc.io.formats import reading
from dino_boc.io.fs import filesystem, is_url
from dino_boc.io.loaddata import LoadDataPlan, is_loaddata
from dino_boc.io.record import ImageRecord
from dino_boc.io.tables import resolve, row_metadata, table_name, table_parent

__all__ = ["iter_table_records", "iter_table_chunks"]


@contextlib.contextmanager
def _opened(path: str | os.PathLike):
    if is_url(path):
        with filesystem(str(path)).open(str(path), "rb") as f:
            yield f
    else:
        with open(path, "rb") as f:
            yield f


def iter_table_chunks(path: str | os.PathLike, *, chunk_rows: int = 8192, text_columns=()) -> Iterator:
    """pandas DataFrames of at most ``chunk_rows`` rows each, in row order (columns as strings).

    CSV/TSV cells are kept as written, as text, as :func:`dino_boc.io.tables.read_table` keeps them
    (``000123`` stays ``"000123"``, an empty cell is ``""``); Parquet columns keep their stored types.

    Args:
        path: ``.csv``, ``.tsv``, ``.csv.gz``, ``.tsv.gz``, ``.parquet`` or ``.pq``, local or URL.
        chunk_rows: rows per chunk (memory is about this many rows, whatever the table's length).
        text_columns: kept for callers; every CSV column is read as text.

    Raises:
        ImageReadError: an unreadable table.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    name = str(path).lower()
    with _opened(path) as f, reading(path, "pandas"):
        if name.endswith((".parquet", ".pq")):
            for batch in pq.ParquetFile(f).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
            return
        sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
        chunks = pd.read_csv(f, sep=sep, chunksize=chunk_rows, dtype=str, keep_default_na=False,
                             compression="gzip" if name.endswith(".gz") else None)
        for chunk in chunks:
            chunk.columns = [str(c) for c in chunk.columns]
            yield chunk


def _header(path) -> list[str]:
    return list(next(iter_table_chunks(path, chunk_rows=1)).columns)


def iter_table_records(path: str | os.PathLike, *, path_column: str = "path",
                       chunk_rows: int = 8192) -> Iterator[ImageRecord]:
    """The records of one table, streamed (see the module doc).

    Raises:
        InputError: neither ``FileName_<Ch>`` columns nor ``path_column``.
        ImageReadError: an unreadable table.
    """
    header = _header(path)
    if is_loaddata(header):
        plan = LoadDataPlan.of(path, header)
        i = 0
        for chunk in iter_table_chunks(path, chunk_rows=chunk_rows, text_columns=plan.text_columns):
            for row in chunk.to_dict("records"):
                yield plan.record(i, row)
                i += 1
        return
    if path_column not in header:
        raise InputError(f"{str(path)!r} has no {path_column!r} column (columns: {header}); name it with path_column=")
    meta_cols = [c for c in header if c != path_column]
    base, name, i = table_parent(path), table_name(path), 0
    for chunk in iter_table_chunks(path, chunk_rows=chunk_rows, text_columns=[path_column]):
        for row in chunk.to_dict("records"):
            text = str(row[path_column]).strip()
            target = resolve(text, base) if text else ""
            yield ImageRecord(id=target or f"{name}#{i}", paths=(target,), metadata=row_metadata(row, meta_cols))
            i += 1
