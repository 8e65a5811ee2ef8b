"""Intensity scaling and per-channel normalisation."""

from __future__ import annotations

import torch

from dino_boc.preprocess.config import PreprocessConfig

__all__ = ["scale_intensity", "self_normalize", "percentile_rescale"]


def scale_intensity(x: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """Divide by ``cfg.scale`` (255 as released, whatever the dtype) unless ``normalize="none"``.

    Args:
        x: float ``(..., H, W)``.
    """
    if cfg.normalize == "none":
        return x
    return x / cfg.scale


def self_normalize(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per image and per channel ``(x - mean) / (std(unbiased=False) + eps)`` over H, W.

    Args:
        x: float ``(..., H, W)``; every leading index is one channel of one image.

    Returns:
        Same shape, each ``(H, W)`` plane with mean 0 and std ~1 (a constant plane becomes 0).
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / (std + eps)


def percentile_rescale(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Per channel, map the ``low``/``high`` percentiles to 0/1 and clip (robust to hot pixels).

    Args:
        x: float ``(..., H, W)``.
    """
    flat = x.flatten(-2)
    q = torch.quantile(flat.float(), torch.tensor([low / 100, high / 100], dtype=torch.float32), dim=-1)
    lo, hi = q[0][..., None, None], q[1][..., None, None]
    return ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)


def normalize_image(x: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """The normalisation step that follows resize/crop: self (released), percentile, or none."""
    if cfg.normalize == "self":
        return self_normalize(x, cfg.eps)
    if cfg.normalize == "percentile":
        lo, hi = cfg.percentiles
        return self_normalize(percentile_rescale(x, lo, hi), cfg.eps)
    return x
