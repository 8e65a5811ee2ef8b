"""The interface every dino_boc model implements and its token dataclass.

Saving in the Hub format is :mod:`dino_boc.models.hub_format`; the methods here call it.

Nothing here calls up into ``embed`` or ``features``: use :func:`dino_boc.embed`, :func:`dino_boc.embed_tokens`
and :func:`dino_boc.feature_names` with ``model=`` / a model argument.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from dino_boc.errors import InputError
from dino_boc.models import hub_format
from dino_boc.models.backbone import ViTBackbone, layer_id
from dino_boc.models.config import FeatureDefaults, ModelConfig
from dino_boc.models.hub_format import PretrainedCfg
from dino_boc.preprocess.config import PreprocessConfig

__all__ = ["TokenOutput", "EmbeddingModel"]

logger = logging.getLogger(__name__)


@dataclass
class TokenOutput:
    """Final-normed tokens of the returned blocks of one forward pass.

    Attributes:
        cls: ``(B, L, K, D)`` per-channel CLS tokens of the L returned blocks (BoC, HA); None for Channel-ViT.
        global_cls: ``(B, L, D)`` global CLS tokens (HA, Channel-ViT); None for BoC.
        patch: ``(B, K, N, D)`` patch tokens of the last returned block.
        blocks: indices of the returned blocks, in order.
        grid: ``(rows, cols)`` of the patch grid, ``N = rows * cols``.
    """

    cls: torch.Tensor | None
    global_cls: torch.Tensor | None
    patch: torch.Tensor
    blocks: tuple[int, ...]
    grid: tuple[int, int]


class EmbeddingModel(nn.Module):
    """Base class of :class:`BagOfChannelsModel`, :class:`HierarchicalAttentionModel` and
    :class:`ChannelViTModel`.

    Subclasses implement :meth:`forward_tokens`. Saving in the Hub format is shared; embedding images and
    naming features are the functions :func:`dino_boc.embed`, :func:`dino_boc.embed_tokens` and
    :func:`dino_boc.feature_names`, which take a model.

    Attributes:
        config: the architecture.
        preprocess: the pre-processing the model expects by default.
        pretrained_cfg: what the loader attached, kept together (:class:`~dino_boc.models.hub_format.PretrainedCfg`:
            name, pretrained, source, revision, weights file hash, card, licence).
        name: a registry name, Hub id or path; what outputs record (``pretrained_cfg.name``).
        pretrained: False for random weights; logged and recorded wherever features are written.
        weights_sha256: SHA-256 of the loaded weights FILE (``model.safetensors`` or source checkpoint), if any.
        card: free-form model-card fields saved in ``config.json``.
        features: the default feature vector (``embed(n_last_blocks=None, avgpool=None)``).
    """

    config: ModelConfig
    #: the ``ModelConfig.arch`` a subclass implements
    arch: str = ""

    def __init__(self, config: ModelConfig, *, preprocess: PreprocessConfig | None = None, name: str = ""):
        if config.arch != self.arch:
            raise ValueError(f"{type(self).__name__} needs arch={self.arch!r}, got {config.arch!r}")
        super().__init__()
        self.backbone = self.build_backbone(config)
        self.config = config
        self.preprocess = preprocess or PreprocessConfig()
        self.pretrained_cfg = PretrainedCfg(name=name or f"untrained-{config.arch}")
        self.features = FeatureDefaults()

    @staticmethod
    def build_backbone(config: ModelConfig) -> nn.Module:
        """The token encoder; :class:`ViTBackbone` unless a family has its own (OpenPhenom)."""
        return ViTBackbone(config)

    # ---------------------------------------------------------------- to implement
    def forward_tokens(
        self,
        x: torch.Tensor,
        *,
        n_last_blocks: int = 1,
        masks: torch.Tensor | None = None,
        channel_ids: torch.Tensor | None = None,
    ) -> TokenOutput:
        """Encode pre-processed images.

        Args:
            x: ``(B, K, H, W)`` float, already normalised; H and W multiples of the patch size.
            n_last_blocks: L, how many last blocks to return (final norm applied to each).
            masks: optional bool ``(B, K, N)``; True replaces that patch by the mask token (iBOT).
            channel_ids: Channel-ViT only: ``(K,)`` or ``(B, K)`` channel-embedding ids.

        Returns:
            A :class:`TokenOutput`.
        """
        raise NotImplementedError

    def forward(self, x: torch.Tensor, **kwargs: Any) -> TokenOutput:
        """Same as :meth:`forward_tokens`; gradients flow (use for fine-tuning)."""
        return self.forward_tokens(x, **kwargs)

    # ---------------------------------------------------------------- shared checks
    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def depth(self) -> int:
        return self.config.depth

    def _check_input(self, x: torch.Tensor, n_last_blocks: int,
                     masks: torch.Tensor | None = None) -> tuple[int, int, int, int]:
        """Check the arguments of :meth:`forward_tokens` shared by every family.

        Args:
            x: ``(B, K, H, W)`` images, H and W positive multiples of the patch size.
            n_last_blocks: L in ``1..depth``.
            masks: None or ``(B, K, N)`` with N = (H / patch) · (W / patch).

        Returns:
            ``(B, K, H, W)``.

        Raises:
            InputError: another shape, no channel, a size that is not a multiple of the patch, L out of range.
        """
        if x.ndim != 4:
            raise InputError(f"expected a (B, K, H, W) tensor, got shape {tuple(x.shape)}")
        b, k, h, w = x.shape
        p = self.config.patch_size
        if k == 0:
            raise InputError("the input has 0 channels; expected (B, K, H, W) with K >= 1")
        if h < p or w < p or h % p or w % p:
            raise InputError(
                f"image size {h}x{w} is not a positive multiple of the patch size {p}; "
                f"pass crop= (e.g. crop={max(p, (min(h, w) // p) * p)}) or resize="
            )
        if not 1 <= n_last_blocks <= self.config.depth:
            raise InputError(
                f"n_last_blocks={n_last_blocks} but the model has {self.config.depth} blocks; "
                f"choose 1..{self.config.depth}"
            )
        n = (h // p) * (w // p)
        if masks is not None and tuple(masks.shape) != (b, k, n):
            raise InputError(f"masks has shape {tuple(masks.shape)}; expected (B, K, N) = {(b, k, n)}")
        return b, k, h, w

    def resolve_channel_ids(self, channel_ids: Sequence[int | str] | None, k: int) -> torch.Tensor | None:
        """Channel-embedding ids for K input channels; only Channel-ViT has them.

        Raises:
            InputError: ``channel_ids`` given to a model without channel embeddings.
        """
        if channel_ids is not None:
            raise InputError(
                f"channel_ids= only applies to Channel-ViT models; this is a {self.config.arch!r} model, which "
                "encodes channels without channel identities — use channels= to select and order channels"
            )
        return None

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward to save memory (fine-tuning, training)."""
        self.backbone.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay (tokens and position embeddings)."""
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()}

    def layer_id(self, param_name: str) -> int:
        """Layer index for layer-wise lr decay (:func:`dino_boc.models.backbone.layer_id`): embeddings and
        tokens 0, block i -> i + 1, the rest depth + 1."""
        return layer_id(param_name, self.config.depth)

    # ---------------------------------------------------------------- Hub format (dino_boc.models.hub_format)
    def config_dict(self) -> dict[str, Any]:
        """The content of ``config.json``: :func:`dino_boc.models.hub_format.config_dict`."""
        return hub_format.config_dict(self)

    def save_pretrained(self, save_directory: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Path:
        """Write the Hub format atomically: :func:`dino_boc.models.hub_format.save_pretrained`."""
        return hub_format.save_pretrained(self, save_directory, dtype=dtype)

    def push_to_hub(
        self, repo_id: str, *, token: str | None = None, private: bool = False, revision: str | None = None,
        commit_message: str = "Upload dino_boc model",
    ) -> str:
        """Upload the Hub format to a Hub model repo: :func:`dino_boc.models.hub_format.push_to_hub`."""
        return hub_format.push_to_hub(self, repo_id, token=token, private=private, revision=revision,
                                      commit_message=commit_message)

    # ---------------------------------------------------------------- what the loader attached (pretrained_cfg)
    @property
    def name(self) -> str:
        """``pretrained_cfg.name``: registry name, Hub id or path; what outputs record."""
        return self.pretrained_cfg.name

    @name.setter
    def name(self, value: str) -> None:
        self.pretrained_cfg.name = value

    @property
    def pretrained(self) -> bool:
        """``pretrained_cfg.pretrained``: False for random weights."""
        return self.pretrained_cfg.pretrained

    @pretrained.setter
    def pretrained(self, value: bool) -> None:
        self.pretrained_cfg.pretrained = bool(value)

    @property
    def weights_sha256(self) -> str | None:
        """``pretrained_cfg.weights_sha256``: SHA-256 of the weights FILE as loaded (None if made in memory)."""
        return self.pretrained_cfg.weights_sha256

    @weights_sha256.setter
    def weights_sha256(self, value: str | None) -> None:
        self.pretrained_cfg.weights_sha256 = value

    @property
    def card(self) -> dict[str, Any]:
        """``pretrained_cfg.card``: free-form model-card fields saved in ``config.json``."""
        return self.pretrained_cfg.card

    @card.setter
    def card(self, value: dict[str, Any]) -> None:
        self.pretrained_cfg.card = dict(value)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, arch={self.config.arch!r}, pretrained={self.pretrained}"
