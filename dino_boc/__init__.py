"""dino_boc: channel-invariant features for fluorescence microscopy with DINO Bag of Channels.

>>> import dino_boc
>>> feats = dino_boc.embed(img)            # img: (K, H, W), any K, any order

Public API: :func:`load_model`, :func:`create_model`, :func:`embed`, :func:`embed_tokens`,
:func:`feature_names`, :func:`embed_dataset`, :func:`list_models`, :class:`ModelConfig`, :class:`PreprocessConfig`,
:class:`BagOfChannelsModel`, :class:`HierarchicalAttentionModel`, :class:`ChannelViTModel`, and
``dino_boc.io.read_image``. ``dino_boc.train`` and ``dino_boc.eval`` are imported explicitly.

The names are imported on first use (PEP 562), so that ``import dino_boc.cli`` (``dino-boc --help``) loads
neither torch nor timm; ``dino_boc.embed`` is always the function, never the module of that name.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from dino_boc._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from dino_boc.embed import embed, embed_tokens
    from dino_boc.features import Embedding
    from dino_boc.features import model_feature_names as feature_names
    from dino_boc.models import (
        BagOfChannelsModel, ChannelViTModel, EmbeddingModel, HierarchicalAttentionModel, ModelConfig, create_model,
    )
    from dino_boc.pipeline import embed_dataset
    from dino_boc.preprocess.config import PreprocessConfig
    from dino_boc.weights import add_weights, list_models, load_model

__all__ = [
    "__version__", "load_model", "create_model", "embed", "embed_tokens", "embed_dataset", "list_models",
    "add_weights", "feature_names", "Embedding", "ModelConfig", "PreprocessConfig", "EmbeddingModel",
    "BagOfChannelsModel", "HierarchicalAttentionModel", "ChannelViTModel",
]

#: public name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    "embed": ("dino_boc.embed", "embed"),
    "embed_tokens": ("dino_boc.embed", "embed_tokens"),
    "feature_names": ("dino_boc.features", "model_feature_names"),
    "Embedding": ("dino_boc.features", "Embedding"),
    "load_model": ("dino_boc.weights", "load_model"),
    "list_models": ("dino_boc.weights", "list_models"),
    "add_weights": ("dino_boc.weights", "add_weights"),
    "create_model": ("dino_boc.models", "create_model"),
    "ModelConfig": ("dino_boc.models", "ModelConfig"),
    "EmbeddingModel": ("dino_boc.models", "EmbeddingModel"),
    "BagOfChannelsModel": ("dino_boc.models", "BagOfChannelsModel"),
    "HierarchicalAttentionModel": ("dino_boc.models", "HierarchicalAttentionModel"),
    "ChannelViTModel": ("dino_boc.models", "ChannelViTModel"),
    "PreprocessConfig": ("dino_boc.preprocess.config", "PreprocessConfig"),
    "embed_dataset": ("dino_boc.pipeline", "embed_dataset"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dino_boc' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps ``dino_boc.embed`` the function when the submodule ``dino_boc.embed`` is imported (the import
    system sets a package attribute per loaded submodule)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "embed" and isinstance(value, types.ModuleType):
            value = value.embed
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
