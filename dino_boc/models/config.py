"""Architecture settings of every dino_boc model, saved as the ``model`` section of ``config.json``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from dino_boc.errors import ConfigError

Arch = Literal["boc", "ha", "channel_vit"]
ARCHS: tuple[str, ...] = ("boc", "ha", "channel_vit")

#: Largest accepted value of each integer field: generous for every released ViT (ViT-7B has D = 4096,
#: depth 40) while keeping a crafted ``config.json`` (``depth: 1000000``) from building a model for minutes.
INT_LIMITS: dict[str, int] = {
    "embed_dim": 16384, "depth": 256, "num_heads": 1024, "patch_size": 1024, "img_size": 16384,
    "max_channels": 4096,
}
#: Accepted range ``(low, high, low_inclusive)`` of each float field (high is inclusive).
FLOAT_LIMITS: dict[str, tuple[float, float, bool]] = {
    "mlp_ratio": (0.0, 64.0, False), "drop_path_rate": (0.0, 1.0, True), "interpolate_offset": (0.0, 1.0, True),
    "layer_norm_eps": (0.0, 1.0, False), "init_values": (0.0, 1e3, False),
}
#: Largest position-embedding grid side (``img_size // patch_size``).
MAX_GRID = 1024


def _check_int(name: str, v: Any, *, low: int, high: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ConfigError(f"{name}={v!r} must be an integer in [{low}, {high}]")


def _check_float(name: str, v: Any) -> None:
    low, high, inclusive = FLOAT_LIMITS[name]
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or not (low <= v if inclusive else low < v) or v > high:
        bracket = "[" if inclusive else "("
        raise ConfigError(f"{name}={v!r} must be a finite number in {bracket}{low:g}, {high:g}]")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of a model; the defaults are the paper's ViT-L/16 DINO BoC.

    Attributes:
        arch: ``"boc"`` (Bag of Channels: one single-channel ViT, channels encoded independently),
            ``"ha"`` (DINO HA: per-channel CLS tokens plus a global CLS, hierarchical attention mask) or
            ``"channel_vit"`` (DINO Channel-ViT: learned channel embeddings, full attention).
        embed_dim: token width D.
        depth: number of transformer blocks.
        num_heads: attention heads (D must be divisible by it).
        mlp_ratio: MLP hidden width / D.
        patch_size: side of a square patch in pixels.
        img_size: training image side; the stored position-embedding grid is ``img_size // patch_size``.
        init_values: LayerScale initial value, or None for no LayerScale.
        qkv_bias: bias in the qkv projection.
        drop_path_rate: stochastic depth (training only).
        max_channels: Channel-ViT only: number of learned channel embeddings (K_max).
        channel_names: Channel-ViT only (optional): a name per channel-embedding id.
        interpolate_offset: DINOv2's offset in the position-embedding scale factor.
        layer_norm_eps: LayerNorm epsilon.
    """

    arch: Arch = "boc"
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 16
    img_size: int = 224
    init_values: float | None = 1e-5
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    max_channels: int = 0
    channel_names: tuple[str, ...] = ()
    interpolate_offset: float = 0.1
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or self.arch not in ARCHS:
            raise ConfigError(f"arch={self.arch!r} is unknown; choose one of {ARCHS}")
        for name, high in INT_LIMITS.items():
            _check_int(name, getattr(self, name), low=0 if name == "max_channels" else 1, high=high)
        for name in FLOAT_LIMITS:
            if name == "init_values" and self.init_values is None:
                continue
            _check_float(name, getattr(self, name))
        if not isinstance(self.qkv_bias, bool):
            raise ConfigError(f"qkv_bias={self.qkv_bias!r} must be true or false")
        names = self.channel_names
        if not isinstance(names, (tuple, list)) or not all(isinstance(c, str) for c in names):
            raise ConfigError(f"channel_names={self.channel_names!r} must be a list of strings")
        if self.img_size // self.patch_size > MAX_GRID:
            raise ConfigError(
                f"img_size={self.img_size} / patch_size={self.patch_size} is a {self.img_size // self.patch_size}-patch "
                f"grid; expected at most {MAX_GRID} patches a side"
            )
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}; "
                "pass num_heads= so that embed_dim / num_heads is an integer (64 is usual)"
            )
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size={self.img_size} must be a multiple of patch_size={self.patch_size}")
        object.__setattr__(self, "channel_names", tuple(self.channel_names))
        if self.arch == "channel_vit":
            if self.max_channels <= 0:
                raise ConfigError("a channel_vit model needs max_channels > 0 (the number of channel embeddings)")
            if self.channel_names and len(self.channel_names) != self.max_channels:
                raise ConfigError(
                    f"channel_names has {len(self.channel_names)} names but max_channels={self.max_channels}"
                )
        elif self.max_channels or self.channel_names:
            raise ConfigError(f"max_channels/channel_names only apply to arch='channel_vit', not {self.arch!r}")

    @property
    def grid_size(self) -> int:
        """Side of the stored position-embedding grid (14 for 224 px / 16)."""
        return self.img_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_names"] = list(self.channel_names)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """A config from its ``to_dict`` form (the ``model`` section of ``config.json``).

        Raises:
            ConfigError: ``d`` is not a mapping, has unknown keys, or a value of the wrong type or out of range.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"the model config is a {type(d).__name__}; expected a JSON object of fields")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("channel_names"), list):
            d["channel_names"] = tuple(d["channel_names"])
        return cls(**d)
