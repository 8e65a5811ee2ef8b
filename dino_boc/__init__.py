"""dino_boc: channel-invariant features for fluorescence microscopy with DINO Bag of Channels.

>>> import dino_boc
>>> feats = dino_boc.embed(img)            # img: (K, H, W), any K, any order

Public API: :func:`load_model`, :func:`create_model`, :func:`embed`, :func:`embed_tokens`,
:func:`feature_names`, :func:`embed_dataset`, :func:`list_models`, :class:`ModelConfig`, :class:`PreprocessConfig`,
:class:`BagOfChannelsModel`, :class:`HierarchicalAttentionModel`, :class:`ChannelViTModel`, and
``dino_boc.io.read_image``. ``dino_boc.train`` and ``dino_boc.eval`` are imported explicitly.
"""

from __future__ import annotations

from dino_boc._version import __version__
from dino_boc.embed import embed, embed_tokens
from dino_boc.features import Embedding
from dino_boc.features import model_feature_names as feature_names
from dino_boc.models import BagOfChannelsModel, EmbeddingModel, ModelConfig, create_model
from dino_boc.preprocess.config import PreprocessConfig
from dino_boc.weights import add_weights, list_models, load_model

__all__ = [
    "__version__", "load_model", "create_model", "embed", "embed_tokens", "embed_dataset", "list_models",
    "add_weights", "feature_names", "Embedding", "ModelConfig", "PreprocessConfig", "EmbeddingModel", "BagOfChannelsModel",
    "HierarchicalAttentionModel", "ChannelViTModel",
]


def __getattr__(name: str):
    if name in ("HierarchicalAttentionModel", "ChannelViTModel"):
        from dino_boc import models

        return getattr(models, name)
    if name == "embed_dataset":
        from dino_boc.pipeline import embed_dataset

        return embed_dataset
    raise AttributeError(f"module 'dino_boc' has no attribute {name!r}")
