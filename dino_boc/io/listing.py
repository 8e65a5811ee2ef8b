"""Streamed input lists: tables read in chunks, so memory does not grow with the number of rows.

:func:`iter_table_records` yields the same records as :func:`dino_boc.io.collect_sources` gives for
one table (a LoadData table, or a table with a path column), in the same order with the same ids, but
holds only ``chunk_rows`` rows at a time (:func:`dino_boc.io.tables.iter_table_chunks`: CSV, also
``.csv.gz``, through pandas' chunked reader, Parquet one row-group batch at a time). Local paths and URLs
alike (URLs are streamed through fsspec, not fetched whole).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from dino_boc.errors import InputError
from dino_boc.io.loaddata import is_loaddata, iter_loaddata
from dino_boc.io.record import ImageRecord
from dino_boc.io.tables import iter_table_chunks, resolve, row_metadata, table_header, table_name, table_parent

__all__ = ["iter_table_records", "iter_table_chunks"]


def iter_table_records(path: str | os.PathLike, *, path_column: str = "path",
                       chunk_rows: int = 8192) -> Iterator[ImageRecord]:
    """The records of one table, streamed (see the module doc). A LoadData table's records are
    :func:`dino_boc.io.loaddata.iter_loaddata`'s with its defaults (every channel, no illumination).

    Raises:
        InputError: neither ``FileName_<Ch>`` columns nor ``path_column``; a table without rows.
        ImageReadError: an unreadable table.
    """
    header = table_header(path)
    if is_loaddata(header):
        for record, _ in iter_loaddata(path, chunk_rows=chunk_rows):
            yield record
        return
    if path_column not in header:
        raise InputError(
            f"{str(path)!r} has no {path_column!r} column (columns: {header}); name the column of image paths "
            "with path_column=, or give FileName_<Ch>/PathName_<Ch> columns (CellProfiler LoadData)"
        )
    meta_cols = [c for c in header if c != path_column]
    base, name, i = table_parent(path), table_name(path), 0
    for chunk in iter_table_chunks(path, chunk_rows=chunk_rows):
        for row in chunk.to_dict("records"):
            value = row[path_column]
            text = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()
            target = resolve(text, base) if text else ""
            yield ImageRecord(id=target or f"{name}#{i}", paths=(target,), metadata=row_metadata(row, meta_cols))
            i += 1
