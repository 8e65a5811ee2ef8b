"""Models: one file per family, one interface (:class:`EmbeddingModel`)."""

from __future__ import annotations

import importlib
from typing import Any

from dino_boc.errors import ConfigError
from dino_boc.models.base import EmbeddingModel, TokenOutput
from dino_boc.models.boc import BagOfChannelsModel
from dino_boc.models.config import ARCHS, FeatureDefaults, FeatureOverrides, FeatureSpec, ModelConfig
from dino_boc.preprocess.config import PreprocessConfig

__all__ = [
    "ModelConfig", "FeatureSpec", "FeatureDefaults", "FeatureOverrides", "EmbeddingModel", "TokenOutput", "BagOfChannelsModel",
    "HierarchicalAttentionModel", "ChannelViTModel", "create_model", "build_model", "model_class",
]

_CLASSES = {
    "boc": ("dino_boc.models.boc", "BagOfChannelsModel"),
    "ha": ("dino_boc.models.hierarchical", "HierarchicalAttentionModel"),
    "channel_vit": ("dino_boc.models.channel_vit", "ChannelViTModel"),
    "fixed": ("dino_boc.models.fixed", "FixedChannelModel"),
    "ca_mae": ("dino_boc.models.ca_mae", "ChannelAgnosticMAEModel"),
}


def model_class(arch: str) -> type[EmbeddingModel]:
    """The class implementing ``arch`` (``"boc"``, ``"ha"``, ``"channel_vit"``, ``"fixed"`` or ``"ca_mae"``)."""
    if arch not in _CLASSES:
        raise ConfigError(f"arch={arch!r} is unknown; choose one of {ARCHS}")
    module, cls = _CLASSES[arch]
    return getattr(importlib.import_module(module), cls)


def build_model(
    config: ModelConfig, *, preprocess: PreprocessConfig | None = None, name: str = ""
) -> EmbeddingModel:
    """An untrained model of ``config`` (in eval mode)."""
    return model_class(config.arch)(config, preprocess=preprocess, name=name).eval()


def create_model(arch: str = "boc", *, seed: int | None = None, **config: Any) -> EmbeddingModel:
    """Build an untrained model of any size.

    Args:
        arch: ``"boc"``, ``"ha"`` or ``"channel_vit"``.
        seed: if given, the weights are initialised from ``torch.manual_seed(seed)`` (reproducible).
        **config: any :class:`ModelConfig` field (``embed_dim``, ``depth``, ``num_heads``, ``patch_size``,
            ``img_size``, ``max_channels``, ...) plus ``preprocess`` (a :class:`PreprocessConfig`) and
            ``name``.

    Returns:
        The model in eval mode, ``pretrained=False``.

    Example:
        >>> model = create_model("boc", embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32)
    """
    import torch

    preprocess = config.pop("preprocess", None)
    name = config.pop("name", "")
    cfg = ModelConfig(arch=arch, **config)
    if seed is None:
        return build_model(cfg, preprocess=preprocess, name=name)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(cfg, preprocess=preprocess, name=name)


def __getattr__(name: str):  # lazy access to the joint-encoding families
    if name in ("HierarchicalAttentionModel", "ChannelViTModel"):
        arch = "ha" if name == "HierarchicalAttentionModel" else "channel_vit"
        return model_class(arch)
    raise AttributeError(name)
