"""Large fields of view: a grid of square tiles covering the image, and fitting a size to the patch grid.

``tile_grid`` places ``ceil(L / size)`` tiles along each axis of length L, the first at 0 and the last
ending at L, evenly spread in between (neighbours overlap by less than a tile). An axis shorter than
the tile gets one tile, zero-padded as a centre crop larger than the image is (torchvision's
``center_crop``). Every pixel is covered; no tile is mostly padding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dino_boc.errors import InputError

__all__ = ["FIT_TO_PATCH", "tile_starts", "tile_grid", "tile_image", "fit_to_patch"]

# What happens to a field whose size (after resize) is not a multiple of the patch when no crop is
# given, in embed() and in the CLI alike: it is centre-cropped to the largest multiple (at most
# patch - 1 pixels lost per axis). Recorded in provenance as options.fit_to_patch.
FIT_TO_PATCH = "center-crop"


def tile_starts(length: int, size: int) -> list[int]:
    """Start offsets of the tiles along one axis of ``length`` pixels (``[0]`` when ``length <= size``)."""
    if length <= size:
        return [0]
    n = math.ceil(length / size)
    return [int(v) for v in np.round(np.linspace(0, length - size, n))]


def tile_grid(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every tile, row-major."""
    return [(y, x) for y in tile_starts(height, size) for x in tile_starts(width, size)]


def tile_image(image: np.ndarray, size: int) -> np.ndarray:
    """Cut a ``(K, H, W)`` image into the tiles of :func:`tile_grid`.

    Args:
        image: ``(K, H, W)``, any dtype.
        size: S, the tile side in pixels.

    Returns:
        ``(T, K, S, S)`` in the image's dtype, T tiles in row-major order. An axis shorter than S is
        zero-padded (centred, as torchvision's ``center_crop``).

    Raises:
        InputError: not ``(K, H, W)`` or ``size < 1``.
    """
    img = np.asarray(image)
    if img.ndim != 3:
        raise InputError(f"tiling expects a (K, H, W) image, got shape {img.shape}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"tile size={size!r} must be a positive integer (pixels)")
    _, h, w = img.shape
    if h < size or w < size:  # torchvision's padding of a crop larger than the image: the odd pixel bottom/right
        dh, dw = max(size - h, 0), max(size - w, 0)
        img = np.pad(img, ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)))
        h, w = img.shape[1:]
    tiles = [img[:, y:y + size, x:x + size] for y, x in tile_grid(h, w, size)]
    return np.stack(tiles)


def fit_to_patch(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Centre-crop ``(..., H, W)`` to the largest multiple of the patch on each axis (torchvision offsets).

    Drops at most ``patch_size - 1`` rows and columns, split between both sides. Used by
    :func:`dino_boc.preprocess.prepare_image` when no crop is asked for, so that a field of any size can
    be embedded whole (by :func:`dino_boc.embed` and the pipeline alike).

    Raises:
        InputError: H or W smaller than one patch.
    """
    h, w = x.shape[-2:]
    if h < patch_size or w < patch_size:
        raise InputError(
            f"image is {h}x{w} pixels, smaller than one {patch_size}x{patch_size} patch; "
            f"pass resize={patch_size * 2} or crop= to enlarge it"
        )
    hh, ww = h - h % patch_size, w - w % patch_size
    if (hh, ww) == (h, w):
        return x
    top, left = int(round((h - hh) / 2.0)), int(round((w - ww) / 2.0))
    return x[..., top:top + hh, left:left + ww]
