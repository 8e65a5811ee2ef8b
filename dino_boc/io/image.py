"""PNG/JPEG through imageio, and NumPy ``.npy`` arrays.

PNG/JPEG: every stored plane is a channel: gray is one, RGB three, and an alpha plane is a channel too
(RGBA four, gray+alpha two), as the released DINOv2 decoder reads them — microscopy PNGs such as HPA's
4-stain RGBA images keep a stain in the alpha plane. ``alpha=`` says what the alpha plane is (see
:data:`AlphaMode`); the default drops it only when it is fully opaque (every value at the dtype's maximum),
i.e. an RGB image saved with alpha by an editor or plotting library. 8- and 16-bit PNG keep their dtype.

``.npy``: a 2-D array is ``YX``; a 3-D array is taken as ``CYX``, the library's own (K, H, W) layout;
anything else, or a 3-D array stored another way, needs ``dims=``.
"""

from __future__ import annotations

import os
from typing import Literal, get_args

import numpy as np

from dino_boc.errors import InputError, require
from dino_boc.io.axes import DEFAULT_Z, ZReduction, check_t, check_z, parse_dims, to_kyx
from dino_boc.io.formats import check_exists, reading
from dino_boc.io.fs import is_url, open_bytes

__all__ = ["AlphaMode", "read_pixels", "read_npy"]

AlphaMode = Literal["auto", "channel", "transparency"]
"""What the alpha plane of an RGBA / gray+alpha PNG is: ``"channel"`` a stain (kept), ``"transparency"``
(dropped), ``"auto"`` (default) kept unless fully opaque (every value at the dtype's maximum)."""


def read_pixels(
    path: str | os.PathLike, *, dims: str | None = None, alpha: AlphaMode = "auto"
) -> tuple[np.ndarray, None]:
    """Read a PNG or JPEG as (K, H, W), K = 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA), in the file's dtype.

    Args:
        path: the file.
        dims: axes overriding the default ``"YX"``/``"YXS"``, e.g. ``"YXC"`` (then every plane is kept).
        alpha: what an alpha plane is (:data:`AlphaMode`): ``"transparency"`` drops it, ``"channel"``
            keeps it, ``"auto"`` keeps it unless it is fully opaque.

    Returns:
        (array (K, H, W), ``None``: these formats carry no channel names).

    Raises:
        ImageReadError: missing, corrupt or truncated file.
        InputError: a ``dims`` that does not fit, or an unknown ``alpha``.
        MissingExtraError: imageio is not installed.
    """
    if alpha not in get_args(AlphaMode):
        raise InputError(
            f"alpha={alpha!r}; choose one of {list(get_args(AlphaMode))}: 'channel' keeps the alpha plane as a "
            "stain, 'transparency' drops it"
        )
    require("imageio", "io")
    import imageio.v3 as iio

    check_exists(path)
    source = str(path)
    with reading(path, "imageio"):
        if is_url(path):  # i17: decode the fetched bytes; imageio needs the suffix as a hint
            array = np.asarray(iio.imread(open_bytes(path).getvalue(), index=0, extension=os.path.splitext(str(path))[1]))
        else:
            array = np.asarray(iio.imread(path, index=0))
    if dims is not None:
        return to_kyx(array, parse_dims(dims, array.shape), source=source), None
    if array.ndim == 3 and array.shape[-1] in (2, 4) and _drop_alpha(array[..., -1], alpha):
        array = array[..., :-1]
    axes = {2: "YX", 3: "YXS"}.get(array.ndim)
    if axes is None:
        raise InputError(f"{source}: decoded to shape {array.shape}; expected (H, W) or (H, W, S); pass dims=")
    return to_kyx(array, axes, source=source), None


def _drop_alpha(plane: np.ndarray, alpha: AlphaMode) -> bool:
    """Whether the alpha ``plane`` (H, W) is transparency to drop under ``alpha``."""
    if alpha != "auto":
        return alpha == "transparency"
    opaque = np.iinfo(plane.dtype).max if plane.dtype.kind in "ui" else 1.0
    return bool(plane.size) and bool((plane == opaque).all())


def read_npy(
    path: str | os.PathLike,
    *,
    dims: str | None = None,
    z: ZReduction = DEFAULT_Z,
    t: int = 0,
) -> tuple[np.ndarray, None]:
    """Read a ``.npy`` array as (K, H, W) (2-D: ``YX``; 3-D: ``CYX``; otherwise ``dims=`` is required).

    Args:
        path: the file (no pickles are loaded).
        dims: axes of the stored array, e.g. ``"ZYX"`` or ``"YXC"``.
        z: Z reduction, ``"max"``, ``"mean"`` or a slice index.
        t: time point to keep.

    Returns:
        (array (K, H, W), ``None``).

    Raises:
        ImageReadError: missing or corrupt file, or an object array.
        InputError: a shape that needs ``dims=``, or a ``dims`` that does not fit.
    """
    check_exists(path)
    check_z(z)
    check_t(t)
    source = str(path)
    with reading(path, "numpy"):
        array = np.load(open_bytes(path), allow_pickle=False)
    if dims is not None:
        axes = parse_dims(dims, array.shape)
    elif array.ndim in (2, 3):
        axes = "CYX"[-array.ndim :]
    else:
        raise InputError(f"{source}: a {array.ndim}-d array of shape {array.shape}; pass dims=, e.g. dims='ZCYX'")
    return to_kyx(array, axes, z=z, t=t, source=source), None
