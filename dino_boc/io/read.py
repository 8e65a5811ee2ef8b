"""``read_image``: one file (or OME-Zarr folder) -> (K, H, W) array + channel names, whatever the format."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from typing import Any

import numpy as np

from dino_boc.errors import ImageReadError, InputError
from dino_boc.io.axes import DEFAULT_Z, ZReduction, check_position, check_t, check_z
from dino_boc.io.budget import DEFAULT_MAX_PIXELS, check_budget, check_max_pixels, header_shape, sniff
from dino_boc.io.formats import SUPPORTED_SUFFIXES, format_of
from dino_boc.io.fs import is_url
from dino_boc.io.fs import storage_options as using_storage_options
from dino_boc.io.image import AlphaMode, read_npy, read_pixels
from dino_boc.io.ngff import read_ngff
from dino_boc.io.tape import unfold_tape
from dino_boc.io.tiff import read_tiff
from dino_boc.io.vendor import read_vendor

__all__ = ["read_image"]

logger = logging.getLogger(__name__)


def read_image(
    path: str | os.PathLike,
    *,
    dims: str | None = None,
    z: ZReduction = DEFAULT_Z,
    t: int = 0,
    level: int = 0,
    channel_width: int | None = None,
    alpha: AlphaMode = "auto",
    position: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, list[str] | None]:
    """Read a microscopy image as a (K, H, W) array in the file's dtype (no rescaling).

    The reader is picked by suffix: ``.tif/.tiff/.ome.tif/.ome.tiff`` (tifffile), ``.zarr/.ome.zarr``
    folders (OME-NGFF via zarr), ``.png/.jpg/.jpeg`` (imageio), ``.npy``, and vendor formats
    (``.czi .nd2 .lif ...``) via the optional bioio. When a file's first bytes say it is a TIFF, PNG,
    JPEG or ``.npy`` of another kind than its suffix (a TIFF named ``.png``), the bytes win. See
    :mod:`dino_boc.io.axes` for how axes map to K.

    Before decoding, the shape the header of a TIFF, PNG, JPEG or ``.npy`` declares is checked against
    ``max_pixels`` (a few KB can declare 10^10 pixels); TIFF Z-stacks over it are reduced plane by plane.

    Args:
        path: the image file, or an OME-Zarr image folder.
        dims: the stored array's axes when the metadata is missing or wrong, one letter per axis from
            ``TCZYXS``, e.g. ``"CYX"``, ``"ZYX"``, ``"YXC"``, ``"TCZYX"``.
        z: Z-stack reduction: ``"max"`` projection (default, as the paper does for WTC), ``"mean"``
            (float32 result), or an int plane index.
        t: time point to keep of a time series.
        level: resolution level of a pyramidal TIFF, OME-Zarr or vendor file (0 = full resolution).
        channel_width: read a CHAMMI tape (channels side by side in one 2-D image) by cutting it every
            ``channel_width`` pixels; CHAMMI's tiles are square, so this is the image height there.
        alpha: PNG only: the alpha plane is a stain (``"channel"``), transparency to drop
            (``"transparency"``) or, by default (``"auto"``), a channel unless fully opaque.
        position: stage position of a multi-position file (an ``R``/``P`` axis, e.g. Micro-Manager,
            or one OME-TIFF image per position); 0 = the first.
        max_pixels: most values decoded at once (:data:`~dino_boc.io.budget.DEFAULT_MAX_PIXELS`);
            None: no limit.
        storage_options: fsspec options for a ``s3://``/``gs://`` path (``{"anon": True}``, an
            ``endpoint_url``, credentials), on top of those of an enclosing
            :func:`dino_boc.io.fs.storage_options` block; None: those alone.

    Returns:
        (array (K, H, W), channel names from the file's metadata or ``None``).

    Raises:
        ImageReadError: missing, corrupt or truncated file, an unknown extension, a FIFO or device
            (not a regular file), a file this user may not read (said as such).
        ResourceLimitError: the header declares more values than ``max_pixels``.
        InputError: axes that cannot become (K, H, W) (the message suggests ``dims=``), zero channels,
            bad ``z``/``t``/``level``/``channel_width``/``position``.
        MissingExtraError: the format's optional reader, or a decoder the file needs, is not installed.
    """
    check_z(z)
    check_t(t)
    check_position(position, allow_each=False)
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise InputError(f"level={level!r}; expected an int >= 0 (0 = full resolution)")
    check_max_pixels(max_pixels)
    if storage_options:
        with using_storage_options(storage_options):
            return read_image(path, dims=dims, z=z, t=t, level=level, channel_width=channel_width, alpha=alpha,
                              position=position, max_pixels=max_pixels)
    # an object-store URL has no local inode to stat or sniff: its suffix names the reader, and the readers'
    # own limits (tifffile's series shape, Pillow's pixel limit) bound what it may decode
    fmt = format_of(path) if is_url(path) else _sniffed(path, format_of(path))
    if fmt is None:
        raise ImageReadError(
            f"{str(path)!r}: unknown image format; supported suffixes are {', '.join(SUPPORTED_SUFFIXES)} "
            "(vendor formats need the bioio extra)"
        )
    if fmt in ("pixels", "numpy") and not is_url(path):
        declared = header_shape(path, fmt)
        if declared is not None:
            check_budget(declared[0], declared[1], max_pixels, source=str(path))
    if fmt == "tiff":
        array, names = read_tiff(path, dims=dims, z=z, t=t, level=level, position=position, max_pixels=max_pixels)
    elif fmt == "zarr":
        if position:
            raise InputError(
                f"{str(path)!r}: position={position} but an OME-Zarr image is one position; the fields of an "
                "OME-Zarr plate are separate images (pass the plate folder to read them all)"
            )
        array, names = read_ngff(path, dims=dims, z=z, t=t, level=level, max_pixels=max_pixels)
    elif fmt == "vendor":
        array, names = read_vendor(path, dims=dims, z=z, t=t, level=level, position=position)
    else:
        if position:
            raise InputError(f"{str(path)!r}: position={position} but {fmt} files hold a single stage position")
        if level:
            raise InputError(f"{str(path)!r}: level={level} but {fmt} files have a single resolution")
        if fmt == "numpy":
            array, names = read_npy(path, dims=dims, z=z, t=t)
        else:
            array, names = read_pixels(path, dims=dims, alpha=alpha)
    if channel_width is not None:
        if array.shape[0] != 1:
            raise InputError(
                f"{str(path)!r}: channel_width={channel_width} unfolds a tape (one 2-D plane), but the image "
                f"already has {array.shape[0]} channels (shape {array.shape}); drop channel_width"
            )
        array, names = unfold_tape(array, channel_width), None
    return array, names


def _sniffed(path: str | os.PathLike, by_suffix: str | None) -> str | None:
    """The reader for ``path``: refuses what is not a regular file or folder (a FIFO would block the read
    forever), and trusts a regular file's magic bytes over its suffix."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return by_suffix  # the reader says "no such file"
    except OSError as exc:
        raise ImageReadError(f"cannot open {str(path)!r}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        return by_suffix
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket or device"
        raise ImageReadError(f"{str(path)!r} is {kind}, not a regular file; it is skipped (reading it could block "
                             "forever). Point the run at image files only")
    by_bytes = sniff(path)
    if by_bytes is not None and by_bytes != by_suffix and by_suffix in ("tiff", "pixels", "numpy", None):
        logger.info("%s: its first bytes say %s, not what its suffix says; reading it as %s", path, by_bytes, by_bytes)
        return by_bytes
    return by_suffix
