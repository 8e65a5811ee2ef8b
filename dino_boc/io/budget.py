"""Memory bounded whatever a file claims: a pixel budget checked from the header before decoding.

A file's header says how many values decoding will produce (shape x samples); a few KB of deflate
tiles can declare 100352 x 100352 pixels. Before any pixel is decoded, :func:`check_budget` compares
that count with ``max_pixels`` (:data:`DEFAULT_MAX_PIXELS`, ``--max-pixels``) and raises
:class:`~dino_boc.errors.ResourceLimitError`; in a dataset run that is one errors-file row.

Z-stacks and time series of TIFF files are read plane by plane (:func:`read_tiff_planes`): only the
chosen time point is decoded and Z is reduced as the planes come, so memory holds the result and one
plane, not the whole stack. Headers of PNG, JPEG and ``.npy`` are read without decoding
(:func:`header_shape`).
"""

from __future__ import annotations

import logging
import math
import os
import struct
from collections.abc import Sequence

import numpy as np

from dino_boc.errors import ImageReadError, InputError, ResourceLimitError
from dino_boc.io.axes import ZReduction

__all__ = ["DEFAULT_MAX_PIXELS", "check_max_pixels", "check_budget", "header_shape", "read_tiff_planes", "sniff"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 2**29
"""Values (pixels x channels x planes) one read may decode at once: 536,870,912, e.g. a 5-channel
10000 x 10000 field or a 23170 x 23170 plane (1 GiB as uint16)."""

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "pixels"), (b"\xff\xd8\xff", "pixels"), (b"\x93NUMPY", "numpy"),
)


def check_max_pixels(max_pixels: int | None) -> None:
    """``max_pixels`` must be a positive int or None (no limit)."""
    if max_pixels is None:
        return
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise InputError(f"max_pixels={max_pixels!r} must be a positive integer (values decoded at once) or None")


