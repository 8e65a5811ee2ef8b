"""``read_image``: one file (or OME-Zarr folder) -> (K, H, W) array + channel names, whatever the format."""

from __future__ import annotations

import os

import numpy as np

from dino_boc.errors import ImageReadError, InputError
from dino_boc.io.axes import ZReduction, check_position, check_t, check_z
from dino_boc.io.formats import SUPPORTED_SUFFIXES, format_of
from dino_boc.io.image import AlphaMode, read_npy, read_pixels
from dino_boc.io.ngff import read_ngff
from dino_boc.io.tape import unfold_tape
from dino_boc.io.tiff import read_tiff
from dino_boc.io.vendor import read_vendor

__all__ = ["read_image"]


def read_image(
    path: str | os.PathLike,
    *,
    dims: str | None = None,
    z: ZReduction = "max",
    t: int = 0,
    level: int = 0,
    channel_width: int | None = None,
    alpha: AlphaMode = "auto",
    position: int = 0,
) -> tuple[np.ndarray, list[str] | None]:
    """Read a microscopy image as a (K, H, W) array in the file's dtype (no rescaling).

    The reader is picked by suffix: ``.tif/.tiff/.ome.tif/.ome.tiff`` (tifffile), ``.zarr/.ome.zarr``
    folders (OME-NGFF via zarr), ``.png/.jpg/.jpeg`` (imageio), ``.npy``, and vendor formats
    (``.czi .nd2 .lif ...``) via the optional bioio. See :mod:`dino_boc.io.axes` for how axes map to K.

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

    Returns:
        (array (K, H, W), channel names from the file's metadata or ``None``).

    Raises:
        ImageReadError: missing, corrupt or truncated file, or an unknown extension.
        InputError: axes that cannot become (K, H, W) (the message suggests ``dims=``), zero channels,
            bad ``z``/``t``/``level``/``channel_width``/``position``.
        MissingExtraError: the format's optional reader, or a decoder the file needs, is not installed.
    """
    check_z(z)
    check_t(t)
    check_position(position, allow_each=False)
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise InputError(f"level={level!r}; expected an int >= 0 (0 = full resolution)")
    fmt = format_of(path)
    if fmt is None:
        raise ImageReadError(
            f"{str(path)!r}: unknown image format; supported suffixes are {', '.join(SUPPORTED_SUFFIXES)} "
            "(vendor formats need the bioio extra)"
        )
    if fmt == "tiff":
        array, names = read_tiff(path, dims=dims, z=z, t=t, level=level, position=position)
    elif fmt == "zarr":
        if position:
            raise InputError(
                f"{str(path)!r}: position={position} but an OME-Zarr image is one position; the fields of an "
                "OME-Zarr plate are separate images (pass the plate folder to read them all)"
            )
        array, names = read_ngff(path, dims=dims, z=z, t=t, level=level)
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
