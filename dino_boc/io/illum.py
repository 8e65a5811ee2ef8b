"""Illumination correction as CellProfiler's CorrectIlluminationApply applies it ("Divide").

CellProfiler's CorrectIlluminationCalculate saves one illumination function per channel and plate as a
``.npy`` file (a float ``(H, W)`` array); LoadData CSVs name it in ``FileName_Illum<Ch>`` /
``PathName_Illum<Ch>`` next to the ``FileName_Orig<Ch>`` image it corrects (pe2loaddata's
``append_illum_cols.py``, the Cell Painting Gallery). CorrectIlluminationApply with its defaults divides
the image by the function and sets values below 0 to 0 and above 1 to 1, in CellProfiler's intensity
scale where 1 is the file's largest value (65535 for 16-bit). Here the image keeps its own units: the
quotient is clipped to ``[0, dtype max]`` for integer files, which is the same rule.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from dino_boc.errors import ImageReadError, InputError
from dino_boc.io.formats import reading

__all__ = ["ILLUM_PREFIX", "ORIG_PREFIX", "ILLUMINATION", "illum_name", "read_illum", "apply_illum"]

_CACHED = 8  # illumination functions kept in memory per process (a plate's channels)
ILLUM_PREFIX = "Illum"
ORIG_PREFIX = "Orig"
# what provenance records when illumination correction was applied
ILLUMINATION = {
    "method": "CellProfiler CorrectIlluminationApply: Divide",
    "functions": "LoadData FileName_Illum<Ch>/PathName_Illum<Ch> (.npy) of channel Orig<Ch> or <Ch>",
    "clip": "[0, dtype max] (CellProfiler's truncate low/high at 0 and 1)",
}


def illum_name(channel: str) -> str:
    """The LoadData name of a channel's illumination function: ``OrigDNA`` -> ``IllumDNA``, ``DNA`` -> ``IllumDNA``."""
    base = channel[len(ORIG_PREFIX):] if channel.startswith(ORIG_PREFIX) else channel
    return ILLUM_PREFIX + base


def read_illum(path: str) -> np.ndarray:
    """Read one illumination function (``.npy``, a 2-D float array, no pickles).

    A plate's functions serve every field of the plate, so the last few read are kept in memory (per
    process, keyed by path, size and modification time). The array returned is read-only.

    Returns:
        float64 ``(H, W)``, every value finite and > 0.

    Raises:
        ImageReadError: missing or unreadable file.
        InputError: not a finite, positive 2-D array.
    """
    if not os.path.isfile(path):
        raise ImageReadError(
            f"no such illumination function: {path!r}; check the row's FileName_/PathName_Illum columns"
        )
    stat = os.stat(path)
    return _read_illum(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=_CACHED)
def _read_illum(path: str, size: int, mtime_ns: int) -> np.ndarray:
    with reading(path, "numpy"):
        function = np.load(path, allow_pickle=False)
    function = np.squeeze(np.asarray(function))
    if function.ndim != 2 or not np.issubdtype(function.dtype, np.number):
        raise InputError(
            f"illumination function {path!r} is a {function.dtype} array of shape {function.shape}; expected a 2-D "
            "float (H, W) array as CellProfiler's CorrectIlluminationCalculate saves"
        )
    function = function.astype(np.float64)
    if not np.isfinite(function).all() or (function <= 0).any():
        raise InputError(
            f"illumination function {path!r} holds values <= 0 or NaN/inf (min {np.nanmin(function):g}); dividing by "
            "it would give wrong numbers — recompute it, or run without illumination correction"
        )
    function.flags.writeable = False
    return function


def apply_illum(plane: np.ndarray, function: np.ndarray, *, source: str = "image") -> np.ndarray:
    """Divide a ``(H, W)`` plane by its illumination function, clipped as CellProfiler does.

    Args:
        plane: ``(H, W)`` image plane, any numeric dtype.
        function: ``(H, W)`` illumination function from :func:`read_illum`.
        source: names the image in messages.

    Returns:
        float32 ``(H, W)``: ``plane / function`` clipped to ``[0, dtype max]`` (integer planes) or
        to ``>= 0`` (float planes).

    Raises:
        InputError: the shapes differ.
    """
    if plane.shape != function.shape:
        raise InputError(
            f"{source}: image plane {plane.shape} and its illumination function {function.shape} differ in size; "
            "the function must come from images of the same size (check the Illum columns of this row)"
        )
    out = plane.astype(np.float64) / function
    high = np.iinfo(plane.dtype).max if np.issubdtype(plane.dtype, np.integer) else None
    return np.clip(out, 0, high).astype(np.float32)
