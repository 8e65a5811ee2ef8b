"""Pre-processing settings shared by the model, embed() and the dataset pipeline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from dino_boc._fields import DictForm
from dino_boc.errors import ConfigError

Normalize = Literal["self", "percentile", "none", "instance", "image_max"]
NORMALIZE_CHOICES: tuple[str, ...] = ("self", "percentile", "none", "instance", "image_max")
ResizeMode = Literal["shorter", "square"]
RESIZE_MODES: tuple[str, ...] = ("shorter", "square")
Interpolation = Literal["bicubic", "bilinear"]
INTERPOLATIONS: tuple[str, ...] = ("bicubic", "bilinear")


def _check_positive_finite(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name}={v!r} must be a finite number > 0 (a divisor); 255 and 1e-7 are the released values")


@dataclass(frozen=True)
class PreprocessConfig(DictForm):
    """How a raw image becomes the float tensor the model sees.

    The defaults are the released DINO BoC evaluation: divide by 255 whatever the dtype, optional
    resize (shorter side, bicubic, ``antialias=False``) and centre crop, then per image and per channel
    self-normalisation ``(x - mean) / (std(unbiased=False) + eps)``. The zoo models' own recipes
    (docs/models.md) set the other fields: MorphEm ``saturation_noise=(200, 255)``,
    ``normalize="instance"``, ``normalize_before_resize=True``, ``resize=224, resize_mode="square",
    interpolation="bilinear", antialias=True``; CHAMMI-75's DINOv2 ``resize=224, resize_mode="square",
    interpolation="bilinear", antialias=True, normalize="image_max"`` (the RGB replication and ImageNet
    statistics are folded into the model's patch embedding).

    Attributes:
        normalize: ``"self"`` (released), ``"percentile"`` (clip to percentiles, scale to [0, 1], then
            self-normalise), ``"none"`` (raw values as float, no division by 255), ``"instance"``
            (``InstanceNorm2d``: per channel ``(x - mean) / sqrt(var + eps)``) or ``"image_max"`` (divide by
            the largest value over all channels of the image; an all-zero image stays 0).
        resize: after resizing: the shorter side (``resize_mode="shorter"``) or both sides (``"square"``);
            None for no resize.
        resize_mode: ``"shorter"`` (keeps the aspect ratio) or ``"square"`` (``resize × resize``).
        interpolation: ``"bicubic"`` or ``"bilinear"``.
        antialias: antialias the resize (torchvision's flag).
        normalize_before_resize: normalise first, then resize/crop (MorphEm's order).
        saturation_noise: ``(low, high)``: pixels of a uint8 image equal to 255 are replaced by noise drawn
            uniformly from ``[low, high)`` (MorphEm's SaturationNoiseInjector), or None. Random, but seeded.
        noise_seed: seed of that noise; every image draws from a fresh ``torch.Generator`` with this seed,
            so features are reproducible.
        crop: side of the centre crop (after resize), or None. Larger than the image pads with zeros.
        scale: the divisor applied before normalisation (255 as released).
        eps: added to the std.
        percentiles: (low, high) percentiles for ``normalize="percentile"``.
    """

    normalize: Normalize = "self"
    resize: int | None = None
    crop: int | None = None
    scale: float = 255.0
    eps: float = 1e-7
    percentiles: tuple[float, float] = (1.0, 99.0)
    resize_mode: ResizeMode = "shorter"
    interpolation: Interpolation = "bicubic"
    antialias: bool = False
    normalize_before_resize: bool = False
    saturation_noise: tuple[float, float] | None = None
    noise_seed: int = 0

    dict_name: ClassVar[str] = "preprocessing"  # the ``preprocess`` section of ``config.json`` (to_dict / from_dict)
    dict_tuples: ClassVar[tuple[str, ...]] = ("percentiles", "saturation_noise")

    def __post_init__(self) -> None:
        if not isinstance(self.normalize, str) or self.normalize not in NORMALIZE_CHOICES:
            raise ConfigError(f"normalize={self.normalize!r} is unknown; choose one of {NORMALIZE_CHOICES}")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"resize_mode={self.resize_mode!r} is unknown; choose one of {RESIZE_MODES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation={self.interpolation!r} is unknown; choose one of {INTERPOLATIONS}")
        if self.saturation_noise is not None:
            low, high = (float(v) for v in self.saturation_noise)
            if not low <= high:
                raise ConfigError(f"saturation_noise={self.saturation_noise!r} must be (low, high) with low <= high")
            object.__setattr__(self, "saturation_noise", (low, high))
        for name in ("resize", "crop"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ConfigError(f"{name}={v!r} must be a positive integer or None")
        _check_positive_finite("scale", self.scale)
        _check_positive_finite("eps", self.eps)
        pair = self.percentiles
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in pair)):
            raise ConfigError(f"percentiles={pair!r} must be two numbers (low, high)")
        lo, hi = pair
        if not 0 <= lo < hi <= 100:
            raise ConfigError(f"percentiles={self.percentiles!r} must satisfy 0 <= low < high <= 100")
        object.__setattr__(self, "percentiles", (float(lo), float(hi)))
