"""CellProfiler LoadData CSVs: one row per field of view, one file per channel.

Columns, as CellProfiler's LoadData module reads them (and pe2loaddata / the Cell Painting Gallery write):

- ``FileName_<Ch>`` / ``PathName_<Ch>``: the file of image channel ``<Ch>`` (``OrigDNA``, ``OrigER``, ...)
  and its folder (a local folder or an object-store URL such as ``s3://cellpainting-gallery/...``);
- ``URL_<Ch>``: the Cell Painting Gallery's full object URL of the file; when a row has one it is used as is;
- ``FileName_Illum<Ch>`` / ``PathName_Illum<Ch>``: the illumination function (``.npy``) of channel
  ``Orig<Ch>`` (or ``<Ch>``). Never a channel: applied with ``illum=True`` (:mod:`dino_boc.io.illum`);
- ``ObjectsFileName_<O>`` / ``ObjectsPathName_<O>``: a label image of objects ``<O>`` (``Nuclei``,
  ``Cells``), the masks of single-cell mode;
- every other column (``Metadata_Plate``, ``Metadata_Well``, ...) is metadata, kept as written (text).

Relative folders: pe2loaddata and CellProfiler write ``PathName_`` relative to the folder they ran in,
which is often not the CSV's folder. The bases tried, in this order (see :data:`PATH_BASES`):

1. ``path_root`` (``--path-root``) when given;
2. the CSV's folder;
3. the current working directory.

The first base under which the table's first file exists is used for the whole table, and named in
the log; when none holds it, the first base is used and a warning lists every base tried.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dino_boc.errors import ChannelError, ConfigError, InputError
from dino_boc.io.fs import is_url
from dino_boc.io.illum import ILLUM_PREFIX, illum_name
from dino_boc.io.record import ImageRecord
from dino_boc.io.tables import iter_table_chunks, resolve, row_metadata, table_name, table_parent

__all__ = [
    "PATH_BASES", "read_loaddata", "loaddata_channels", "loaddata_objects", "object_names", "is_loaddata",
    "path_bases", "LoadDataPlan", "iter_loaddata",
]

logger = logging.getLogger(__name__)

PATH_BASES = ("path_root", "csv_folder", "cwd")
_FILE = re.compile(r"^(?:FileName|URL)_(.+)$")
_OBJECTS = re.compile(r"^ObjectsFileName_(.+)$")


def _file_names(columns: Sequence[str]) -> list[str]:
    """The ``<Ch>`` of every ``FileName_<Ch>`` or ``URL_<Ch>`` column, in column order, each once."""
    return list(dict.fromkeys(m.group(1) for m in map(_FILE.match, columns) if m))


def loaddata_channels(columns: Sequence[str]) -> list[str]:
    """The image channels: ``<Ch>`` of every ``FileName_<Ch>`` column but ``Illum*``, in column order."""
    return [c for c in _file_names(columns) if not c.startswith(ILLUM_PREFIX)]


def object_names(columns: Sequence[str]) -> list[str]:
    """The ``<O>`` of every ``ObjectsFileName_<O>`` column (label images), in column order."""
    return [m.group(1) for m in map(_OBJECTS.match, columns) if m]


def is_loaddata(columns: Sequence[str]) -> bool:
    """True when a table has at least one ``FileName_<Ch>`` image column."""
    return bool(loaddata_channels(columns))


def path_bases(csv_path: str | os.PathLike, path_root: str | os.PathLike | None = None) -> list[Path | str]:
    """The folders relative ``PathName_`` values are tried against, in order (duplicates dropped). A table in
    an object store (a URL) has its own folder only (after ``path_root``)."""
    root = [] if path_root is None else [str(path_root) if is_url(path_root) else Path(os.path.expanduser(path_root))]
    if is_url(csv_path):
        return [*root, table_parent(csv_path)]
    bases = root + [Path(csv_path).parent, Path.cwd()]
    out: list[Path] = []
    for b in bases:
        if not any(os.path.abspath(b) == os.path.abspath(o) for o in out):
            out.append(b)
    return out


def read_loaddata(
    csv_path: str | os.PathLike,
    *,
    channels: Sequence[str] | None = None,
    illum: bool = False,
    path_root: str | os.PathLike | None = None,
) -> list[ImageRecord]:
    """One :class:`ImageRecord` per row of a LoadData CSV (or Parquet table of the same columns).

    Missing image files are not checked here (but the first one picks the base of relative folders):
    a row whose channel file is missing or empty fails when read, so that a batch can record it and go on.
    The list of :func:`iter_loaddata`, which streams the same records.

    Args:
        csv_path: the table.
        channels: the ``<Ch>`` names to keep and their order (``["OrigDNA", "OrigER"]``); ``None`` keeps
            every image channel in column order. ``Illum<Ch>`` columns are never channels.
        illum: divide each channel by its illumination function (``FileName_Illum<Ch>`` for ``Orig<Ch>``
            or ``<Ch>``), as CellProfiler's CorrectIlluminationApply does.
        path_root: the folder relative ``PathName_`` values start at (tried first; see :data:`PATH_BASES`).

    Returns:
        Records with ``id = "<table name>#<row>"`` (0-based data row), one path per channel,
        ``channel_names`` = the ``<Ch>`` names, ``metadata`` = the other columns (as written),
        ``illum`` = one function per channel when ``illum``.

    Raises:
        ImageReadError: the table is missing or unreadable.
        InputError: no ``FileName_`` image columns, no rows.
        ChannelError: a requested channel without a ``FileName_`` column, an ``Illum`` channel asked for
            as a channel, or (with ``illum``) a channel without an ``Illum`` column.
    """
    return [r for r, _ in iter_loaddata(csv_path, channels=channels, illum=illum, path_root=path_root)]


def loaddata_objects(
    csv_path: str | os.PathLike, name: str, *, path_root: str | os.PathLike | None = None
) -> list[str]:
    """Per row, the label image of objects ``name`` (``ObjectsFileName_<name>`` / ``ObjectsPathName_<name>``).

    Folders are resolved as the image folders are (see :data:`PATH_BASES`); a row without a file gives ``""``.

    Raises:
        ConfigError: the table has no ``ObjectsFileName_<name>`` column.
    """
    return [str(m) for _, m in iter_loaddata(csv_path, path_root=path_root, objects=name)]


def iter_loaddata(
    csv_path: str | os.PathLike,
    *,
    channels: Sequence[str] | None = None,
    illum: bool = False,
    path_root: str | os.PathLike | None = None,
    objects: str | None = None,
    chunk_rows: int = 8192,
    record_options: Mapping[str, Any] | None = None,
) -> Iterator[tuple[ImageRecord, str | None]]:
    """The rows of a LoadData table streamed in chunks of ``chunk_rows`` (memory does not grow with the
    table): per row its record (as :func:`read_loaddata` documents) and, when ``objects`` names objects
    ``<O>``, its ``ObjectsFileName_<O>`` label image (``""`` for a row without one), else None.

    The bases of relative folders are chosen from the first chunk's rows (:data:`PATH_BASES`).
    ``record_options`` (read options such as ``dims``, ``z``, ``max_pixels``) are set on every record.

    Raises:
        as :func:`read_loaddata`; ConfigError: ``objects`` that the table has no column for.
    """
    csv_path = str(csv_path) if is_url(csv_path) else Path(csv_path)
    plan: LoadDataPlan | None = None
    index = 0
    for chunk in iter_table_chunks(csv_path, chunk_rows=chunk_rows):
        rows = chunk.to_dict("records")
        if plan is None:
            plan = LoadDataPlan.of(csv_path, list(chunk.columns), rows, channels=channels, illum=illum,
                                   path_root=path_root, objects=objects)
        for row in rows:
            yield plan.record(index, row, **(record_options or {})), plan.objects_of(row)
            index += 1


def _choose(csv_path: Path, available: list[str], every: list[str], channels: Sequence[str] | None) -> list[str]:
    chosen = list(available if channels is None else channels)
    functions = [c for c in chosen if c in every and c not in available]
    if functions:
        raise ChannelError(
            f"{str(csv_path)!r}: {functions} are illumination functions, not image channels; choose among "
            f"{available} and pass illum=True (--illum) to divide each by its function"
        )
    missing = [c for c in chosen if c not in available]
    if missing or not chosen:
        raise ChannelError(
            f"{str(csv_path)!r}: channels {missing or chosen} not among its FileName_ columns {available}"
        )
    return chosen


def _illum_of(csv_path: Path, chosen: list[str], header: list[str]) -> dict[str, str]:
    """Each chosen channel's ``Illum<Ch>`` name; every one must have its column."""
    functions = {ch: illum_name(ch) for ch in chosen}
    lacking = [ch for ch, fn in functions.items() if f"FileName_{fn}" not in header]
    if lacking:
        present = [c for c in _file_names(header) if c.startswith(ILLUM_PREFIX)]
        raise ChannelError(
            f"{str(csv_path)!r}: illum=True but channels {lacking} have no illumination column "
            f"({', '.join('FileName_' + functions[c] for c in lacking)}; Illum columns: {present or 'none'}); "
            "leave those channels out, or run without illum"
        )
    return functions


