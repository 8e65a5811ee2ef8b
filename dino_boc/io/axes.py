"""Axis handling shared by every reader: an N-d array plus an axes string -> (K, H, W).

Axes letters (as tifffile, OME and bioio write them):

- ``Y``, ``X``: the image plane (required);
- ``C``: channels; ``S``: samples of an RGB(A) pixel, treated as channels;
- ``Z``: a z-stack, reduced by ``z`` ("max" projection by default, the paper's WTC handling; "mean";
  or an int slice);
- ``T``: time, one point picked by ``t``;
- ``R``/``P``: stage positions (tifffile's ``R`` in Micro-Manager MMStack and NDTiff files, ``P`` as
  nd2 and bioio write it), one position picked by ``position`` (or one row per position, see
  :func:`dino_boc.io.collect_sources`); ``S`` stays RGB samples, as in tifffile;
- anything else (tifffile's ``Q``/``I`` for "unknown") is dropped when its length is 1 and is an error
  otherwise, because the reader cannot know whether it holds channels or z-planes: pass ``dims=``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, Union

import numpy as np

from dino_boc.errors import InputError

__all__ = [
    "ZReduction",
    "PositionChoice",
    "KNOWN_AXES",
    "POSITION_AXES",
    "parse_dims",
    "check_z",
    "check_t",
    "check_position",
    "to_kyx",
    "match_names",
]

logger = logging.getLogger(__name__)

ZReduction = Union[Literal["max", "mean"], int]
DEFAULT_Z: ZReduction = "max"
"""The default Z-stack reduction: a maximum projection (the paper's handling of WTC z-stacks)."""
# one stage position by index, or "each": one record (one output row) per position
PositionChoice = Union[int, Literal["each"]]
POSITION_AXES = "RP"
KNOWN_AXES = "TCZYXS" + POSITION_AXES


def parse_dims(dims: str, shape: Sequence[int]) -> str:
    """Validate a user ``dims=`` string against an array shape and return it upper-cased.

    Args:
        dims: one letter per axis from ``TCZYXS``, e.g. ``"CYX"``, ``"ZYX"``, ``"YXC"``, ``"TCZYX"``.
        shape: the shape of the array as stored in the file.

    Returns:
        The axes string, upper case.

    Raises:
        InputError: wrong length, unknown or repeated letters, or no ``Y``/``X``.
    """
    if not isinstance(dims, str):
        raise InputError(f"dims must be a string such as 'CYX', got {type(dims).__name__} {dims!r}")
    axes = dims.strip().upper()
    if len(axes) != len(shape):
        raise InputError(
            f"dims={dims!r} has {len(axes)} letters but the image has {len(shape)} axes (shape {tuple(shape)}); "
            f"give one letter per axis from {KNOWN_AXES!r}, e.g. dims='{_example_dims(len(shape))}'"
        )
    bad = sorted(set(axes) - set(KNOWN_AXES))
    if bad:
        raise InputError(f"dims={dims!r} has unknown letters {bad}; use only {', '.join(KNOWN_AXES)}")
    repeated = sorted({a for a in axes if axes.count(a) > 1})
    if repeated:
        raise InputError(f"dims={dims!r} repeats {repeated}; each axis letter may appear once")
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"dims={dims!r} lacks Y or X; an image needs both (e.g. dims='CYX')")
    return axes


def _example_dims(ndim: int) -> str:
    return {2: "YX", 3: "CYX", 4: "ZCYX", 5: "TCZYX"}.get(ndim, "TCZYX")


def check_z(z: ZReduction) -> None:
    """Raise :class:`InputError` unless ``z`` is ``"max"``, ``"mean"`` or an int."""
    if isinstance(z, bool) or not (z in ("max", "mean") or isinstance(z, (int, np.integer))):
        raise InputError(f"z={z!r} is not a Z reduction; use 'max' (default), 'mean' or an int slice index")


def check_t(t: int) -> None:
    """Raise :class:`InputError` unless ``t`` is an int."""
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
        raise InputError(f"t={t!r} is not a time index; pass an int (0 = first time point)")


def check_position(position: PositionChoice, *, allow_each: bool = True) -> None:
    """Raise :class:`InputError` unless ``position`` is an int (or ``"each"`` where one row per position is allowed)."""
    if allow_each and position == "each":
        return
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
        each = " or 'each' (one row per position)" if allow_each else ""
        raise InputError(f"position={position!r} is not a stage position; pass an int (0 = first){each}")


def _index(size: int, i: int, what: str, axes: str) -> int:
    if not -size <= i < size:
        raise InputError(f"{what}={i} is out of range: the image's axes {axes!r} have {size} along that axis")
    return int(i) % size


