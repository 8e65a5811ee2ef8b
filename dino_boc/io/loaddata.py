"""CellProfiler LoadData CSVs: one row per field of view, one file per channel.

A channel ``<Ch>`` is described by a ``FileName_<Ch>`` column (the file name) and an optional
``PathName_<Ch>`` column (its folder; relative folders start at the CSV's folder, an absent or empty
one means the CSV's folder). The Cell Painting Gallery's tables may also give each file's full object URL in
a ``URL_<Ch>`` column (``s3://cellpainting-gallery/...``); when a row has one it is used as is. Every other column (``Metadata_Plate``, ``Metadata_Well``, ...) is metadata.
This is how Cell Painting data is shipped (e.g. the Cell Painting Gallery's ``load_data.csv``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from dino_boc.errors import ChannelError, InputError
from dino_boc.io.record import ImageRecord
from dino_boc.io.tables import read_table, resolve, row_metadata, table_name, table_parent

__all__ = ["read_loaddata", "loaddata_channels", "is_loaddata"]

_FILE = re.compile(r"^(?:FileName|URL)_(.+)$")


def loaddata_channels(columns: Sequence[str]) -> list[str]:
    """The ``<Ch>`` of every ``FileName_<Ch>`` (or ``URL_<Ch>``) column, in column order, each once."""
    return list(dict.fromkeys(m.group(1) for m in map(_FILE.match, columns) if m))


def is_loaddata(columns: Sequence[str]) -> bool:
    """True when a table has at least one ``FileName_<Ch>`` column."""
    return bool(loaddata_channels(columns))


def read_loaddata(csv_path: str | os.PathLike, *, channels: Sequence[str] | None = None) -> list[ImageRecord]:
    """One :class:`ImageRecord` per row of a LoadData CSV (or Parquet table of the same columns).

    Missing files are not checked here: a row whose channel file is missing or empty fails when read,
    so that a batch can record it and go on.

    Args:
        csv_path: the table.
        channels: the ``<Ch>`` names to keep and their order (e.g. to leave out ``IllumDNA`` columns of
            illumination-correction files); ``None`` keeps every ``FileName_`` column in column order.

    Returns:
        Records with ``id = "<table name>#<row>"`` (0-based data row), one path per channel,
        ``channel_names`` = the ``<Ch>`` names, ``metadata`` = the other columns.

    Raises:
        ImageReadError: the table is missing or unreadable.
        InputError: no ``FileName_`` columns.
        ChannelError: a requested channel without a ``FileName_`` column.
    """
    header = read_table(csv_path).columns
    available = loaddata_channels(header)
    if not available:
        raise InputError(
            f"{str(csv_path)!r} has no FileName_<channel> columns (columns: {list(header)}); "
            "a LoadData CSV names each channel's file in FileName_<Ch> and its folder in PathName_<Ch>"
        )
    chosen = list(available if channels is None else channels)
    missing = [c for c in chosen if c not in available]
    if missing or not chosen:
        raise ChannelError(
            f"{str(csv_path)!r}: channels {missing or chosen} not among its FileName_ columns {available}"
        )
    path_cols = {c: f"PathName_{c}" for c in chosen if f"PathName_{c}" in header}
    file_cols = {c: f"FileName_{c}" for c in chosen if f"FileName_{c}" in header}
    url_cols = {c: f"URL_{c}" for c in chosen if f"URL_{c}" in header}
    text_cols = [*file_cols.values(), *path_cols.values(), *url_cols.values()]
    df = read_table(csv_path, text_columns=text_cols)
    channel_cols = {f"{kind}_{c}" for c in available for kind in ("FileName", "PathName", "URL")}
    meta_cols = [c for c in df.columns if c not in channel_cols]
    base = table_parent(csv_path)
    records = []
    for i, row in enumerate(df.to_dict("records")):
        paths = []
        for ch in chosen:
            url = _text(row[url_cols[ch]]) if ch in url_cols else ""
            name = _text(row[file_cols[ch]]) if ch in file_cols else ""
            folder = _text(row[path_cols[ch]]) if ch in path_cols else ""
            paths.append(url or (resolve(_join(folder, name), base) if name else ""))
        records.append(
            ImageRecord(
                id=f"{table_name(csv_path)}#{i}",
                paths=tuple(paths),
                channel_names=tuple(chosen),
                metadata=row_metadata(row, meta_cols),
            )
        )
    return records


def _join(folder: str, name: str) -> str:
    """``folder/name``; a URL folder (``s3://...``) is joined with ``/`` whatever the OS."""
    return f"{folder.rstrip('/')}/{name}" if "://" in folder else os.path.join(folder, name)


def _text(value) -> str:
    """A file or folder cell as text; empty, None and NaN (Parquet nulls) become ``""``."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()
