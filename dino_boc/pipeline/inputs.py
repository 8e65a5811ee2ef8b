"""The inputs of a run: sources -> records, and the label image (mask) of each record in single-cell mode.

Label images are matched to images by file stem. An image ``plate1/A01_f1.ome.tif`` takes the label image
whose name, without its image suffix, is ``A01_f1`` or ``A01_f1`` followed by one of
:data:`MASK_SUFFIXES` (``A01_f1_cp_masks.png`` from cellpose, ``A01_f1_masks.tif``, ``A01_f1_labels.tif``,
...). A table input may instead name each row's label image in a column: pass that column's name.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from dino_boc.errors import ConfigError, InputError
from dino_boc.io import ImageRecord, collect_sources, read_loaddata
from dino_boc.io.formats import SUPPORTED_SUFFIXES
from dino_boc.io.loaddata import is_loaddata
from dino_boc.io.fs import is_url
from dino_boc.io.tables import is_table, read_table, resolve, table_parent
from dino_boc.pipeline.options import ReadOptions

__all__ = ["MASK_SUFFIXES", "RunInputs", "gather_inputs", "image_key", "mask_key"]

logger = logging.getLogger(__name__)

MASK_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label", "_seg", "_segmentation")
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


def image_key(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``a.ome.tif`` -> ``a``)."""
    name = Path(path).name
    low = name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def mask_key(path: str | os.PathLike) -> str:
    """:func:`image_key` without a trailing mask suffix (``a_cp_masks.png`` -> ``a``)."""
    key = image_key(path)
    for suffix in MASK_SUFFIXES:
        if key.lower().endswith(suffix):
            return key[: -len(suffix)]
    return key


def _read_options(read: ReadOptions) -> dict:
    return {"dims": read.dims, "z": read.z, "t": read.t, "level": read.level, "channel_width": read.channel_width}


def _expand(item, read: ReadOptions) -> tuple[list[ImageRecord], Path | str | None]:
    """Records of one input and, for a table, its folder (where relative mask paths start)."""
    if isinstance(item, ImageRecord):
        return [item], None
    if is_url(item) and not is_table(item):  # i17
        return collect_sources(item, **_read_options(read)), None
    path = Path(item)
    if (is_url(item) or path.is_file()) and is_table(item):  # i17: tables may be URLs
        by_name = read.channels is not None and all(isinstance(c, str) and not c.lstrip("-").isdigit() for c in read.channels)
        if by_name and is_loaddata(list(read_table(path).columns)):
            # read only the chosen channels' files (LoadData tables often list illumination functions too)
            records = read_loaddata(path, channels=list(read.channels))
            return [dataclasses.replace(r, **_read_options(read)) for r in records], table_parent(item)
        return collect_sources(item, **_read_options(read)), table_parent(item)
    return collect_sources(item, **_read_options(read)), None


def gather_inputs(source, read: ReadOptions, masks: MasksInput = None) -> RunInputs:
    """Expand ``source`` (see :func:`dino_boc.io.collect_sources`) and match label images.

    Args:
        source: a folder, file, glob, table, :class:`ImageRecord`, or a list of these.
        read: read options stored on every record.
        masks: None; a folder, glob or list of label images matched by stem; or the name of a column of
            the input table(s) holding each row's label image path.

    Raises:
        InputError: nothing to embed, or masks that match nothing at all.
        ConfigError: two label images with the same stem.
    """
    items = [source] if isinstance(source, (str, os.PathLike, ImageRecord)) else list(source)
    if not items:
        raise InputError("no inputs given; pass a folder, files, a glob or a table")
    records: list[ImageRecord] = []
    origins: list[Path | None] = []
    for item in items:
        found, origin = _expand(item, read)
        records += found
        origins += [origin] * len(found)
    records = collect_sources(records)  # unique ids across inputs
    if masks is None:
        return RunInputs(records, None)
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
    mask_paths = [r.paths[0] for r in collect_sources(masks, recursive=True)]
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
