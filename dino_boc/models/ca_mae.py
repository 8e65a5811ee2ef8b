"""OpenPhenom (recursionpharma/OpenPhenom): the channel-agnostic MAE ViT-S/16 encoder, written from its
published modeling code (maes_microscopy ``vit.py`` / ``mae_modules.py``; a copy of ``huggingface_mae.py`` is in
CaicedoLab/CHAMMI-75 ``benchmarks/JUMPCP/openphenom_chtc/``).

* One ``Conv2d(1, D, p, p)`` projects every channel; the tokens of channel 0 (row-major) come first, then
  channel 1, ... (``torch.stack(..., dim=2).flatten(2)``): one sequence of ``1 + K·N`` tokens.
* Fixed 2-D sin-cos positions, the same for every channel, held for up to ``max_channels`` (11) channels; the
  first ``1 + K·N`` rows are added (the class row is zero).
* timm blocks ``ParallelScalingBlock`` with ``qk_norm``, no qkv bias, LayerScale; ``global_pool="avg"`` with
  ``fc_norm=None`` makes timm's final ``norm`` an Identity, so ``forward_features`` (what ``predict`` uses) has
  no final norm, and neither have these tokens.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import ParallelScalingBlock, VisionTransformer
from torch import nn

from dino_boc.errors import InputError
from dino_boc.models.backbone import run_last_blocks
from dino_boc.models.base import EmbeddingModel, TokenOutput
from dino_boc.models.config import ModelConfig

__all__ = ["ChannelAgnosticMAEModel", "sincos_pos_embed"]


def sincos_pos_embed(dim: int, length: int, *, modalities: int, scale: float = 10000.0) -> torch.Tensor:
    """OpenPhenom's ``generate_2d_sincos_pos_embeddings``: ``(1, 1 + modalities·length², dim)``.

    Per position ``[sin(h·w_i), cos(h·w_i), sin(w·w_i), cos(w·w_i)]`` with ``w_i = scale^(-i / (dim/4))``,
    rows in row-major order, repeated per modality, after a zero class row.
    """
    pos = torch.arange(length, dtype=torch.float32)
    hh, ww = torch.meshgrid(pos, pos, indexing="ij")
    q = dim // 4
    freq = 1.0 / (scale ** (torch.arange(q, dtype=torch.float32) / q))
    h, w = torch.outer(hh.flatten(), freq), torch.outer(ww.flatten(), freq)
    table = torch.cat([h.sin(), h.cos(), w.sin(), w.cos()], dim=1)[None].repeat(1, modalities, 1)
    return torch.cat([torch.zeros(1, 1, dim), table], dim=1)


class ChannelAgnosticMAEModel(EmbeddingModel):
    """OpenPhenom's encoder (``config.arch == "ca_mae"``): K ≤ ``max_channels`` channels in one sequence.

    ``forward_tokens`` gives ``global_cls (B, L, D)`` and ``patch (B, K, N, D)``; the default feature
    (``model.features``: no CLS, patch means pooled over channels) is ``predict()``'s pooled embedding, and
    ``channel_pool="concat"`` its channel-wise form (``return_channelwise_embeddings=True``).
    """

    arch = "ca_mae"

    @staticmethod
    def build_backbone(config: ModelConfig) -> nn.Module:
        vit = VisionTransformer(
            img_size=config.img_size, patch_size=config.patch_size, in_chans=1, num_classes=0,
            global_pool="avg", fc_norm=None, class_token=True, embed_dim=config.embed_dim, depth=config.depth,
            num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, qkv_bias=config.qkv_bias, qk_norm=True,
            init_values=config.init_values, block_fn=ParallelScalingBlock,
            norm_layer=partial(nn.LayerNorm, eps=config.layer_norm_eps),
        )
        grid = config.img_size // config.patch_size
        vit.pos_embed = nn.Parameter(sincos_pos_embed(config.embed_dim, grid, modalities=config.max_channels),
                                     requires_grad=False)
        return vit

    def forward_tokens(
        self,
        x: torch.Tensor,
        *,
        n_last_blocks: int = 1,
        masks: torch.Tensor | None = None,
        channel_ids: torch.Tensor | None = None,
    ) -> TokenOutput:
        """See :meth:`EmbeddingModel.forward_tokens`.

        Raises:
            InputError: more than ``max_channels`` channels, an image that is not ``img_size`` square (its
                positions and ``tokens_per_channel`` are fixed), masks or channel ids.
        """
        if channel_ids is not None or masks is not None:
            raise InputError("OpenPhenom takes neither channel_ids nor masks; it is channel-agnostic")
        b, k, h, w = self._check_input(x, n_last_blocks)
        size = self.config.img_size
        if k > self.config.max_channels or (h, w) != (size, size):
            raise InputError(
                f"OpenPhenom takes up to {self.config.max_channels} channels of {size}x{size} pixels, got "
                f"{k} of {h}x{w}; keep its recipe (resize={size}) or pass resize={size}"
            )
        vit = self.backbone
        g = size // self.config.patch_size
        t = vit.patch_embed.proj(x.reshape(b * k, 1, h, w)).reshape(b, k, -1, g * g)  # (B, K, D, N)
        t = t.permute(0, 1, 3, 2).reshape(b, k * g * g, -1)  # channel-major, row-major within a channel
        t = torch.cat([vit.cls_token.expand(b, -1, -1), t], dim=1) + vit.pos_embed[:, : 1 + k * g * g]
        t = vit.norm_pre(vit.pos_drop(t))
        depth = self.config.depth
        # vit.norm is an Identity in OpenPhenom (see the module docstring)
        t, cls = run_last_blocks(t, n_last_blocks, depth=depth, run=lambda i, x: vit.blocks[i](x), norm=vit.norm)
        patch = t[:, 1:].reshape(b, k, g * g, t.shape[-1])
        return TokenOutput(cls=None, global_cls=cls, patch=patch,
                           blocks=tuple(range(depth - n_last_blocks, depth)), grid=(g, g))

    def no_weight_decay(self) -> set[str]:
        return {"backbone.cls_token", "backbone.pos_embed"}
