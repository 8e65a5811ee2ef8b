"""Intensity scaling and per-channel normalisation."""

from __future__ import annotations

import torch

from dino_boc.preprocess.config import PreprocessConfig

__all__ = [
    "scale_intensity", "self_normalize", "percentile_rescale", "instance_normalize", "image_max_scale",
    "saturation_noise",
]


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


def instance_normalize(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``nn.InstanceNorm2d(affine=False)`` on one image: per channel ``(x - mean) / sqrt(var + eps)``
    (biased variance; eps inside the square root, unlike :func:`self_normalize`).

    Args:
        x: float ``(K, H, W)``.
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = x.var(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)


def image_max_scale(x: torch.Tensor) -> torch.Tensor:
    """Divide one image by its largest value over all channels (CHAMMI-75's ``DinoV2._scale``).

    An image whose maximum is 0 stays 0 (the published code would give NaN).

    Args:
        x: float ``(K, H, W)``.
    """
    top = x.amax()
    return x / top if top != 0 else torch.zeros_like(x)


def saturation_noise(x: torch.Tensor, low: float, high: float, seed: int) -> torch.Tensor:
    """MorphEm's SaturationNoiseInjector, per channel: pixels equal to 255 become noise drawn uniformly
    from ``[low, high)``; other pixels are unchanged.

    The noise is random but reproducible: a ``torch.Generator`` seeded with ``seed`` draws one ``(H, W)``
    plane per channel, channel 0 first.

    Args:
        x: float ``(K, H, W)`` of uint8 values.
    """
    gen = torch.Generator().manual_seed(int(seed))
    out = x.clone()
    for c in range(x.shape[0]):
        noise = torch.empty(x.shape[1:], dtype=x.dtype).uniform_(low, high, generator=gen)
        out[c] = torch.where(x[c] == 255, noise, x[c])
    return out


def normalize_image(x: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """The normalisation step: self (released), percentile, instance (MorphEm), image_max (CHAMMI-75's
    DINOv2), or none."""
    if cfg.normalize == "instance":
        return instance_normalize(x, cfg.eps)
    if cfg.normalize == "image_max":
        return image_max_scale(x)
    if cfg.normalize == "self":
        return self_normalize(x, cfg.eps)
    if cfg.normalize == "percentile":
        lo, hi = cfg.percentiles
        return self_normalize(percentile_rescale(x, lo, hi), cfg.eps)
    return x
