"""DINO HA (paper §3.2.1, App. C): per-channel CLS tokens under a hierarchical attention mask, plus a
global CLS token that reads the channel CLS tokens.

The sequence of one image is ``[CLS, CH_1, p_1,1 … p_1,N, …, CH_K, p_K,1 … p_K,N]``. A channel's CLS and
patch tokens attend only within their channel; the global CLS attends to itself and to every channel
CLS. Channel tokens therefore never see the global CLS, and the model runs them as ONE batch of ``B·K``
single-channel sequences, exactly like BoC, plus a small ``1 + K`` token attention per block for the
global CLS. ``attention="masked"`` runs the plain reference instead: the whole ``1 + K(1 + N)`` sequence
through each block with a boolean attention mask.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dino_boc.errors import InputError
from dino_boc.models.backbone import attention_qkv, run_last_blocks
from dino_boc.models.base import EmbeddingModel, TokenOutput
from dino_boc.models.config import ModelConfig
from dino_boc.preprocess.config import PreprocessConfig

__all__ = ["HierarchicalAttentionModel", "hierarchical_attention_mask", "global_cls_block"]

Attention = Literal["efficient", "masked"]


def hierarchical_attention_mask(k: int, n: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """The DINO HA attention mask over ``[CLS, CH_1, p_1…, …, CH_K, p_K…]``.

    Args:
        k: K channels.
        n: N patches per channel.
        device: where to build it.

    Returns:
        bool ``(S, S)`` with ``S = 1 + K(1 + N)``; ``True`` = the query (row) may attend to the key
        (column), the convention of ``torch.nn.functional.scaled_dot_product_attention`` and timm.
    """
    s = 1 + k * (1 + n)
    group = torch.arange(k, device=device).repeat_interleave(1 + n)  # channel of every channel token
    mask = torch.zeros(s, s, dtype=torch.bool, device=device)
    mask[1:, 1:] = group[:, None] == group[None, :]
    mask[0, 0] = True
    mask[0, 1::1 + n] = True  # the global CLS reads every channel CLS
    return mask


def global_cls_block(blk: nn.Module, g: torch.Tensor, ch_cls: torch.Tensor) -> torch.Tensor:
    """One timm ``Block`` for the global CLS alone, attending to ``[global, channel CLS 1..K]``.

    Uses the block's own ``norm1``, ``attn`` (qkv, q/k norm, head split, scale, output norm, proj),
    ``ls1``, ``drop_path1``, ``norm2``, ``mlp``, ``ls2`` and ``drop_path2``: the result is the global-CLS
    row of ``blk`` applied to the full sequence under :func:`hierarchical_attention_mask`.

    Args:
        blk: a timm ``Block`` with a standard timm ``Attention``.
        g: ``(B, 1, D)`` global CLS entering the block.
        ch_cls: ``(B, K, D)`` channel CLS tokens entering the block.

    Returns:
        ``(B, 1, D)`` global CLS leaving the block.
    """
    attn = blk.attn
    b, k, _ = ch_cls.shape
    y = blk.norm1(torch.cat([g, ch_cls], dim=1))  # (B, 1+K, D)
    q, key, v = attention_qkv(attn, y)  # (B, heads, 1+K, head_dim)
    q = q[:, :, :1]
    dropout = attn.attn_drop.p if attn.training else 0.0
    o = F.scaled_dot_product_attention(q, key, v, dropout_p=dropout, scale=attn.scale)  # (B, heads, 1, hd)
    o = attn.norm(o.transpose(1, 2).reshape(b, 1, attn.attn_dim))
    if getattr(attn, "gate", None) is not None:
        o = o * attn.gate(y[:, :1]).sigmoid()
    o = attn.proj_drop(attn.proj(o))
    g = g + blk.drop_path1(blk.ls1(o))
    return g + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(g))))


class HierarchicalAttentionModel(EmbeddingModel):
    """DINO HA: one single-channel ViT (``backbone``), a learned ``channel_cls_token`` shared by all
    channels, and the backbone's ``cls_token`` as the global CLS.

    Both kinds of CLS token take the class position embedding; patch tokens the patch positions (no
    channel embeddings), so any number of channels works at test time.

    Args:
        config: architecture; ``config.arch`` must be ``"ha"``.
        preprocess: default pre-processing.
        name: registry name, Hub id or path.
    """

    arch = "ha"

    def __init__(self, config: ModelConfig, *, preprocess: PreprocessConfig | None = None, name: str = ""):
        super().__init__(config, preprocess=preprocess, name=name)
        self.channel_cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        nn.init.normal_(self.channel_cls_token, std=1e-6)  # as timm / DINOv2 initialise cls_token

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"channel_cls_token"}

    # ---------------------------------------------------------------- tokens
    def _channel_tokens(self, x: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """``(B', 1, H, W)`` -> ``(B', 1 + N, D)``: ``[CH + pos_cls, patch + pos]`` (mask token where masked)."""
        return self.backbone.prepare_tokens(x, masks, cls_token=self.channel_cls_token)

    def _global_token(self, b: int, rows: int, cols: int) -> torch.Tensor:
        bb = self.backbone
        return bb.norm_pre(bb.pos_drop(bb.cls_token + bb.pos_embed_for(rows, cols)[:, :1])).expand(b, -1, -1)

    def forward_tokens(
        self,
        x: torch.Tensor,
        *,
        n_last_blocks: int = 1,
        masks: torch.Tensor | None = None,
        channel_ids: torch.Tensor | None = None,
        attention: Attention = "efficient",
    ) -> TokenOutput:
        """See :meth:`EmbeddingModel.forward_tokens`.

        Args:
            attention: ``"efficient"`` (channels as a ``B·K`` batch + a small global-CLS attention) or
                ``"masked"`` (the whole sequence with the hierarchical mask; slow, a reference). Both give
                the same tokens; use ``"masked"`` only to check.

        Returns:
            :class:`TokenOutput` with ``cls (B, L, K, D)``, ``global_cls (B, L, D)``, ``patch (B, K, N, D)``.

        Raises:
            InputError: bad shapes, ``channel_ids`` given, an unknown ``attention``.
        """
        if channel_ids is not None:
            raise InputError("channel_ids= only applies to Channel-ViT models; DINO HA has no channel embeddings")
        if attention not in ("efficient", "masked"):
            raise InputError(f"attention={attention!r}; choose 'efficient' or 'masked'")
        b, k, h, w = self._check_input(x, n_last_blocks, masks)
        p = self.config.patch_size
        rows, cols = h // p, w // p
        n = rows * cols
        t = self._channel_tokens(x.reshape(b * k, 1, h, w), None if masks is None else masks.reshape(b * k, n))
        g = self._global_token(b, rows, cols)
        run = self._run_efficient if attention == "efficient" else self._run_masked
        glob, cls, t = run(t, g, b, k, n_last_blocks)
        d = t.shape[-1]
        first = self.config.depth - n_last_blocks
        return TokenOutput(
            cls=torch.stack(cls, dim=1).reshape(b, n_last_blocks, k, d),
            global_cls=torch.stack(glob, dim=1).reshape(b, n_last_blocks, d),
            patch=t[:, 1:].reshape(b, k, n, d),
            blocks=tuple(range(first, self.config.depth)),
            grid=(rows, cols),
        )

    def _run_efficient(
        self, t: torch.Tensor, g: torch.Tensor, b: int, k: int, n_last: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Blocks on channel tokens ``t (B·K, 1+N, D)`` and the global CLS ``g (B, 1, D)``.

        Returns:
            Per returned block the normed global CLS ``(B, D)`` and channel CLS ``(B, K, D)``, and the
            normed last-block channel tokens ``(B·K, 1+N, D)``.
        """
        bb = self.backbone
        depth = self.config.depth
        glob: list[torch.Tensor] = []

        def step(i: int, t: torch.Tensor) -> torch.Tensor:
            nonlocal g
            g = global_cls_block(bb.blocks[i], g, t[:, 0].reshape(b, k, -1))  # reads the channel CLS entering i
            if i >= depth - n_last:
                glob.append(bb.norm(g[:, 0]))
            return bb.run_block(i, t)

        t, cls = run_last_blocks(t, n_last, depth=depth, run=step, norm=bb.norm)  # cls (B·K, L, D)
        return glob, list(cls.reshape(b, k, n_last, -1).unbind(2)), t

    def _run_masked(
        self, t: torch.Tensor, g: torch.Tensor, b: int, k: int, n_last: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """The reference: ``[CLS, CH_1, p_1…, …]`` through every block under the hierarchical mask."""
        bb = self.backbone
        depth = self.config.depth
        n1, d = t.shape[1], t.shape[2]
        seq = torch.cat([g, t.reshape(b, k * n1, d)], dim=1)
        mask = hierarchical_attention_mask(k, n1 - 1, device=seq.device)
        glob: list[torch.Tensor] = []
        cls: list[torch.Tensor] = []
        for i in range(depth):
            seq = bb.run_block(i, seq, attn_mask=mask)
            if i >= depth - n_last:
                normed = bb.norm(seq)
                glob.append(normed[:, 0])
                cls.append(normed[:, 1::n1])
        return glob, cls, bb.norm(seq[:, 1:]).reshape(b * k, n1, d)
