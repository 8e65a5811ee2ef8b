"""The inputs of a run: sources -> records, and the label image (mask) of each record in single-cell mode.

Label images are matched to images by file stem. An image ``plate1/A01_f1.ome.tif`` takes the label image
whose name, without its image suffix, is ``A01_f1`` or ``A01_f1`` followed by one of
:data:`MASK_SUFFIXES` (``A01_f1_cp_masks.png`` from cellpose, ``A01_f1_masks.tif``, ``A01_f1_labels.tif``,
...). Images and label images may share one folder (cellpose's layout: ``--masks`` names the images'
folder; only the files named like label images are masks). A table input may instead name each row's
label image in a column: pass that column's name. A CellProfiler LoadData table names them in
``ObjectsFileName_<O>``/``ObjectsPathName_<O>``: pass ``<O>`` (``masks="Nuclei"``); its folders are resolved
as the images' are (:data:`dino_boc.io.loaddata.PATH_BASES`).

The inputs are streamed, not listed in memory: tables are read in chunks
(:func:`dino_boc.io.loaddata.iter_loaddata`, :func:`dino_boc.io.listing.iter_table_records`) into an
:class:`~dino_boc.pipeline.index.InputIndex` on disk, so a run's memory does not grow with its number of
inputs. Folders, prefixes and globs are listed a directory or a page at a time (:func:`dino_boc.io.iter_sources`).
What stays in memory: one table chunk or listing page, the label images of a ``masks`` folder (by stem),
and, with ``pattern``, the file names to group (:func:`dino_boc.io.iter_sources` says why).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from dino_boc.errors import ConfigError, InputError
from dino_boc.io import ImageRecord, iter_sources
from dino_boc.io.formats import format_of, is_zarr_dir
from dino_boc.io.fs import is_url
from dino_boc.io.labels import MASK_SUFFIXES, image_key, mask_key
from dino_boc.io.loaddata import is_loaddata, iter_loaddata, object_names
from dino_boc.io.options import ReadOptions
from dino_boc.io.sources import list_label_images
from dino_boc.io.tables import is_table, resolve, table_header, table_parent
from dino_boc.pipeline.index import InputIndex, inputs_digest

__all__ = ["MASK_SUFFIXES", "RunInputs", "gather_inputs", "image_key", "mask_key", "inputs_identity"]

logger = logging.getLogger(__name__)

MasksInput = str | os.PathLike | Sequence[str | os.PathLike] | None


@dataclasses.dataclass(frozen=True)
class RunInputs:
    """Records to embed, in input order, and their label images.

    Attributes:
        records: one per input (index = position): a list, or the run's on-disk
            :class:`~dino_boc.pipeline.index.InputIndex` (:func:`gather_inputs`).
        masks: per record the label image path, ``""`` when none matched (that input fails), or None
            outside single-cell mode.
    """

    records: Sequence[ImageRecord]
    masks: Sequence[str] | None

    def close(self) -> None:
        """Delete the on-disk index, if any (the end of a run)."""
        if isinstance(self.records, InputIndex):
            self.records.close()


def inputs_identity(inputs: RunInputs) -> dict[str, int | str]:
    """What a resume must find again: ``{"count": n, "sha256": ...}`` over the ordered inputs (each
    record's id, files, channel names and label image). Recorded in the provenance (``options.inputs``),
    so a resume whose inputs were added to, removed, reordered or swapped is refused."""
    if isinstance(inputs.records, InputIndex):
        return dict(inputs.records.identity)
    masks = inputs.masks
    return inputs_digest((r, None if masks is None else masks[i]) for i, r in enumerate(inputs.records))


def _read_options(read: ReadOptions) -> dict:
    return {"dims": read.dims, "z": read.z, "t": read.t, "level": read.level, "channel_width": read.channel_width,
            "position": read.position, "pattern": read.pattern}


_Entry = tuple[ImageRecord, "Path | str | None", "str | None"]  # record, its table's folder, its Objects label image


def _expand(item, read: ReadOptions, masks: MasksInput) -> Iterator[_Entry]:
    """The records of one input, streamed, each with its table's folder (where relative mask paths start; a
    URL for a table in an object store) and, for a LoadData table with ``ObjectsFileName_<masks>`` columns,
    its row's label image."""
    if isinstance(item, ImageRecord):
        yield item, None, None
        return
    table = is_table(item) and (is_url(item) or Path(item).is_file())
    if table:
        path = str(item) if is_url(item) else Path(item)
        header = table_header(path)
        if is_loaddata(header):
            by_name = read.channels is not None and all(
                isinstance(c, str) and not c.lstrip("-").isdigit() for c in read.channels
            )
            options = {k: v for k, v in _read_options(read).items() if k != "pattern"}
            options["position"] = 0 if read.position == "each" else read.position
            origin = table_parent(item)
            # by name: read only the chosen channels' files; Illum<Ch> columns are never channels
            rows = iter_loaddata(path, channels=list(read.channels) if by_name else None, illum=read.illum,
                                 path_root=read.path_root, objects=_objects(path, header, masks),
                                 record_options={**options, "max_pixels": read.max_pixels})
            for record, objects in rows:
                yield record, origin, objects
            return
    if read.illum:
        raise ConfigError(
            f"illum=True (--illum) divides by the illumination functions of a LoadData table "
            f"(FileName_Illum<Ch> columns); {str(item)!r} is not such a table"
        )
    origin = table_parent(item) if table else None
    for record in iter_sources(item, **_read_options(read)):  # listings paged, tables in chunks
        yield record, origin, None


