"""The inputs of a run: sources -> records, and the label image (mask) of each record in single-cell mode.

Label images are matched to images by file stem. An image ``plate1/A01_f1.ome.tif`` takes the label image
whose name, without its image suffix, is ``A01_f1`` or ``A01_f1`` followed by one of
:data:`MASK_SUFFIXES` (``A01_f1_cp_masks.png`` from cellpose, ``A01_f1_masks.tif``, ``A01_f1_labels.tif``,
...). Images and label images may share one folder (cellpose's layout: ``--masks`` names the images'
folder; only the files named like label images are masks). A table input may instead name each row's
label image in a column: pass that column's name. A CellProfiler LoadData table names them in
``ObjectsFileName_<O>``/``ObjectsPathName_<O>``: pass ``<O>`` (``masks="Nuclei"``); its folders are resolved
as the images' are (:data:`dino_boc.io.loaddata.PATH_BASES`).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from dino_boc.errors import ConfigError, InputError
from dino_boc.io import ImageRecord, collect_sources, read_loaddata
from dino_boc.io.formats import format_of, is_zarr_dir
from dino_boc.io.fs import is_url
from dino_boc.io.labels import MASK_SUFFIXES, image_key, mask_key
from dino_boc.io.loaddata import is_loaddata, loaddata_objects, object_names
from dino_boc.io.sources import list_label_images
from dino_boc.io.tables import is_table, read_table, resolve, table_parent
from dino_boc.io.options import ReadOptions

__all__ = ["MASK_SUFFIXES", "RunInputs", "gather_inputs", "image_key", "mask_key", "inputs_identity"]

logger = logging.getLogger(__name__)

MasksInput = str | os.PathLike | Sequence[str | os.PathLike] | None


@dataclasses.dataclass(frozen=True)
class RunInputs:
    """Records to embed, in input order, and their label images.

    Attributes:
        records: one per input (index = position).
        masks: per record the label image path, ``""`` when none matched (that input fails), or None
            outside single-cell mode.
    """

    records: list[ImageRecord]
    masks: list[str] | None


def inputs_identity(inputs: RunInputs) -> dict[str, int | str]:
    """What a resume must find again: ``{"count": n, "sha256": ...}`` over the ordered inputs (each
    record's id, files, channel names and label image). Recorded in the provenance (``options.inputs``),
    so a resume whose inputs were added to, removed, reordered or swapped is refused."""
    digest = hashlib.sha256()
    for i, r in enumerate(inputs.records):
        mask = "" if inputs.masks is None else inputs.masks[i]
        entry = [r.id, list(r.paths), None if r.channel_names is None else list(r.channel_names), mask]
        digest.update(os.fsencode(json.dumps(entry)) + b"\n")  # json escapes undecodable bytes (\udcff)
    return {"count": len(inputs.records), "sha256": digest.hexdigest()}


def _read_options(read: ReadOptions) -> dict:
    return {"dims": read.dims, "z": read.z, "t": read.t, "level": read.level, "channel_width": read.channel_width,
            "position": read.position, "pattern": read.pattern}


def _expand(item, read: ReadOptions, masks: MasksInput
            ) -> tuple[list[ImageRecord], Path | str | None, list[str] | None]:
    """Records of one input, for a table its folder (where relative mask paths start; a URL for a table in
    an object store), and, for a LoadData table with ``ObjectsFileName_<masks>`` columns, each row's label
    image."""
    if isinstance(item, ImageRecord):
        return [item], None, None
    path = str(item) if is_url(item) else Path(item)
    table = is_table(item) and (is_url(item) or Path(item).is_file())
    if table:
        columns = list(read_table(path).columns)
        if is_loaddata(columns):
            by_name = read.channels is not None and all(
                isinstance(c, str) and not c.lstrip("-").isdigit() for c in read.channels
            )
            # by name: read only the chosen channels' files; Illum<Ch> columns are never channels
            records = read_loaddata(path, channels=list(read.channels) if by_name else None, illum=read.illum,
                                    path_root=read.path_root)
            objects = _objects(path, columns, masks, read)
            options = {k: v for k, v in _read_options(read).items() if k != "pattern"}
            options["position"] = 0 if read.position == "each" else read.position
            return [dataclasses.replace(r, **options) for r in records], table_parent(item), objects
    if read.illum:
        raise ConfigError(
            f"illum=True (--illum) divides by the illumination functions of a LoadData table "
            f"(FileName_Illum<Ch> columns); {str(item)!r} is not such a table"
        )
    origin = table_parent(item) if table else None
    return collect_sources(item, **_read_options(read)), origin, None


def _split_glob(item) -> list:
    """A glob that matches tables (``"plates/*/load_data.csv"``) as its sorted matches, so that each table
    is read with the run's LoadData options (``illum``, ``path_root``, Objects masks); anything else as is.
    Matches that are neither tables nor supported images are skipped, as :func:`collect_sources` does."""
    if isinstance(item, ImageRecord) or is_url(item) or os.path.exists(item) or not any(c in str(item) for c in "*?["):
        return [item]
    matches = sorted(glob.glob(os.path.expanduser(str(item)), recursive=True))
    if not any(os.path.isfile(m) and is_table(m) for m in matches):
        return [item]
    return [m for m in matches
            if (os.path.isfile(m) and (is_table(m) or format_of(m) is not None)) or is_zarr_dir(Path(m))]


def _objects(table: Path | str, columns: list[str], masks: MasksInput, read: ReadOptions) -> list[str] | None:
    """Per row the ``ObjectsFileName_<O>`` label image when ``masks`` names objects ``<O>`` of the table."""
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
    return loaddata_objects(table, name, path_root=read.path_root)


def gather_inputs(source, read: ReadOptions, masks: MasksInput = None) -> RunInputs:
    """Expand ``source`` (see :func:`dino_boc.io.collect_sources`) and match label images.

    Args:
        source: a folder, file, glob, table, :class:`ImageRecord`, or a list of these.
        read: read options stored on every record (LoadData tables also use ``illum`` and ``path_root``).
        masks: None; a folder, glob or list of label images matched by stem; the objects ``<O>`` of a
            LoadData table's ``ObjectsFileName_<O>``/``ObjectsPathName_<O>`` columns (``"Nuclei"``); or
            the name of a column of the input table(s) holding each row's label image path.

    Raises:
        InputError: nothing to embed, or masks that match nothing at all.
        ConfigError: two label images with the same stem; ``illum`` on an input that is no LoadData table.
    """
    items = [source] if isinstance(source, (str, os.PathLike, ImageRecord)) else list(source)
    if not items:
        raise InputError("no inputs given; pass a folder, files, a glob or a table")
    records: list[ImageRecord] = []
    origins: list[Path | None] = []
    objects: list[str | None] = []
    for item in [m for it in items for m in _split_glob(it)]:
        found, origin, labels = _expand(item, read, masks)
        records += found
        origins += [origin] * len(found)
        objects += labels if labels is not None else [None] * len(found)
    records = collect_sources(records)  # unique ids across inputs
    if any(r.max_pixels != read.max_pixels for r in records):  # the run's pixel budget holds for every read
        records = [dataclasses.replace(r, max_pixels=read.max_pixels) for r in records]
    if masks is None:
        return RunInputs(records, None)
    if any(o is not None for o in objects):
        if not all(o is not None for o in objects):
            name = masks.removeprefix("ObjectsFileName_")
            raise InputError(
                f"masks={masks!r} names the objects of a LoadData table (ObjectsFileName_{name}) but some inputs are "
                "not rows of such a table; give those inputs apart"
            )
        return RunInputs(records, [str(o) for o in objects])
    if isinstance(masks, str) and _is_column(masks, records):
        return RunInputs(records, _masks_from_column(masks, records, origins))
    return _match_by_stem(records, masks)


def _is_column(masks: str, records: list[ImageRecord]) -> bool:
    return not os.path.exists(masks) and any(masks in r.metadata for r in records)


def _masks_from_column(column: str, records: list[ImageRecord], origins: list[Path | None]) -> list[str]:
    out = []
    for record, origin in zip(records, origins):
        value = record.metadata.get(column)
        text = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()
        out.append(resolve(text, origin or Path.cwd()) if text else "")
    return out


def _match_by_stem(records: list[ImageRecord], masks) -> RunInputs:
    mask_paths = list_label_images(masks)
    by_key: dict[str, set[str]] = {}
    for p in mask_paths:
        for key in {image_key(p), mask_key(p)}:
            by_key.setdefault(key, set()).add(p)
    as_masks = {os.path.abspath(p) for p in mask_paths}
    kept = [r for r in records if not (len(r.paths) == 1 and os.path.abspath(r.paths[0]) in as_masks)]
    if len(kept) < len(records):
        logger.info("%d label images found among the inputs are not embedded themselves", len(records) - len(kept))
    if not kept:
        raise InputError("every input is one of the label images given with masks=; pass the images and masks apart")
    out = []
    for r in kept:
        key = image_key(r.paths[0]) if r.paths[0] else ""
        match = sorted(by_key.get(key, ()))
        if len(match) > 1:
            raise ConfigError(f"several label images match image {r.id!r}: {match}; keep one per image")
        out.append(match[0] if match else "")
    if not any(out):
        raise InputError(
            f"no label image in masks={masks!r} matches an input by file stem (e.g. input {image_key(kept[0].paths[0])!r} "
            f"wants {image_key(kept[0].paths[0])}.tif or {image_key(kept[0].paths[0])}_masks.tif); check the names"
        )
    return RunInputs(kept, out)
