"""Pre-processing settings shared by the model, embed() and the dataset pipeline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from dino_boc.errors import ConfigError

Normalize = Literal["self", "percentile", "none"]
NORMALIZE_CHOICES: tuple[str, ...] = ("self", "percentile", "none")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a raw image becomes the float tensor the model sees.

    The defaults are the released DINO BoC evaluation: divide by 255 whatever the dtype, optional
    resize (shorter side, bicubic, ``antialias=False``) and centre crop, then per image and per channel
    self-normalisation ``(x - mean) / (std(unbiased=False) + eps)``.

    Attributes:
        normalize: ``"self"`` (released), ``"percentile"`` (clip to percentiles, scale to [0, 1], then
            self-normalise) or ``"none"`` (raw values as float, no division by 255).
        resize: shorter side after resizing, or None.
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

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZE_CHOICES:
            raise ConfigError(f"normalize={self.normalize!r} is unknown; choose one of {NORMALIZE_CHOICES}")
        for name in ("resize", "crop"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ConfigError(f"{name}={v!r} must be a positive integer or None")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ConfigError(f"percentiles={self.percentiles!r} must satisfy 0 <= low < high <= 100")
        object.__setattr__(self, "percentiles", (float(lo), float(hi)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["percentiles"] = list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown preprocessing keys {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "percentiles" in d:
            d["percentiles"] = tuple(d["percentiles"])
        return cls(**d)
