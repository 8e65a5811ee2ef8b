"""Architecture settings of every dino_boc model, saved as the ``model`` section of ``config.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, TypeVar, get_args

from dino_boc._fields import DictForm
from dino_boc.errors import ConfigError

Arch = Literal["boc", "ha", "channel_vit", "fixed", "ca_mae"]
ARCHS: tuple[str, ...] = get_args(Arch)
ChannelPool = Literal["concat", "mean"]
CHANNEL_POOLS: tuple[str, ...] = get_args(ChannelPool)

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
class ModelConfig(DictForm):
    """The architecture of a model; the defaults are the paper's ViT-L/16 DINO BoC.

    Attributes:
        arch: ``"boc"`` (Bag of Channels: one single-channel ViT, channels encoded independently),
            ``"ha"`` (DINO HA: per-channel CLS tokens plus a global CLS, hierarchical attention mask),
            ``"channel_vit"`` (DINO Channel-ViT: learned channel embeddings, full attention) or ``"fixed"``
            (a plain ViT whose patch embedding takes ``in_chans`` named channels in one order: the
            Cell-DINO fixed-channel models) or ``"ca_mae"`` (OpenPhenom's channel-agnostic MAE encoder: one
            shared patch projection, every channel's patches in one sequence, fixed sin-cos positions).
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
        max_channels: Channel-ViT: number of learned channel embeddings (K_max); ``"ca_mae"``: the most
            channels its position table holds (11 for OpenPhenom).
        channel_names: Channel-ViT (optional): a name per channel-embedding id; ``"fixed"`` (required): the
            names of the ``in_chans`` input channels in the model's order.
        in_chans: ``"fixed"`` only: channels of the patch embedding (1 for every other arch).
        interpolate_offset: DINOv2's offset in the position-embedding scale factor.
        layer_norm_eps: LayerNorm epsilon.
        reg_tokens: BoC only: register tokens after the class token (DINOv2 "with registers"); they take
            no position embedding, as released.
        interpolate_antialias: antialias the bicubic position-embedding resampling (DINOv2 "with
            registers" releases: True with ``interpolate_offset=0``).
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
    reg_tokens: int = 0
    interpolate_antialias: bool = False
    in_chans: int = 1

    dict_name: ClassVar[str] = "model config"  # the ``model`` section of ``config.json`` (to_dict / from_dict)
    dict_tuples: ClassVar[tuple[str, ...]] = ("channel_names",)

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or self.arch not in ARCHS:
            raise ConfigError(f"arch={self.arch!r} is unknown; choose one of {ARCHS}")
        for name, high in INT_LIMITS.items():
            _check_int(name, getattr(self, name), low=0 if name == "max_channels" else 1, high=high)
        for name in FLOAT_LIMITS:
            if name == "init_values" and self.init_values is None:
                continue
            _check_float(name, getattr(self, name))
        for flag in ("qkv_bias", "drop_path_uniform"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag}={getattr(self, flag)!r} must be true or false")
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
        object.__setattr__(self, "channel_names", tuple(str(c) for c in self.channel_names))
        _check_int("reg_tokens", self.reg_tokens, low=0, high=64)
        _check_int("in_chans", self.in_chans, low=1, high=INT_LIMITS["max_channels"])
        if not isinstance(self.interpolate_antialias, bool):
            raise ConfigError(f"interpolate_antialias={self.interpolate_antialias!r} must be true or false")
        if self.in_chans > 1 and self.arch != "fixed":
            raise ConfigError(f"in_chans={self.in_chans!r}: only arch='fixed' takes more than 1 input channel")
        if self.reg_tokens and self.arch != "boc":
            raise ConfigError(f"reg_tokens only apply to arch='boc', not {self.arch!r}")
        if self.arch == "channel_vit":
            if self.max_channels <= 0:
                raise ConfigError("a channel_vit model needs max_channels > 0 (the number of channel embeddings)")
            if self.channel_names and len(self.channel_names) != self.max_channels:
                raise ConfigError(
                    f"channel_names has {len(self.channel_names)} names but max_channels={self.max_channels}"
                )
        elif self.arch == "fixed":
            if len(self.channel_names) != self.in_chans or self.max_channels:
                raise ConfigError(
                    f"a fixed-channel model needs channel_names for its {self.in_chans} input channels (got "
                    f"{list(self.channel_names)}) and no max_channels"
                )
        elif self.arch == "ca_mae":
            if self.max_channels <= 0 or self.channel_names:
                raise ConfigError("a ca_mae model needs max_channels > 0 (its position table) and no channel_names")
        elif self.max_channels or self.channel_names:
            raise ConfigError(f"max_channels/channel_names only apply to arch='channel_vit', not {self.arch!r}")

    @property
    def grid_size(self) -> int:
        """Side of the stored position-embedding grid (14 for 224 px / 16)."""
        return self.img_size // self.patch_size


def check_feature_options(n_last_blocks: Any = None, avgpool: Any = None, channel_pool: Any = None) -> None:
    """Check the feature-layout options that are given (None: not given, e.g. "the model's default").

    Args:
        n_last_blocks: L >= 0, CLS tokens of the last L blocks (0: none, only the patch means).
        avgpool: True/False, append the per-channel patch means.
        channel_pool: one of :data:`CHANNEL_POOLS`.

    Raises:
        ConfigError: a value of the wrong type or out of range, or ``n_last_blocks=0`` with ``avgpool=False``
            (no feature left).
    """
    if n_last_blocks is not None and (isinstance(n_last_blocks, bool) or not isinstance(n_last_blocks, int)
                                      or n_last_blocks < 0):
        raise ConfigError(f"n_last_blocks={n_last_blocks!r} must be a non-negative integer (0: no CLS token, only "
                          "the patch means)")
    if avgpool is not None and not isinstance(avgpool, bool):
        raise ConfigError(f"avgpool={avgpool!r} must be true or false")
    if channel_pool is not None and channel_pool not in CHANNEL_POOLS:
        raise ConfigError(f"channel_pool={channel_pool!r}; choose {' or '.join(map(repr, CHANNEL_POOLS))}")
    if n_last_blocks == 0 and avgpool is False:
        raise ConfigError("n_last_blocks=0 with avgpool=False leaves no feature; keep avgpool=True")


@dataclass(frozen=True, kw_only=True)
class FeatureSpec(DictForm):
    """Which tokens make the flat feature vector (docs/features.md): the one feature-layout spec.

    A model's default (``model.features``, saved as the ``features`` section of ``config.json``) is one; the
    layout a feature table records (:class:`dino_boc.outputs.FeatureLayout`, which adds the arch) and the
    per-run choices (:class:`FeatureOverrides`: ``EmbedOptions``, the evaluation presets) build on it.

    Attributes:
        n_last_blocks: L, CLS tokens of the last L blocks (4: the released Cell-DINO linear evaluation;
            1: the final-norm CLS that MorphEm's and CHAMMI-75's DINOv2 code use; 0: no CLS token, only the
            patch means: OpenPhenom's ``predict``).
        avgpool: append the per-channel mean of the last block's patch tokens.
        channel_pool: ``"concat"`` per-channel features, or ``"mean"`` over channels (OpenPhenom's pooled
            embedding: the mean of all patch tokens).

    Raises:
        ConfigError: see :func:`check_feature_options`.
    """

    n_last_blocks: int = 4
    avgpool: bool = True
    channel_pool: ChannelPool = "concat"

    dict_name: ClassVar[str] = "feature layout"  # to_dict / from_dict: the ``features`` section of config.json

    def __post_init__(self) -> None:
        check_feature_options(self.n_last_blocks, self.avgpool, self.channel_pool)

    def override(self: _Spec, *, n_last_blocks: int | None = None, avgpool: bool | None = None,
                 channel_pool: ChannelPool | None = None) -> _Spec:
        """This spec with each option that is not None replaced (None keeps this spec's value).

        Raises:
            ConfigError: see :func:`check_feature_options`.
        """
        given = {"n_last_blocks": n_last_blocks, "avgpool": avgpool, "channel_pool": channel_pool}
        return replace(self, **{k: v for k, v in given.items() if v is not None})


_Spec = TypeVar("_Spec", bound=FeatureSpec)

#: the former name of :class:`FeatureSpec` (a model's default feature vector), kept importable
FeatureDefaults = FeatureSpec


@dataclass(frozen=True, kw_only=True)
class FeatureOverrides:
    """Feature-layout options of one run; None keeps the model's default (``model.features``).

    Attributes:
        n_last_blocks, avgpool, channel_pool: as in :class:`FeatureSpec`, or None.

    Raises:
        ConfigError: see :func:`check_feature_options`.
    """

    n_last_blocks: int | None = None
    avgpool: bool | None = None
    channel_pool: ChannelPool | None = None

    def __post_init__(self) -> None:
        check_feature_options(self.n_last_blocks, self.avgpool, self.channel_pool)

    def resolve(self, defaults: FeatureSpec) -> FeatureSpec:
        """The run's layout: these options over ``defaults`` (the model's ``model.features``).

        Raises:
            ConfigError: the combination leaves no feature (``n_last_blocks=0`` and ``avgpool=False``).
        """
        return defaults.override(n_last_blocks=self.n_last_blocks, avgpool=self.avgpool,
                                 channel_pool=self.channel_pool)