def sniff(path: str | os.PathLike) -> str | None:
    """The format the first bytes of a regular file announce (``"tiff"``, ``"pixels"``, ``"numpy"``), or None.

    Raises:
        ImageReadError: the file cannot be opened (permission denied is said as such, never "corrupt").
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except PermissionError as exc:
        raise ImageReadError(f"cannot open {str(path)!r}: permission denied; the file is not readable by this "
                             "user (check its permissions), it is not known to be corrupt") from exc
    except OSError as exc:
        raise ImageReadError(f"cannot open {str(path)!r}: {exc.strerror or exc}") from exc
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def check_budget(shape: Sequence[int], dtype, max_pixels: int | None, *, source: str, what: str = "decoding") -> None:
    """Raise :class:`ResourceLimitError` when ``prod(shape)`` values exceed ``max_pixels``.

    Args:
        shape: what the header declares (any axes).
        dtype: the values' dtype, for the size in the message.
        max_pixels: the budget; None: no limit.
        source: the file, for the message.
        what: what would hold them ("decoding", "reducing Z plane by plane", ...).
    """
    if max_pixels is None:
        return
    n = math.prod(int(s) for s in shape)
    if n > max_pixels:
        size = _gb(n * np.dtype(dtype).itemsize)
        raise ResourceLimitError(
            f"{source}: its header declares shape {tuple(int(s) for s in shape)} of {np.dtype(dtype)}, {n:,} values "
            f"({size}) for {what}, over the pixel budget max_pixels={max_pixels:,}. If the image is real and the "
            "machine has the memory, raise --max-pixels (max_pixels=); else read a lower-resolution --level or a "
            "single --z/--t plane, or re-export the file"
        )


def _png_shape(head: bytes) -> tuple[tuple[int, ...], np.dtype] | None:
    if len(head) < 26 or head[12:16] != b"IHDR":
        return None  # broken: the decoder says how
    width, height = struct.unpack(">II", head[16:24])
    depth, colour = head[24], head[25]
    samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 4)
    return (height, width, samples), np.dtype(np.uint16 if depth == 16 else np.uint8)


def _jpeg_shape(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype] | None:
    with open(path, "rb") as f:
        f.read(2)
        while True:
            marker = f.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return None  # broken: the decoder says how
            code = marker[1]
            if code == 0xFF:  # fill byte
                f.seek(-1, os.SEEK_CUR)
                continue
            if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:
                continue
            length = struct.unpack(">H", f.read(2))[0]
            if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
                precision, height, width, comps = struct.unpack(">BHHB", f.read(6))
                return (height, width, comps), np.dtype(np.uint16 if precision > 8 else np.uint8)
            f.seek(length - 2, os.SEEK_CUR)


def header_shape(path: str | os.PathLike, fmt: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """(declared shape, dtype) of a PNG, JPEG or ``.npy`` file from its header, without decoding; None for
    other formats and for headers that cannot be parsed (the decoder then reports the damage).
    """
    if fmt == "numpy":
        fmt_ = np.lib.format
        try:
            with open(path, "rb") as f:
                version = fmt_.read_magic(f)
                read = fmt_.read_array_header_1_0 if version == (1, 0) else fmt_.read_array_header_2_0
                shape, _, dtype = read(f)
        except Exception:  # numpy's header parser raises ValueError/OSError/EOFError for broken files
            return None  # the reader reports it
        return tuple(shape), np.dtype(dtype)
    if fmt != "pixels":
        return None
    with open(path, "rb") as f:
        head = f.read(32)
    if head.startswith(b"\x89PNG"):
        return _png_shape(head)
    if head.startswith(b"\xff\xd8"):
        try:
            return _jpeg_shape(path)
        except struct.error:
            return None
    return None


def read_tiff_planes(level, axes: str, *, z: ZReduction, t: int, max_pixels: int | None, source: str):
    """Decode a tifffile series level within the budget: whole when it fits, else plane by plane.

    Args:
        level: a ``tifffile.TiffPageSeries`` (one resolution level).
        axes: its axes (from the file or ``dims=``), one letter per axis of ``level.shape``.
        z, t: the reduction of Z and the time point (applied here only when reading plane by plane).
        max_pixels: the budget; None: no limit (always whole).
        source: the file, for messages.

    Returns:
        (array, axes): the whole level with ``axes``; or, read plane by plane, the chosen time point with
        Z reduced (axes without ``T`` and ``Z``).

    Raises:
        ResourceLimitError: over the budget and not reducible plane by plane within it.
    """
    shape = tuple(int(s) for s in level.shape)
    if max_pixels is None or math.prod(shape) <= max_pixels:
        return level.asarray(), axes
    pages = list(level.pages)
    plane_shape = tuple(int(s) for s in level.keyframe.shape)
    n_lead = len(shape) - len(plane_shape)
    lead, lead_axes = shape[:n_lead], axes[:n_lead]
    planewise = (n_lead > 0 and shape[n_lead:] == plane_shape and len(pages) == math.prod(lead)
                 and ("Z" in lead_axes or "T" in lead_axes))
    if not planewise:
        check_budget(shape, level.dtype, max_pixels, source=source)
    out_lead = [s for s, a in zip(lead, lead_axes) if a not in "ZT"]
    check_budget((*out_lead, *plane_shape), level.dtype, max_pixels - math.prod(plane_shape), source=source,
                 what="the result of reducing Z/T plane by plane")
    return _reduce_planes(pages, lead, lead_axes, plane_shape, level.dtype, z=z, t=t, source=source), \
        "".join(a for a in lead_axes if a not in "ZT") + axes[n_lead:]


def _pick(size: int, i: int, what: str, axes: str) -> int:
    if not -size <= i < size:
        raise InputError(f"{what}={i} is out of range: the image's axes {axes!r} have {size} along that axis")
    return int(i) % size


def _reduce_planes(pages, lead, lead_axes, plane_shape, dtype, *, z, t, source):
    """Planes of the chosen T, Z reduced as they come (``"max"``/``"mean"`` as :func:`to_kyx` does)."""
    t_pos = lead_axes.find("T")
    z_pos = lead_axes.find("Z")
    t_keep = _pick(lead[t_pos], t, "t", lead_axes) if t_pos >= 0 else None
    z_keep = _pick(lead[z_pos], int(z), "z", lead_axes) if z_pos >= 0 and not isinstance(z, str) else None
    out_lead = tuple(s for s, a in zip(lead, lead_axes) if a not in "ZT")
    mean = z == "mean" and z_pos >= 0
    out_dtype = (np.float64 if np.dtype(dtype) == np.float64 else np.float32) if mean else dtype
    out = np.zeros(out_lead + plane_shape, dtype=np.float64 if mean else dtype)
    seen = np.zeros(out_lead, dtype=bool)
    for flat, idx in enumerate(np.ndindex(*lead)):
        if t_keep is not None and idx[t_pos] != t_keep:
            continue
        if z_keep is not None and idx[z_pos] != z_keep:
            continue
        page = pages[flat]
        if page is None:
            raise ImageReadError(f"cannot read {source!r}: plane {idx} ({lead_axes}) is missing from the file")
        plane = page.asarray()
        key = tuple(i for i, a in zip(idx, lead_axes) if a not in "ZT")
        if mean:
            out[key] += plane
        elif z == "max" and z_pos >= 0 and seen[key]:
            np.maximum(out[key], plane, out=out[key])
        else:
            out[key] = plane
        seen[key] = True
    if mean:
        out = (out / lead[z_pos]).astype(out_dtype)
    logger.debug("%s: read %d planes one at a time (over the pixel budget as a whole)", source, len(pages))
    return out
