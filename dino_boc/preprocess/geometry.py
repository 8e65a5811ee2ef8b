"""Resize and centre crop with exactly torchvision's semantics (what the released evaluation uses)."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

__all__ = ["resize_shorter", "resize_square", "resized_shape", "center_crop"]

_MODES = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


def resize_shorter(x: torch.Tensor, size: int, *, interpolation: str = "bicubic", antialias: bool = False
                   ) -> torch.Tensor:
    """``torchvision.transforms.functional.resize(x, size)``: the shorter side becomes ``size`` (the
    longer one ``int(size * long / short)``, truncated); bicubic, ``antialias=False`` as released.

    Args:
        x: float ``(..., H, W)``.
    """
    return TF.resize(x, [size], interpolation=_MODES[interpolation], antialias=antialias)


def resize_square(x: torch.Tensor, size: int, *, interpolation: str = "bilinear", antialias: bool = True
                  ) -> torch.Tensor:
    """``torchvision.transforms.v2.Resize((size, size))``: both sides become ``size`` (aspect ratio not
    kept), as MorphEm's and CHAMMI-75's DINOv2 transforms do (bilinear, ``antialias=True``).

    Args:
        x: float ``(..., H, W)``.
    """
    return TF.resize(x, [size, size], interpolation=_MODES[interpolation], antialias=antialias)


def resized_shape(height: int, width: int, size: int | None, *, mode: str = "shorter") -> tuple[int, int]:
    """``(H, W)`` after :func:`resize_shorter` (``mode="shorter"``) or :func:`resize_square` (``"square"``) to
    ``size`` (None: unchanged), without resizing anything."""
    if size is None:
        return height, width
    if mode == "square":
        return size, size
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """``torchvision.transforms.functional.center_crop(x, size)``: torchvision's offsets; a crop
    larger than the image pads with zeros, the odd pixel at the bottom/right.

    Args:
        x: ``(..., H, W)``.
    """
    return TF.center_crop(x, [size, size])