def _cell_path(row: dict, prefix: str, ch: str, base: Path | str) -> str:
    """The file of ``ch`` in one row: its ``URL_`` cell when set, else ``PathName_``/``FileName_`` resolved
    against ``base`` (``""`` when its file name is empty)."""
    url = _text(row.get(f"URL_{ch}")) if not prefix else ""
    if url:
        return url
    name = _text(row.get(f"{prefix}FileName_{ch}"))
    folder = _text(row.get(f"{prefix}PathName_{ch}"))
    return resolve(_join(folder, name), base) if name else ""


def _join(folder: str, name: str) -> str:
    """``folder/name``; a URL folder (``s3://...``) is joined with ``/`` whatever the OS."""
    return f"{folder.rstrip('/')}/{name}" if "://" in folder else os.path.join(folder, name)


def _base(csv_path: Path, rows: list[dict], channels: list[str], path_root, *, objects: Sequence[str] = ()) -> Path:
    """The first of :func:`path_bases` under which the table's first relative file exists."""
    bases = path_bases(csv_path, path_root)
    probe = _first_relative(rows, [("", c) for c in channels] + [("Objects", o) for o in objects])
    if probe is None or any(is_url(b) for b in bases):  # object stores: no probing request per table
        return bases[0]
    for base in bases:
        if os.path.exists(resolve(probe, base)):
            if path_root is not None and base != bases[0]:
                logger.warning("%s: %r is not under path_root %s; using %s instead", csv_path, probe, path_root, base)
            else:
                logger.info("%s: relative PathName_ folders resolved against %s", csv_path, base)
            return base
    tried = ", ".join(str(b) for b in bases)
    logger.warning(
        "%s: its first file %r is under none of the bases tried (%s); resolving against %s. If the CSV was "
        "written elsewhere (pe2loaddata, CellProfiler), pass the folder it ran in as path_root (--path-root)",
        csv_path, probe, tried, bases[0],
    )
    return bases[0]


