"""Column names of dino_boc output tables (spec: ``docs/outputs.md``, format_version 1).

One row per image (or per cell in single-cell mode). Metadata columns come first and carry the
``Metadata_`` prefix that pycytominer uses to tell metadata from features; the feature columns follow,
named by the model's ``feature_names`` (opaque strings).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

from dino_boc.errors import InputError
from dino_boc.outputs.guard import display_path

__all__ = [
    "METADATA_PREFIX",
    "INDEX",
    "PATH",
    "CHANNELS",
    "CELL_LABEL",
    "CENTROID_Y",
    "CENTROID_X",
    "RESERVED",
    "CHANNEL_SEPARATOR",
    "metadata_name",
    "join_channels",
    "metadata_row",
    "order_metadata_columns",
    "check_feature_names",
]

METADATA_PREFIX = "Metadata_"
INDEX = "Metadata_index"  # global input index, added by ShardWriter
PATH = "Metadata_path"
CHANNELS = "Metadata_channels"
CELL_LABEL = "Metadata_cell_label"
CENTROID_Y = "Metadata_centroid_y"
CENTROID_X = "Metadata_centroid_x"
LEADING: tuple[str, ...] = (INDEX, PATH, CHANNELS)
TRAILING: tuple[str, ...] = (CELL_LABEL, CENTROID_Y, CENTROID_X)
RESERVED: tuple[str, ...] = LEADING + TRAILING
CHANNEL_SEPARATOR = ";"


def metadata_name(column: str) -> str:
    """Output name of an input metadata column: ``Metadata_`` prefixed unless it already is.

    CellProfiler LoadData tables already name their metadata ``Metadata_Plate``; those stay as they are.
    """
    column = str(column)
    return column if column.startswith(METADATA_PREFIX) else METADATA_PREFIX + column


def join_channels(channel_names: Sequence[str]) -> str:
    """Channel names in image order joined with ``;`` (the ``Metadata_channels`` value).

    Raises:
        InputError: a channel name contains ``;`` and could not be split back.
    """
    names = [str(c) for c in channel_names]
    bad = [c for c in names if CHANNEL_SEPARATOR in c]
    if bad:
        raise InputError(
            f"channel names {bad} contain {CHANNEL_SEPARATOR!r}, which separates names in "
            f"{CHANNELS}; rename those channels"
        )
    return CHANNEL_SEPARATOR.join(names)


def metadata_row(
    path: str | PurePath,
    channel_names: Sequence[str],
    extra: Mapping[str, Any] | None = None,
    *,
    cell_label: int | None = None,
    centroid: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The metadata of one output row, named as the spec says.

    Args:
        path: the input file (or a description of the input, e.g. the first channel file of a
            LoadData row).
        channel_names: channel names in the order the image has them.
        extra: input metadata (other columns of a LoadData CSV or input table); names are prefixed
            with ``Metadata_`` unless they already carry it.
        cell_label: label of the object in single-cell mode.
        centroid: ``(y, x)`` centroid of the object in pixels of the full field of view.

    Returns:
        dict ``{Metadata_path, Metadata_channels, Metadata_<extra>..., Metadata_cell_label,
        Metadata_centroid_y, Metadata_centroid_x}`` (the last three only in single-cell mode).

    Raises:
        InputError: an input metadata column would take a reserved name (``Metadata_path`` ...).
    """
    row: dict[str, Any] = {PATH: display_path(path), CHANNELS: join_channels(channel_names)}
    for key, value in (extra or {}).items():
        name = metadata_name(key)
        if name in RESERVED:
            raise InputError(
                f"input metadata column {key!r} would be written as {name!r}, a name dino_boc sets "
                f"itself; rename that column in the input table"
            )
        row[name] = value
    if cell_label is not None:
        row[CELL_LABEL] = int(cell_label)
    if centroid is not None:
        row[CENTROID_Y], row[CENTROID_X] = float(centroid[0]), float(centroid[1])
    return row


def order_metadata_columns(first_seen: Mapping[str, tuple]) -> list[str]:
    """Final order of the metadata columns.

    ``Metadata_index, Metadata_path, Metadata_channels`` first, then the input metadata in the order a
    reader of the rows in input order meets them, then ``Metadata_cell_label, Metadata_centroid_y,
    Metadata_centroid_x``.

    Args:
        first_seen: column name -> sortable key of its first appearance
            ``(input index, row of that input, position in the row)``.
    """
    lead = [c for c in LEADING if c in first_seen]
    trail = [c for c in TRAILING if c in first_seen]
    middle = sorted((c for c in first_seen if c not in RESERVED), key=lambda c: (tuple(first_seen[c]), c))
    return lead + middle + trail


def check_feature_names(names: Iterable[Any], width: int) -> list[str]:
    """Feature column names as strings, checked against the feature width F.

    Raises:
        InputError: wrong count, duplicates, or a name that looks like metadata.
    """
    out = [str(n) for n in names]
    if len(out) != width:
        raise InputError(f"got {len(out)} feature names for features of width F={width}; expected one per column")
    if len(set(out)) != len(out):
        dup = sorted({n for n in out if out.count(n) > 1})[:5]
        raise InputError(f"feature names must be unique; repeated: {dup}")
    meta = [n for n in out if n.startswith(METADATA_PREFIX)]
    if meta:
        raise InputError(f"feature names {meta[:5]} start with {METADATA_PREFIX!r}, which marks metadata columns")
    return out


def plain_value(value: Any) -> Any:
    """A metadata value as None, bool, int, float or str (numpy scalars unwrapped, paths as str)."""
    if isinstance(value, str):  # a file name with undecodable bytes is stored escaped (bad\\xff.tif)
        return value if value.isascii() else display_path(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():  # numpy scalar
        return plain_value(item())
    return str(value)
