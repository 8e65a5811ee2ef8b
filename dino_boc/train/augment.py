"""Multi-crop augmentation for microscopy (the paper's recipe, released ``CellAugmentationDINO``).

For each crop: random resized crop (same window on every channel; bilinear without antialiasing, as the
released code's torchvision 0.15 tensor resize), horizontal and vertical flips
(p = 0.5 each), per-channel random brightness then contrast with factors ``max(N(1, 0.2), 0.5)`` drawn
independently per channel, then per-channel self-normalisation ``(x - mean) / (std + 1e-7)``. No colour
jitter, blur or solarisation. Two global crops (224 px, scale 0.4-1) and eight local crops (96 px, scale
0.005-0.4) per sample. Inputs are float ``(K, H, W)`` already divided by 255; BoC feeds ``K = 1``.

Randomness comes from an optional ``torch.Generator``: the same seed gives the same crops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from dino_boc.errors import ConfigError, InputError
from dino_boc.preprocess.intensity import self_normalize

__all__ = [
    "MultiCropConfig",
    "MultiCrops",
    "MultiCropAugmentation",
    "random_resized_crop_params",
    "random_resized_crop",
    "random_flips",
    "random_brightness_contrast",
]


def random_resized_crop_params(
    height: int,
    width: int,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """A crop window ``(top, left, h, w)`` covering a random fraction ``scale`` of the area, log-uniform aspect.

    Ten tries as torchvision's ``RandomResizedCrop``; if none fits, the largest centred window whose aspect
    ratio lies in ``ratio``.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(2, generator=generator)
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0].item())
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1].item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, (), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    image: torch.Tensor,
    size: int,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    antialias: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop a random window of ``image`` ``(K, H, W)`` and resize it (bilinear) to ``(K, size, size)``.

    ``antialias=False`` (default) is the released code's resize (torchvision 0.15 tensors, which do not
    antialias): shrinking a large window aliases fine texture. ``antialias=True`` low-passes first (what
    PIL and torchvision >= 0.17 do).
    """
    top, left, h, w = random_resized_crop_params(
        image.shape[-2], image.shape[-1], scale=scale, ratio=ratio, generator=generator
    )
    return TF.resized_crop(
        image, top, left, h, w, size=[size, size], interpolation=InterpolationMode.BILINEAR, antialias=antialias
    )


def random_flips(image: torch.Tensor, *, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip ``(K, H, W)`` horizontally with probability ``p``, then vertically with probability ``p``."""
    u = torch.rand(2, generator=generator)
    if u[0].item() < p:
        image = TF.horizontal_flip(image)
    if u[1].item() < p:
        image = TF.vertical_flip(image)
    return image


def random_brightness_contrast(
    image: torch.Tensor,
    *,
    std: float = 0.2,
    min_factor: float = 0.5,
    clip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-channel brightness ``x * b_k``, then contrast ``c_k x + (1 - c_k) mean_k(x)``.

    Factors ``b_k`` and ``c_k`` are ``max(N(1, std), min_factor)``, drawn independently per channel.

    With ``clip`` (default, as the released code through torchvision) each step clamps to [0, 1], which
    suits 8-bit images divided by 255; set ``clip=False`` for inputs that exceed 1 (e.g. 16-bit / 255),
    or they saturate.

    Args:
        image: float ``(K, H, W)``.

    Returns:
        float ``(K, H, W)``.
    """
    k = image.shape[0]
    brightness = (1.0 + std * torch.randn(k, generator=generator)).clamp(min=min_factor).to(image)
    contrast = (1.0 + std * torch.randn(k, generator=generator)).clamp(min=min_factor).to(image)
    out = image * brightness[:, None, None]
    if clip:
        out = out.clamp(0.0, 1.0)
    mean = out.mean(dim=(-2, -1), keepdim=True)
    out = contrast[:, None, None] * out + (1.0 - contrast[:, None, None]) * mean
    return out.clamp(0.0, 1.0) if clip else out


@dataclass(frozen=True)
class MultiCropConfig:
    """Multi-crop settings (defaults: the paper's).

    Attributes:
        global_size, local_size: crop sizes in pixels (224, 96); tests use 32 / 16.
        n_global, n_local: number of crops (2, 8).
        global_scale, local_scale: area fractions of the crops ((0.4, 1), (0.005, 0.4)).
        ratio: aspect-ratio range of the crop window.
        flip_p: probability of each flip.
        intensity_std, intensity_min: brightness/contrast factor ``max(N(1, std), min)`` (0.2, 0.5).
        clip: clamp brightness/contrast results to [0, 1] (released behaviour; for inputs in [0, 1]).
        antialias: antialias the random resized crop (False: the released code's bilinear resize).
        eps: added to the std in the self-normalisation.
    """

    global_size: int = 224
    local_size: int = 96
    n_global: int = 2
    n_local: int = 8
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.005, 0.4)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    intensity_std: float = 0.2
    intensity_min: float = 0.5
    clip: bool = True
    antialias: bool = False
    eps: float = 1e-7

    def __post_init__(self) -> None:
        if self.global_size < 1 or self.local_size < 1 or self.n_global < 1 or self.n_local < 0:
            raise ConfigError(f"multi-crop sizes/counts must be positive (n_local >= 0); got {self}")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)}; expected 0 < min <= max <= 1")


@dataclass(frozen=True)
class MultiCrops:
    """The crops of one sample: ``n_global`` tensors ``(K, Sg, Sg)`` and ``n_local`` tensors ``(K, Sl, Sl)``."""

    global_crops: tuple[torch.Tensor, ...]
    local_crops: tuple[torch.Tensor, ...]


class MultiCropAugmentation:
    """Callable turning one image ``(K, H, W)`` into :class:`MultiCrops`.

    Args:
        config: crop settings.
    """

    def __init__(self, config: MultiCropConfig | None = None) -> None:
        self.config = MultiCropConfig() if config is None else config

    def crop(
        self, image: torch.Tensor, size: int, scale: tuple[float, float], generator: torch.Generator | None
    ) -> torch.Tensor:
        """One augmented, self-normalised crop ``(K, size, size)``."""
        c = self.config
        x = random_resized_crop(image, size, scale=scale, ratio=c.ratio, antialias=c.antialias, generator=generator)
        x = random_flips(x, p=c.flip_p, generator=generator)
        x = random_brightness_contrast(
            x, std=c.intensity_std, min_factor=c.intensity_min, clip=c.clip, generator=generator
        )
        return self_normalize(x, c.eps)

    def __call__(self, image: torch.Tensor, *, generator: torch.Generator | None = None) -> MultiCrops:
        """Global crops first, then local crops, each drawn independently.

        Args:
            image: float ``(K, H, W)``, values in [0, 1] for the default ``clip=True``.
            generator: random source; the same seed gives the same crops.

        Raises:
            InputError: not a float 3-D tensor with at least one channel.
        """
        ok = isinstance(image, torch.Tensor) and image.ndim == 3 and image.is_floating_point()
        if not ok or image.shape[0] < 1:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise InputError(
                f"multi-crop input is {shape}; expected a float tensor (K, H, W) divided by 255 — "
                "convert with dino_boc.preprocess.to_float_tensor(image) / 255"
            )
        c = self.config
        globals_ = tuple(self.crop(image, c.global_size, c.global_scale, generator) for _ in range(c.n_global))
        locals_ = tuple(self.crop(image, c.local_size, c.local_scale, generator) for _ in range(c.n_local))
        return MultiCrops(global_crops=globals_, local_crops=locals_)
