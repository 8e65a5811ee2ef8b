"""``collect_sources``: folders, globs, path lists and tables -> a deterministic list of :class:`ImageRecord`.

What each input becomes:

- a folder: every supported image file in it (and its sub-folders when ``recursive``), sorted by path;
  OME-Zarr folders count as images and are not searched; hidden entries (``.name``) are skipped;
- an OME-Zarr folder or an image file: one record;
- a glob pattern (``*``, ``?``, ``[``; ``**`` crosses folders): its matches, sorted;
- a table (``.csv``, ``.tsv``, ``.parquet``): a CellProfiler LoadData table when it has ``FileName_<Ch>``
  columns (see :mod:`dino_boc.io.loaddata`), otherwise one record per row from its ``path_column``
  (relative paths start at the table's folder) with every other column kept as metadata;
- an :class:`ImageRecord`: kept as is.

Image files that do not exist are still listed (their read fails later, so a batch can record the
failure and go on); an input that is neither an image path nor an existing folder, table or matching
glob is an error at once.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

from dino_boc.errors import InputError
from dino_boc.io.axes import ZReduction, check_t, check_z
from dino_boc.io.formats import SUPPORTED_SUFFIXES, format_of, is_zarr_dir
from dino_boc.io.fs import is_url, url_glob, url_isdir
from dino_boc.io.loaddata import is_loaddata, read_loaddata
from dino_boc.io.record import ImageRecord
from dino_boc.io.tables import TABLE_SUFFIXES, is_table, read_table, resolve, row_metadata, table_name, table_parent

__all__ = ["ImageRecord", "collect_sources", "SourceInput"]

logger = logging.getLogger(__name__)

SourceInput = Union[str, os.PathLike, ImageRecord]
_GLOB_CHARS = ("*", "?", "[")


def collect_sources(
    inputs: SourceInput | Sequence[SourceInput],
    *,
    recursive: bool = True,
    path_column: str = "path",
    dims: str | None = None,
    z: ZReduction = "max",
    t: int = 0,
    level: int = 0,
    channel_width: int | None = None,
) -> list[ImageRecord]:
    """List the images to read, in a deterministic order (inputs in the order given, each expanded sorted).

    Args:
        inputs: one input or a list of them: folders, image files, OME-Zarr folders, glob patterns,
            tables (LoadData or with a path column), :class:`ImageRecord` objects.
        recursive: search sub-folders of folder inputs.
        path_column: the column holding image paths in a (non-LoadData) table.
        dims, z, t, level, channel_width: read options stored on every record built here
            (see :func:`dino_boc.io.read_image`).

    Returns:
        Records with unique ids (a repeated id gets ``#2``, ``#3``, ... appended).

    Raises:
        InputError: an input that does not exist and is no image path, a glob without matches, a table
            without ``path_column`` or ``FileName_`` columns, an empty result.
        ImageReadError: an unreadable table.
    """
    check_z(z)
    check_t(t)
    items = [inputs] if isinstance(inputs, (str, os.PathLike, ImageRecord)) else list(inputs)
    options = {"dims": dims, "z": z, "t": t, "level": level, "channel_width": channel_width}
    records: list[ImageRecord] = []
    for item in items:
        if isinstance(item, ImageRecord):
            records.append(item)
        else:
            found = _expand(item, recursive=recursive, path_column=path_column)
            records.extend(dataclasses.replace(r, **options) for r in found)
    if not records:
        raise InputError(
            f"no images found in {[str(i) for i in items]}; supported suffixes: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return _unique_ids(records)


def _expand(item: str | os.PathLike, *, recursive: bool, path_column: str) -> list[ImageRecord]:
    if is_url(item):  # i17
        return _expand_url(str(item), recursive=recursive, path_column=path_column)
    path = Path(item)
    if path.is_dir():
        return [_file_record(path)] if is_zarr_dir(path) else _scan_folder(path, recursive=recursive)
    if path.is_file() and is_table(path):
        return _table_records(path, path_column=path_column)
    if path.exists():
        return [_file_record(path)]
    if any(c in str(item) for c in _GLOB_CHARS):
        return _glob_records(str(item), path_column=path_column)
    if format_of(path) is not None:
        return [_file_record(path)]
    raise InputError(
        f"{str(item)!r} does not exist and is not an image file name, folder, table ({', '.join(TABLE_SUFFIXES)}) "
        "or glob pattern; check the path"
    )


def _expand_url(url: str, *, recursive: bool, path_column: str) -> list[ImageRecord]:
    """A URL: a table, an image object, an OME-Zarr prefix, a glob, or a prefix listed like a folder."""
    if is_table(url):
        return _table_records(url, path_column=path_column)
    if any(c in url.split("://", 1)[1] for c in _GLOB_CHARS):
        return _glob_records(url, path_column=path_column)
    if format_of(url) is not None:
        return [ImageRecord(id=url, paths=(url,))]
    if url_isdir(url):
        pattern = url.rstrip("/") + ("/**" if recursive else "/*")
        found = [u for u in url_glob(pattern) if _listed_image(u)]
        if not found:
            logger.warning("no supported images under %s", url)
        return [ImageRecord(id=u, paths=(u,)) for u in found]
    raise InputError(f"{url!r} is not an image, table, OME-Zarr or prefix of images; check the URL")


def _listed_image(url: str) -> bool:
    """An object of a listing that is an image, by suffix only (no request per object; zarr chunks skipped)."""
    low = url.lower().rstrip("/")
    return ".zarr/" not in low and low.endswith(SUPPORTED_SUFFIXES)


def _file_record(path: Path) -> ImageRecord:
    return ImageRecord(id=str(path), paths=(str(path),))


def _scan_folder(folder: Path, *, recursive: bool) -> list[ImageRecord]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in list(dirnames):
            if is_zarr_dir(here / d):
                found.append(str(here / d))
                dirnames.remove(d)
        found.extend(str(here / f) for f in filenames if not f.startswith(".") and format_of(here / f) is not None)
        if not recursive:
            break
    if not found:
        logger.warning("no supported images in folder %s", folder)
    return [_file_record(Path(p)) for p in sorted(found)]


def _glob_records(pattern: str, *, path_column: str) -> list[ImageRecord]:
    records: list[ImageRecord] = []
    if is_url(pattern):  # i17: object listings are flat; zarr prefixes in them are not expanded
        matches = url_glob(pattern)
        records = [ImageRecord(id=u, paths=(u,)) for u in matches if _listed_image(u)]
        for table in (u for u in matches if is_table(u)):
            records.extend(_table_records(table, path_column=path_column))
        if not records:
            raise InputError(f"glob {pattern!r} matches no supported image ({len(matches)} matches in all)")
        return records
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    for match in matches:
        p = Path(match)
        if p.is_file() and is_table(p):
            records.extend(_table_records(p, path_column=path_column))
        elif (p.is_file() or is_zarr_dir(p)) and format_of(p) is not None:
            records.append(_file_record(p))
        else:
            logger.debug("glob %s: skipping %s (not a supported image)", pattern, match)
    if not records:
        raise InputError(f"glob {pattern!r} matches no supported image ({len(matches)} matches in all)")
    return records


def _table_records(table: Path | str, *, path_column: str) -> list[ImageRecord]:
    df = read_table(table)
    if is_loaddata(list(df.columns)):
        return read_loaddata(table)
    if path_column not in df.columns:
        raise InputError(
            f"{str(table)!r} has no {path_column!r} column (columns: {list(df.columns)}); name the column of "
            "image paths with path_column=, or give FileName_<Ch>/PathName_<Ch> columns (CellProfiler LoadData)"
        )
    meta_cols = [c for c in df.columns if c != path_column]
    records = []
    for i, row in enumerate(df.to_dict("records")):
        value = row[path_column]
        text = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()
        path = resolve(text, table_parent(table)) if text else ""
        metadata = row_metadata(row, meta_cols)
        records.append(ImageRecord(id=path or f"{table_name(table)}#{i}", paths=(path,), metadata=metadata))
    return records


def _unique_ids(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    seen: dict[str, int] = {}
    out = []
    for record in records:
        n = seen.get(record.id, 0) + 1
        seen[record.id] = n
        out.append(record if n == 1 else dataclasses.replace(record, id=f"{record.id}#{n}"))
    return out