def _split_glob(item) -> list:
    """A glob that matches tables (``"plates/*/load_data.csv"``) as its sorted matches, so that each table
    is read with the run's LoadData options (``illum``, ``path_root``, Objects masks); anything else as is.
    Matches that are neither tables nor supported images are skipped, as :func:`dino_boc.io.collect_sources` does."""
    if isinstance(item, ImageRecord) or is_url(item) or os.path.exists(item) or not any(c in str(item) for c in "*?["):
        return [item]
    matches = sorted(glob.glob(os.path.expanduser(str(item)), recursive=True))
    if not any(os.path.isfile(m) and is_table(m) for m in matches):
        return [item]
    return [m for m in matches
            if (os.path.isfile(m) and (is_table(m) or format_of(m) is not None)) or is_zarr_dir(Path(m))]


def _objects(table: Path | str, columns: list[str], masks: MasksInput) -> str | None:
    """The ``<O>`` when ``masks`` names objects ``<O>`` of the table's ``ObjectsFileName_<O>`` columns."""
    if not isinstance(masks, str) or os.path.exists(masks):
        return None
    name = masks.removeprefix("ObjectsFileName_")
    names = object_names(columns)
    if name not in names:
        if names and masks not in columns:
            raise ConfigError(
                f"masks={masks!r} is no folder or file, and {str(table)!r} has no ObjectsFileName_{name} column; "
                f"its objects: {names} (e.g. masks={names[0]!r})"
            )
        return None
    return name


def gather_inputs(source, read: ReadOptions, masks: MasksInput = None, *,
                  index_dir: str | os.PathLike | None = None) -> RunInputs:
    """Expand ``source`` (see :func:`dino_boc.io.collect_sources`) and match label images, streamed into an
    on-disk :class:`~dino_boc.pipeline.index.InputIndex` (call :meth:`RunInputs.close` when done).

    Args:
        source: a folder, file, glob, table, :class:`ImageRecord`, or a list of these.
        read: read options stored on every record (LoadData tables also use ``illum`` and ``path_root``).
        masks: None; a folder, glob or list of label images matched by stem; the objects ``<O>`` of a
            LoadData table's ``ObjectsFileName_<O>``/``ObjectsPathName_<O>`` columns (``"Nuclei"``); or
            the name of a column of the input table(s) holding each row's label image path.
        index_dir: where the index's private folder is made (default: the system's temp folder, ``$TMPDIR``).

    Raises:
        InputError: nothing to embed, or masks that match nothing at all.
        ConfigError: two label images with the same stem; ``illum`` on an input that is no LoadData table.
    """
    items = [source] if isinstance(source, (str, os.PathLike, ImageRecord)) else list(source)
    if not items:
        raise InputError("no inputs given; pass a folder, files, a glob or a table")
    items = [m for it in items for m in _split_glob(it)]
    rule = _MaskRule(masks, items)
    index = InputIndex.build(rule.entries(items, read), directory=index_dir)
    try:
        rule.check(len(index))
    except BaseException:
        index.close()
        raise
    return RunInputs(index, index.masks if masks is not None else None)


