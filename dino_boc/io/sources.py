"""``collect_sources``: folders, globs, path lists and tables -> a deterministic list of :class:`ImageRecord`;
``iter_sources``: the same records, streamed (listings paged, tables read in chunks).

What each input becomes:

- a folder: every supported image file in it (and its sub-folders when ``recursive``), sorted by path;
  OME-Zarr folders count as images and are not searched; hidden entries (``.name``) are skipped, and so
  are files named like label images (``X_cp_masks.png``, ``X_masks.tif``: see :mod:`dino_boc.io.labels`),
  with a warning; when the files look like per-channel exports of a known instrument and no ``pattern``
  is given, a warning names the preset to pass;
- an OME-Zarr image folder or an image file: one record;
- an OME-Zarr HCS plate (or one well of it): one record per field, with ``Metadata_Plate``,
  ``Metadata_Well`` and ``Metadata_Site`` from the plate metadata;
- a glob pattern (``*``, ``?``, ``[``; ``**`` crosses folders): its matches, sorted;
- a table (``.csv``, ``.tsv``, ``.parquet``): a CellProfiler LoadData table when it has ``FileName_<Ch>``
  columns (see :mod:`dino_boc.io.loaddata`), otherwise one record per row from its ``path_column``
  (relative paths start at the table's folder) with every other column kept as metadata;
- an :class:`ImageRecord`: kept as is.

With ``pattern`` (a preset such as ``"cellomics"`` or a regex, see :mod:`dino_boc.io.grouping`), the image
files found in folders, globs and file lists are grouped into one multi-channel record per image. With
``position="each"``, a multi-position file (Micro-Manager ``R`` axis, OME-TIFF with one image per stage
position) becomes one record per position, with ``Metadata_Position``.

Image files that do not exist are still listed (their read fails later, so a batch can record the
failure and go on); an input that is neither an image path nor an existing folder, table or matching
glob is an error at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Union

from dino_boc.errors import ImageReadError, InputError
from dino_boc.io.axes import DEFAULT_Z, PositionChoice, ZReduction, check_position, check_t, check_z
from dino_boc.io.formats import SUPPORTED_SUFFIXES, ZARR_SUFFIXES, format_of, is_zarr_dir
from dino_boc.io.fs import filesystem, is_url, url_is_folder
from dino_boc.io.grouping import FilePattern, PresetGuess, file_pattern, group_files
from dino_boc.io.labels import image_key, is_label_name, mask_key
from dino_boc.io.listing import iter_table_records
from dino_boc.io.ngff import is_plate, plate_fields
from dino_boc.io.record import ImageRecord
from dino_boc.io.tables import TABLE_SUFFIXES, is_table
from dino_boc.io.tiff import tiff_positions
from dino_boc.io.walk import LocalGlob, url_glob_matcher, walk_local, walk_url

__all__ = ["ImageRecord", "collect_sources", "iter_sources", "list_label_images", "SourceInput"]

logger = logging.getLogger(__name__)

SourceInput = Union[str, os.PathLike, ImageRecord]
_GLOB_CHARS = ("*", "?", "[")


def iter_sources(
    inputs: SourceInput | Sequence[SourceInput],
    *,
    recursive: bool = True,
    path_column: str = "path",
    dims: str | None = None,
    z: ZReduction = DEFAULT_Z,
    t: int = 0,
    level: int = 0,
    channel_width: int | None = None,
    position: PositionChoice = 0,
    pattern: str | None = None,
) -> Iterator[ImageRecord]:
    """The records :func:`collect_sources` gives, in its order, streamed: listings are never held whole.

    A local folder is walked one directory at a time, an ``s3://``/``gs://`` prefix one page of
    :data:`~dino_boc.io.fs.LIST_PAGE_SIZE` keys at a time, a glob from its fixed folder only, a table
    a chunk of rows at a time (:mod:`dino_boc.io.listing`); :mod:`dino_boc.io.walk` says how the sorted
    order is kept.
    Memory then stays flat with the number of inputs, except:

    - with ``pattern``, the paths of the image files of ``inputs`` are held until the listing ends
      (about 150 bytes each: 10^6 files, some 150 MB), and so are the records that follow the first of
      them: the channel set and an image's files may span the whole listing (Incucyte names put the
      channel before the well, Phenix the time point after the channel), so grouping waits for all;
    - Micro-Manager datasets already listed are remembered, one ``(folder, prefix)`` per dataset.

    Unlike :func:`collect_sources`, repeated ids (a table naming one file twice) are not suffixed:
    that needs every id in memory; a streaming caller keeps ids unique its own way.

    Args:
        inputs, recursive, path_column, dims, z, t, level, channel_width, position, pattern: as for
            :func:`collect_sources`.

    Returns:
        An iterator of records. Bad options fail here, at the call; what the listing finds (a missing
        input, a glob without matches, no image at all) fails while iterating.

    Raises:
        InputError, ImageReadError, ConfigError: as for :func:`collect_sources`.
    """
    check_z(z)
    check_t(t)
    check_position(position)
    grouping = file_pattern(pattern) if pattern is not None else None
    items = [inputs] if isinstance(inputs, (str, os.PathLike, ImageRecord)) else list(inputs)
    options = {"dims": dims, "z": z, "t": t, "level": level, "channel_width": channel_width}
    return _stream(items, recursive=recursive, path_column=path_column, options=options, position=position,
                   grouping=grouping)


def collect_sources(
    inputs: SourceInput | Sequence[SourceInput],
    *,
    recursive: bool = True,
    path_column: str = "path",
    dims: str | None = None,
    z: ZReduction = DEFAULT_Z,
    t: int = 0,
    level: int = 0,
    channel_width: int | None = None,
    position: PositionChoice = 0,
    pattern: str | None = None,
) -> list[ImageRecord]:
    """List the images to read, in a deterministic order (inputs in the order given, each expanded sorted).

    Args:
        inputs: one input or a list of them: folders, image files, OME-Zarr folders, glob patterns,
            tables (LoadData or with a path column), :class:`ImageRecord` objects.
        recursive: search sub-folders of folder inputs.
        path_column: the column holding image paths in a (non-LoadData) table.
        dims, z, t, level, channel_width: read options stored on every record built here
            (see :func:`dino_boc.io.read_image`).
        position: stage position of multi-position files (an int), or ``"each"``: one record per
            position with ``Metadata_Position``.
        pattern: group per-channel files into multi-channel images: a preset (``"cellomics"``,
            ``"imagexpress"``, ``"phenix"``, ``"operetta"``, ``"incucyte"``) or a regular expression with
            a ``(?P<channel>...)`` group (see :mod:`dino_boc.io.grouping`); files it does not match are
            left out, with a warning.

    Returns:
        Records with unique ids (a repeated id gets ``#2``, ``#3``, ... appended). The list of
        :func:`iter_sources` (which streams them without holding listings whole).

    Raises:
        InputError: an input that does not exist and is no image path, a glob without matches, a table
            without ``path_column`` or ``FileName_`` columns, an empty result.
        ImageReadError: an unreadable table, a listing of an object store that failed.
        ConfigError: a bad ``pattern``.
    """
    return _unique_ids(iter_sources(inputs, recursive=recursive, path_column=path_column, dims=dims, z=z, t=t,
                                    level=level, channel_width=channel_width, position=position, pattern=pattern))


def _stream(items: list, *, recursive: bool, path_column: str, options: dict, position: PositionChoice,
            grouping: FilePattern | None) -> Iterator[ImageRecord]:
    """:func:`iter_sources` once its options are checked."""
    files: list[str] = []  # with ``pattern``: the plain image files, grouped at the end
    held: list[ImageRecord] = []  # with ``pattern``: records after the first file; they follow the grouped ones
    guess = PresetGuess()  # without ``pattern``: do the files look like per-channel exports?
    seen_mmstack: set[tuple[str, str]] = set()
    count = 0
    for item in items:
        for r in [item] if isinstance(item, ImageRecord) else _expand(item, recursive=recursive,
                                                                       path_column=path_column):
            loose = r is not item and _is_loose_file(r)
            if loose and _joined_mmstack(r.paths[0], seen_mmstack):
                continue
            if loose and grouping is not None:
                files.append(r.paths[0])
                continue
            if loose:
                guess.add(r.paths[0])
            out = [r] if r is item else _positions(dataclasses.replace(r, **options), position)
            if files:
                held.extend(out)
            else:
                count += len(out)
                yield from out
    if grouping is None:
        _warn_if_per_channel(guess)
    elif files:
        single = 0 if position == "each" else position
        grouped = [dataclasses.replace(r, **options, position=single) for r in _group(files, grouping)]
        count += len(grouped) + len(held)
        yield from grouped
        yield from held
    if not count:
        raise InputError(
            f"no images found in {[str(i) for i in items]}; supported suffixes: {', '.join(SUPPORTED_SUFFIXES)}"
        )


def list_label_images(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The label images among ``inputs`` (folders, globs, files), e.g. the ``--masks`` folder.

    A folder may hold images and their label images side by side (cellpose's layout: ``X.tif`` next to
    ``X_cp_masks.png``): a file named like an image whose label image sits in the same folder (``X.tif``
    beside ``X_cp_masks.png``) is that image, not a label image, and is left out.

    Raises:
        InputError: an input that does not exist, a glob without matches, nothing found.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths: list[str] = []
    for item in items:
        found = [r.paths[0] for r in _expand(item, recursive=True, path_column="path", labels=True)]
        named = {(str(Path(p).parent), mask_key(p)) for p in found if is_label_name(p)}
        paths += [p for p in found if is_label_name(p) or (str(Path(p).parent), image_key(p)) not in named]
    if not paths:
        raise InputError(f"no label images found in {[str(i) for i in items]}")
    return paths


def _joined_mmstack(path: str, seen: set[tuple[str, str]]) -> bool:
    """True for a Micro-Manager MMStack file whose dataset an earlier file already stands for.

    tifffile opens every ``<prefix>_MMStack*.tif`` file of a folder as the whole multi-file dataset (all
    positions), so reading each would repeat it; the first file (sorted) stands for the dataset.
    """
    name = Path(path).name
    if "_MMStack" not in name or format_of(path) != "tiff":
        return False
    key = (str(Path(path).parent), name.split("_MMStack")[0])
    if key in seen:
        logger.info("%s: part of the Micro-Manager dataset %r already listed (tifffile reads its files as one)",
                    path, key[1])
        return True
    seen.add(key)
    return False


def _group(files: list[str], grouping: FilePattern) -> list[ImageRecord]:
    """One record per multi-channel image; files the pattern does not match are left out, with a warning."""
    grouped, unmatched = group_files(files, grouping)
    if unmatched:
        logger.warning("%d image file(s) do not match pattern %r and are left out, e.g. %s",
                       len(unmatched), grouping.regex.pattern, unmatched[0])
    return grouped


def _warn_if_per_channel(guess: PresetGuess) -> None:
    """Warn when files read one per image look like a vendor's one-file-per-channel export."""
    preset = guess.preset
    if preset is not None:
        logger.warning(
            "%d files look like per-channel %s exports (one channel per file, e.g. %s); each is read as a "
            "one-channel image, so different stains share the same feature columns. Group them with "
            "pattern=%r (CLI: --pattern %s)", guess.count, preset, Path(str(guess.first)).name, preset, preset,
        )


def _is_loose_file(record: ImageRecord) -> bool:
    """A record of one plain image file (not a table row, not a zarr image), as a folder or glob gives."""
    return (len(record.paths) == 1 and not record.metadata and record.id == record.paths[0]
            and format_of(record.paths[0]) not in (None, "zarr"))


def _positions(record: ImageRecord, position: PositionChoice) -> list[ImageRecord]:
    """The record at ``position``, or one record per stage position of its file for ``"each"``."""
    if position != "each":
        return [dataclasses.replace(record, position=position)]
    if len(record.paths) != 1 or format_of(record.paths[0]) != "tiff" or not Path(record.paths[0]).is_file():
        return [record]
    try:
        count = tiff_positions(record.paths[0])
    except ImageReadError:  # unreadable: it fails (and is recorded) when read
        return [record]
    if count <= 1:
        return [dataclasses.replace(record, metadata={**record.metadata, "Metadata_Position": 0})]
    return [
        dataclasses.replace(record, id=f"{record.id}#position={i}", position=i,
                            metadata={**record.metadata, "Metadata_Position": i})
        for i in range(count)
    ]


def _expand(item: str | os.PathLike, *, recursive: bool, path_column: str,
            labels: bool = False) -> Iterator[ImageRecord]:
    if is_url(item):  # object stores: prefixes and globs listed through fsspec, a page at a time
        yield from _expand_url(str(item), recursive=recursive, path_column=path_column)
        return
    path = Path(item)
    if path.is_dir():
        if is_zarr_dir(path):
            yield from _zarr_records(path)
        else:
            yield from _scan_folder(path, recursive=recursive, labels=labels)
    elif path.is_file() and is_table(path):
        yield from _table_records(path, path_column=path_column)
    elif path.exists():
        yield _file_record(path)
    elif any(c in str(item) for c in _GLOB_CHARS):
        yield from _glob_records(str(item), path_column=path_column)
    elif format_of(path) is not None:
        yield _file_record(path)
    else:
        raise InputError(
            f"{str(item)!r} does not exist and is not an image file name, folder, table ({', '.join(TABLE_SUFFIXES)}) "
            "or glob pattern; check the path"
        )


def _expand_url(url: str, *, recursive: bool, path_column: str) -> Iterator[ImageRecord]:
    """A URL: a table, an image object, an OME-Zarr prefix, a glob, or a prefix listed like a folder."""
    if is_table(url):
        yield from _table_records(url, path_column=path_column)
    elif any(c in url.split("://", 1)[1] for c in _GLOB_CHARS):
        yield from _glob_records(url, path_column=path_column)
    elif format_of(url) is not None:
        yield ImageRecord(id=url, paths=(url,))
    elif url_is_folder(url):  # one key asked for; fsspec's isdir would list (and keep) the whole prefix
        def visit(entry: str, name: str, is_dir: bool, is_link: bool, state: bool):
            inner = None if not (recursive and is_dir) or _zarr_name(entry) else state
            return _listed_image(entry), (inner if is_dir else None)

        n = 0
        for u in walk_url(url, visit, result_folder=_listed_image, state=True):
            n += 1
            yield ImageRecord(id=u, paths=(u,))
        if not n:
            logger.warning("no supported images under %s", url)
    else:
        raise InputError(f"{url!r} is not an image, table, OME-Zarr or prefix of images; check the URL")


def _listed_image(url: str) -> bool:
    """An object of a listing that is an image, by suffix only (no request per object; zarr chunks skipped)."""
    low = url.lower().rstrip("/")
    return ".zarr/" not in low and low.endswith(SUPPORTED_SUFFIXES)


def _zarr_name(url: str) -> bool:
    """A listed folder named like an OME-Zarr (nothing under it is listed: its chunks are no images)."""
    return url.lower().rstrip("/").endswith(ZARR_SUFFIXES)


def _file_record(path: Path) -> ImageRecord:
    return ImageRecord(id=str(path), paths=(str(path),))


def _zarr_records(path: Path) -> list[ImageRecord]:
    """An OME-Zarr image (one record; a field of a plate keeps its plate, well and site), or a plate's fields."""
    try:
        if is_plate(path):
            return [ImageRecord(id=image, paths=(image,), metadata=meta) for image, meta in plate_fields(path)]
        if is_zarr_dir(path.parent) and is_plate(path.parent):  # a field inside a well, e.g. from a glob
            meta = dict(plate_fields(path.parent)).get(str(path))
            if meta is not None:
                return [ImageRecord(id=str(path), paths=(str(path),), metadata=meta)]
    except (ImageReadError, InputError) as exc:  # unreadable metadata: the image fails (recorded) when read
        logger.debug("%s: no plate metadata (%s)", path, exc)
    return [_file_record(path)]


def _scan_folder(folder: Path, *, recursive: bool, labels: bool = False) -> Iterator[ImageRecord]:
    """A folder's images, sorted by path, as ``os.walk`` finds them (hidden entries skipped, links to folders
    not followed, OME-Zarr folders not searched), one directory held at a time."""
    masks, first_mask, n = 0, "", 0

    def visit(path: str, name: str, is_dir: bool, is_link: bool, state: bool):
        if name.startswith("."):
            return False, None
        if is_dir:
            if is_zarr_dir(path):
                return True, None
            return False, (state if recursive and not is_link else None)
        return format_of(path) is not None, None

    root = str(folder)
    for p in walk_local("" if root == "." else root, visit, True):
        if not labels and is_label_name(p):
            masks, first_mask = masks + 1, first_mask or p
            continue
        n += 1
        yield from _zarr_records(Path(p)) if is_zarr_dir(p) else [_file_record(Path(p))]
    if masks:
        logger.warning(
            "%s: %d file(s) named like label images (e.g. %s) are not embedded as images; pass the folder "
            "with masks= (--masks) to embed single cells", folder, masks, Path(first_mask).name,
        )
    if not n:
        logger.warning("no supported images in folder %s", folder)


def _glob_records(pattern: str, *, path_column: str) -> Iterator[ImageRecord]:
    n, matches = 0, 0
    if is_url(pattern):  # walked from its fixed folder; OME-Zarr prefixes are listed, not expanded
        fs = filesystem(pattern)
        root, stem, depth, test = url_glob_matcher(pattern, fs._strip_protocol)
        tables: list[str] = []

        def visit(entry: str, name: str, is_dir: bool, is_link: bool, level: int):
            nonlocal matches
            hit = test(entry, is_dir)
            matches += hit
            deeper = is_dir and (depth is None or level < depth) and not _zarr_name(entry)
            if hit and is_table(entry) and not is_dir:
                tables.append(entry)  # its rows follow the images, as the whole listing gave them
                hit = False
            return hit and _listed_image(entry), (level + 1 if deeper else None)

        for u in walk_url(root, visit, result_folder=lambda u: _listed_image(u) or is_table(u), state=1,
                          prefix=stem):
            n += 1
            yield ImageRecord(id=u, paths=(u,))
        for table in tables:
            for record in _table_records(table, path_column=path_column):
                n += 1
                yield record
    else:
        for match in LocalGlob(os.path.expanduser(pattern)).matches():
            matches += 1
            p = Path(match)
            if p.is_file() and is_table(p):
                found: Iterable[ImageRecord] = _table_records(p, path_column=path_column)
            elif is_zarr_dir(p):
                found = _zarr_records(p)
            elif p.is_file() and format_of(p) is not None:
                found = [_file_record(p)]
            else:
                logger.debug("glob %s: skipping %s (not a supported image)", pattern, match)
                continue
            for record in found:
                n += 1
                yield record
    if not n:
        raise InputError(f"glob {pattern!r} matches no supported image ({matches} matches in all)")


def _table_records(table: Path | str, *, path_column: str) -> Iterator[ImageRecord]:
    """A table's records, a chunk of rows at a time (:func:`dino_boc.io.listing.iter_table_records`)."""
    return iter_table_records(table, path_column=path_column)


def _unique_ids(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    seen: dict[str, int] = {}
    out = []
    for record in records:
        n = seen.get(record.id, 0) + 1
        seen[record.id] = n
        out.append(record if n == 1 else dataclasses.replace(record, id=f"{record.id}#{n}"))
    return out
