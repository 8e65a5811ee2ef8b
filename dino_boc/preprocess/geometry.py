"""Resize and centre crop with exactly torchvision's semantics (what the released evaluation uses)."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

__all__ = ["resize_shorter", "resized_shape", "center_crop"]


def resize_shorter(x: torch.Tensor, size: int) -> torch.Tensor:
    """``torchvision.transforms.functional.resize(x, size)``: the shorter side becomes ``size`` (the
    longer one ``int(size * long / short)``, truncated), bicubic, ``antialias=False``.

    Args:
        x: float ``(..., H, W)``.
    """
    return TF.resize(x, [size], interpolation=InterpolationMode.BICUBIC, antialias=False)


def resized_shape(height: int, width: int, size: int | None) -> tuple[int, int]:
    """``(H, W)`` after :func:`resize_shorter` to ``size`` (None: unchanged), without resizing anything."""
    if size is None:
        return height, width
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