class _MaskRule:
    """How each record gets its label image: none, its LoadData row's Objects column, a column of its table,
    or a file of the ``masks`` folder with its stem. Records that are label images themselves are skipped
    (stem matching). Decided once per run, applied to the stream of records."""

    def __init__(self, masks: MasksInput, items: list) -> None:
        self.masks = masks
        self.column = isinstance(masks, str) and not os.path.exists(masks) and _names_a_column(masks, items)
        self.by_key: dict[str, set[str]] | None = None
        self.as_masks: set[str] = set()
        self.n_objects = self.n_plain = self.n_skipped = self.n_matched = 0
        self.first_key: str | None = None

    def _load_stems(self) -> None:
        self.by_key = {}
        mask_paths = list_label_images(self.masks)
        for p in mask_paths:
            for key in {image_key(p), mask_key(p)}:
                self.by_key.setdefault(key, set()).add(p)
        self.as_masks = {os.path.abspath(p) for p in mask_paths}

    def entries(self, items: list, read: ReadOptions) -> Iterator[tuple[ImageRecord, str | None]]:
        for item in items:
            for record, origin, objects in _expand(item, read, self.masks):
                if record.max_pixels != read.max_pixels:  # the run's pixel budget holds for every read
                    record = dataclasses.replace(record, max_pixels=read.max_pixels)
                mask = self._mask(record, origin, objects)
                if mask is not _SKIP:
                    yield record, mask

    def _mask(self, record: ImageRecord, origin, objects: str | None):
        if self.masks is None:
            return None
        if objects is not None:
            self.n_objects += 1
            self._mixed()
            return str(objects)
        self.n_plain += 1
        self._mixed()
        if self.column:
            value = record.metadata.get(self.masks)
            text = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()
            return resolve(text, origin or Path.cwd()) if text else ""
        if self.by_key is None:
            self._load_stems()
        if len(record.paths) == 1 and os.path.abspath(record.paths[0]) in self.as_masks:
            self.n_skipped += 1
            return _SKIP
        key = image_key(record.paths[0]) if record.paths[0] else ""
        self.first_key = key if self.first_key is None else self.first_key
        match = sorted(self.by_key.get(key, ()))
        if len(match) > 1:
            raise ConfigError(f"several label images match image {record.id!r}: {match}; keep one per image")
        self.n_matched += bool(match)
        return match[0] if match else ""

    def _mixed(self) -> None:
        if self.n_objects and self.n_plain:
            name = str(self.masks).removeprefix("ObjectsFileName_")
            raise InputError(
                f"masks={self.masks!r} names the objects of a LoadData table (ObjectsFileName_{name}) but some inputs "
                "are not rows of such a table; give those inputs apart"
            )

    def check(self, n_kept: int) -> None:
        """After the stream: errors that need the whole of it."""
        if self.masks is None or self.n_objects or self.column:
            if n_kept == 0 and self.n_skipped == 0:
                raise InputError("no inputs found; pass a folder, files, a glob or a table")
            return
        if self.n_skipped:
            logger.info("%d label images found among the inputs are not embedded themselves", self.n_skipped)
        if n_kept == 0:
            raise InputError("every input is one of the label images given with masks=; pass the images and masks apart")
        if not self.n_matched:
            key = self.first_key
            raise InputError(
                f"no label image in masks={self.masks!r} matches an input by file stem (e.g. input {key!r} "
                f"wants {key}.tif or {key}_masks.tif); check the names"
            )


_SKIP = object()


def _names_a_column(masks: str, items: list) -> bool:
    """Whether ``masks`` is a column of an input table (or a metadata key of an input record)."""
    for item in items:
        if isinstance(item, ImageRecord):
            if masks in item.metadata:
                return True
        elif is_table(item) and (is_url(item) or Path(item).is_file()) and masks in table_header(item):
            return True
    return False
