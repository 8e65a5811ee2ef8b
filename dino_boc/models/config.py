"""Architecture settings of every dino_boc model, saved as the ``model`` section of ``config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from dino_boc.errors import ConfigError

Arch = Literal["boc", "ha", "channel_vit"]
ARCHS: tuple[str, ...] = ("boc", "ha", "channel_vit")


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
        drop_path_uniform: the same ``drop_path_rate`` on every block (default, as DINOv2's
            ``drop_path_uniform: true``); False ramps it linearly from 0 on the first block to
            ``drop_path_rate`` on the last (timm's rule: half the average stochastic depth).
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
    drop_path_uniform: bool = True
    max_channels: int = 0
    channel_names: tuple[str, ...] = ()
    interpolate_offset: float = 0.1
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"arch={self.arch!r} is unknown; choose one of {ARCHS}")
        for name in ("embed_dim", "depth", "num_heads", "patch_size", "img_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name}={v!r} must be a positive integer")
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}; "
                "pass num_heads= so that embed_dim / num_heads is an integer (64 is usual)"
            )
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size={self.img_size} must be a multiple of patch_size={self.patch_size}")
        object.__setattr__(self, "channel_names", tuple(str(c) for c in self.channel_names))
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
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "channel_names" in d:
            d["channel_names"] = tuple(d["channel_names"])
        return cls(**d)