def to_kyx(
    array: np.ndarray,
    axes: str,
    *,
    z: ZReduction = DEFAULT_Z,
    t: int = 0,
    position: int = 0,
    source: str = "image",
) -> np.ndarray:
    """Reduce an array with named axes to (K, H, W).

    Args:
        array: the pixels as read, any dtype.
        axes: one letter per axis of ``array`` (see the module doc).
        z: Z reduction: ``"max"`` keeps the dtype, ``"mean"`` gives float32 (float64 for float64 input),
            an int picks one plane.
        t: the time point to keep when there is a T axis.
        position: the stage position to keep when there is an ``R``/``P`` axis.
        source: what to call the image in messages (usually its path).

    Returns:
        (K, H, W) array, C-contiguous, native byte order.

    Raises:
        InputError: an unknown axis longer than 1, no Y/X, an index out of range, zero channels or pixels.
    """
    check_z(z)
    check_t(t)
    check_position(position, allow_each=False)
    axes = axes.upper()
    if len(axes) != array.ndim:
        raise InputError(f"{source}: axes {axes!r} do not fit an array of shape {array.shape}; pass dims=")
    hint = f"pass dims= with one letter per axis, e.g. dims='{_example_dims(array.ndim)}' or the 'Z'/'T' variant"
    for i in reversed(range(len(axes))):  # unknown axes: drop if length 1
        if axes[i] not in KNOWN_AXES:
            if array.shape[i] != 1:
                as_c, as_z = (axes[:i] + a + axes[i + 1 :] for a in "CZ")
                raise InputError(
                    f"{source}: the file's metadata does not say what axis {i} (length {array.shape[i]}) of "
                    f"shape {array.shape} is (axes {axes!r}); pass dims={as_c!r} if it holds channels or "
                    f"dims={as_z!r} if it is a z-stack"
                )
            array, axes = array.take(0, axis=i), axes[:i] + axes[i + 1 :]
    for letter in axes:
        if axes.count(letter) > 1:
            raise InputError(f"{source}: axes {axes!r} repeat {letter!r}; {hint}")
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{source}: axes {axes!r} lack Y or X; {hint}")
    if "T" in axes:
        i = axes.index("T")
        array, axes = array.take(_index(array.shape[i], t, "t", axes), axis=i), axes.replace("T", "")
    present = [a for a in POSITION_AXES if a in axes]
    if len(present) > 1:
        raise InputError(f"{source}: axes {axes!r} have two position axes {present}; {hint}")
    if present:
        i = axes.index(present[0])
        array = array.take(_index(array.shape[i], position, "position", axes), axis=i)
        axes = axes.replace(present[0], "")
    if "Z" in axes:
        array, axes = _reduce_z(array, axes, z), axes.replace("Z", "")
    array, axes = _merge_samples(array, axes, source)
    if "C" not in axes:
        array, axes = array[np.newaxis], "C" + axes
    array = np.transpose(array, [axes.index(a) for a in "CYX"])
    if array.shape[0] == 0:
        raise InputError(
            f"{source}: image has 0 channels (shape {array.shape}); expected (K, H, W) with K >= 1 — "
            "pass dims='CYX' if the file's axes are wrong"
        )
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise InputError(f"{source}: image has no pixels (H, W = {array.shape[1:]}); expected H, W >= 1")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


def _reduce_z(array: np.ndarray, axes: str, z: ZReduction) -> np.ndarray:
    i = axes.index("Z")
    if z == "max":
        return array.max(axis=i)
    if z == "mean":
        dtype = np.float64 if array.dtype == np.float64 else np.float32
        return array.mean(axis=i, dtype=np.float64).astype(dtype)
    return array.take(_index(array.shape[i], int(z), "z", axes), axis=i)


def _merge_samples(array: np.ndarray, axes: str, source: str) -> tuple[np.ndarray, str]:
    """``S`` (RGB samples) becomes ``C``; with both, one of them must have length 1."""
    if "S" not in axes:
        return array, axes
    if "C" not in axes:
        return array, axes.replace("S", "C")
    s, c = axes.index("S"), axes.index("C")
    if array.shape[s] == 1:
        return array.take(0, axis=s), axes.replace("S", "")
    if array.shape[c] == 1:
        return array.take(0, axis=c), axes.replace("C", "").replace("S", "C")
    raise InputError(
        f"{source}: both channels (C={array.shape[c]}) and RGB samples (S={array.shape[s]}) in axes {axes!r}; "
        "dino_boc reads one channel axis — export the channels as separate planes"
    )


def match_names(names: Sequence[str] | None, k: int, source: str) -> list[str] | None:
    """Channel names from metadata if there is one per channel, else ``None`` (logged)."""
    if not names:
        return None
    names = [str(n) for n in names]
    if len(names) != k:
        logger.debug("%s: %d channel names in metadata for %d channels; names dropped", source, len(names), k)
        return None
    return names
