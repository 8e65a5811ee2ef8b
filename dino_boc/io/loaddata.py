"""CellProfiler LoadData CSVs: one row per field of view, one file per channel.

A channel ``<Ch>`` is described by a ``FileName_<Ch>`` column (the file name) and an optional
``PathName_<Ch>`` column (its folder; relative folders start at the CSV's folder, an absent or empty
one means the CSV's folder). The Cell Painting Gallery's tables may also give each file's full object URL in
a ``URL_<Ch>`` column (``s3://cellpainting-gallery/...``); when a row has one it is used as is. Every other column (``Metadata_Plate``, ``Metadata_Well``, ...) is metadata.
This is how Cell Painting data is shipped (e.g. the Cell Painting Gallery's ``load_data.csv``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

from dino_boc.errors import ChannelError, InputError
from dino_boc.io.record import ImageRecord
from dino_boc.io.tables import read_table, resolve, row_metadata, table_name, table_parent

__all__ = ["read_loaddata", "loaddata_channels", "is_loaddata", "LoadDataPlan"]

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
    plan = LoadDataPlan.of(csv_path, read_table(csv_path).columns, channels)
    df = read_table(csv_path, text_columns=plan.text_columns)
    return [plan.record(i, row) for i, row in enumerate(df.to_dict("records"))]


@dataclasses.dataclass(frozen=True)
class LoadDataPlan:
    """How each row of one LoadData table becomes an :class:`ImageRecord` (so tables can be read in chunks).

    Attributes:
        table: the table's path or URL (record ids are ``<table name>#<row>``).
        chosen: the ``<Ch>`` names kept, in order.
        url_cols, file_cols, path_cols: per chosen channel its ``URL_``/``FileName_``/``PathName_`` column.
        meta_cols: every column that is not a channel's.
    """

    table: str
    chosen: tuple[str, ...]
    url_cols: dict[str, str]
    file_cols: dict[str, str]
    path_cols: dict[str, str]
    meta_cols: tuple[str, ...]

    @classmethod
    def of(cls, table: str | os.PathLike, header: Sequence[str], channels: Sequence[str] | None = None) -> "LoadDataPlan":
        """Check ``header`` and the requested channels (errors as :func:`read_loaddata` documents)."""
        header = [str(c) for c in header]
        available = loaddata_channels(header)
        if not available:
            raise InputError(
                f"{str(table)!r} has no FileName_<channel> columns (columns: {list(header)}); "
                "a LoadData CSV names each channel's file in FileName_<Ch> and its folder in PathName_<Ch>"
            )
        chosen = list(available if channels is None else channels)
        missing = [c for c in chosen if c not in available]
        if missing or not chosen:
            raise ChannelError(
                f"{str(table)!r}: channels {missing or chosen} not among its FileName_ columns {available}"
            )
        cols = {kind: {c: f"{kind}_{c}" for c in chosen if f"{kind}_{c}" in header} for kind in ("URL", "FileName", "PathName")}
        channel_cols = {f"{kind}_{c}" for c in available for kind in ("FileName", "PathName", "URL")}
        return cls(str(table), tuple(chosen), cols["URL"], cols["FileName"], cols["PathName"],
                   tuple(c for c in header if c not in channel_cols))

    @property
    def text_columns(self) -> list[str]:
        """Columns read verbatim as text (file names and folders)."""
        return [*self.file_cols.values(), *self.path_cols.values(), *self.url_cols.values()]

    def record(self, index: int, row: dict) -> ImageRecord:
        """The record of data row ``index`` (a ``DataFrame.to_dict('records')`` entry)."""
        base = table_parent(self.table)
        paths = []
        for ch in self.chosen:
            url = _text(row[self.url_cols[ch]]) if ch in self.url_cols else ""
            name = _text(row[self.file_cols[ch]]) if ch in self.file_cols else ""
            folder = _text(row[self.path_cols[ch]]) if ch in self.path_cols else ""
            paths.append(url or (resolve(_join(folder, name), base) if name else ""))
        return ImageRecord(id=f"{table_name(self.table)}#{index}", paths=tuple(paths), channel_names=self.chosen,
                           metadata=row_metadata(row, self.meta_cols))


def _join(folder: str, name: str) -> str:
    """``folder/name``; a URL folder (``s3://...``) is joined with ``/`` whatever the OS."""
    return f"{folder.rstrip('/')}/{name}" if "://" in folder else os.path.join(folder, name)


def _text(value) -> str:
    """A file or folder cell as text; empty, None and NaN (Parquet nulls) become ``""``."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()