def _first_relative(rows: list[dict], refs: list[tuple[str, str]]) -> str | None:
    """The first relative ``PathName_/FileName_`` of the table (row by row), or None when all are absolute."""
    for row in rows:
        for prefix, c in refs:
            name = _text(row.get(f"{prefix}FileName_{c}"))
            rel = _join(_text(row.get(f"{prefix}PathName_{c}")), name)
            if name and not is_url(rel) and not Path(os.path.expanduser(rel)).is_absolute():
                return rel
    return None


@dataclasses.dataclass(frozen=True)
class LoadDataPlan:
    """How each row of one LoadData table becomes an :class:`ImageRecord` (and its label image), decided
    once from the header and the first rows, so that a table can be read in chunks (:func:`iter_loaddata`).

    Attributes:
        table: the table's path or URL (record ids are ``<table name>#<row>``).
        chosen: the ``<Ch>`` names kept, in order.
        functions: per chosen channel its ``Illum<Ch>`` name (``illum=True``), else None.
        meta_cols: every column that names no file (``Metadata_*`` and the rest), in column order.
        base: where relative image and illumination folders start (see :data:`PATH_BASES`).
        objects: the ``<O>`` of ``ObjectsFileName_<O>`` label images, or None.
        objects_base: where relative label-image folders start.
    """

    table: str | Path
    chosen: tuple[str, ...]
    functions: tuple[str, ...] | None
    meta_cols: tuple[str, ...]
    base: Path | str
    objects: str | None = None
    objects_base: Path | str | None = None

    @classmethod
    def of(cls, table: str | os.PathLike, header: Sequence[str], rows: Sequence[dict], *,
           channels: Sequence[str] | None = None, illum: bool = False, path_root: str | os.PathLike | None = None,
           objects: str | None = None) -> "LoadDataPlan":
        """Check ``header`` and the options, and choose the bases of relative folders from ``rows`` (the
        table's first rows). Errors as :func:`read_loaddata` and :func:`iter_loaddata` document."""
        header = [str(c) for c in header]
        available = loaddata_channels(header)
        if not available:
            raise InputError(
                f"{str(table)!r} has no FileName_<channel> columns (columns: {header}); "
                "a LoadData CSV names each channel's file in FileName_<Ch> and its folder in PathName_<Ch>"
            )
        chosen = _choose(table, available, _file_names(header), channels)
        functions = _illum_of(table, chosen, header) if illum else {}
        ref_cols = {f"{p}_{c}" for c in _file_names(header) for p in ("FileName", "PathName", "URL")}
        ref_cols |= {f"Objects{p}_{o}" for o in object_names(header) for p in ("FileName", "PathName")}
        objects_base = None
        if objects is not None:
            names = object_names(header)
            if objects not in names:
                raise ConfigError(
                    f"{str(table)!r} has no ObjectsFileName_{objects} column (objects in it: {names or 'none'}); "
                    "name one of its objects, e.g. Nuclei for ObjectsFileName_Nuclei"
                )
            objects_base = _base(table, rows, [], path_root, objects=[objects])
        return cls(table, tuple(chosen), tuple(functions[c] for c in chosen) if illum else None,
                   tuple(c for c in header if c not in ref_cols),
                   _base(table, rows, [*chosen, *functions.values()], path_root), objects, objects_base)

    def record(self, index: int, row: dict, **options: Any) -> ImageRecord:
        """The record of data row ``index`` (a ``DataFrame.to_dict('records')`` entry); ``options`` are
        other :class:`ImageRecord` fields (read options)."""
        paths = tuple(_cell_path(row, "", ch, self.base) for ch in self.chosen)
        fn = None if self.functions is None else tuple(_cell_path(row, "", f, self.base) for f in self.functions)
        return ImageRecord(id=f"{table_name(self.table)}#{index}", paths=paths, channel_names=self.chosen,
                           metadata=row_metadata(row, self.meta_cols), illum=fn, **options)

    def objects_of(self, row: dict) -> str | None:
        """The row's label image of :attr:`objects` (``""`` when its cell is empty), None without objects."""
        if self.objects is None:
            return None
        return _cell_path(row, "Objects", self.objects, self.objects_base)


def _text(value) -> str:
    """A file or folder cell as text; empty, None and NaN (Parquet nulls) become ``""``."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()
