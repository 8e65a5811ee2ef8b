"""The single-channel ViT shared by every dino_boc model: timm's VisionTransformer with DINOv2's
position-embedding interpolation and a mask token for iBOT.

Keys match the released DINOv2 / cell_dino checkpoints once chunked block keys are flattened
(``blocks.{chunk}.{i}.*`` -> ``blocks.{i}.*``, see :mod:`dino_boc.weights.convert`).
"""

from __future__ import annotations

import math
import re
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from dino_boc.models.config import ModelConfig

__all__ = ["ViTBackbone", "interpolate_pos_embed", "layer_id", "block_index", "run_last_blocks", "attention_qkv"]


_EMBEDDING_NAMES = frozenset(
    {"patch_embed", "pos_embed", "cls_token", "mask_token", "reg_token", "register_tokens", "channel_embed"}
)
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def block_index(name: str) -> int | None:
    """The i of the first ``blocks.<i>.`` in a parameter name, or None."""
    match = _BLOCK.search(name)
    return int(match.group(1)) if match else None


def layer_id(name: str, num_layers: int) -> int:
    """Layer of a parameter for layer-wise lr decay, from its name as DINOv2's ``get_vit_lr_decay_rate``.

    Embeddings and tokens are layer 0: ``patch_embed``, ``pos_embed``, ``mask_token``, register tokens,
    Channel-ViT's ``channel_embed`` and every ``*cls_token``; ``blocks.<i>.`` is layer ``i + 1``; the rest
    (final norm, heads) ``num_layers + 1``. DINO HA's ``channel_cls_token`` (not in the released code) is a
    learned input token like ``cls_token``, so layer 0: DINOv2 puts every token at 0 (``"cls_token" in
    name`` for a backbone) and timm's ``group_matcher`` puts extra tokens in the stem (DeiT's
    ``dist_token``). Any prefix works (``backbone.``, a student ``ModuleDict``, a classifier's ``model.``).

    Args:
        name: a parameter name from ``named_parameters()``.
        num_layers: L, the number of blocks.
    """
    if any(part in _EMBEDDING_NAMES or part.endswith("cls_token") for part in name.split(".")):
        return 0
    i = block_index(name)
    return num_layers + 1 if i is None else i + 1


def run_last_blocks(
    t: torch.Tensor, n_last_blocks: int, *, depth: int, run: Callable[[int, torch.Tensor], torch.Tensor],
    norm: nn.Module,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block loop of every model: ``run(i, t)`` for i in 0..depth-1 on tokens ``t`` ``(B, T, D)``.

    Returns:
        The final-normed tokens of the last block ``(B, T, D)`` and the final-normed class tokens (position 0)
        of the last L blocks ``(B, L, D)``; of earlier blocks only the class token is normed.
    """
    cls = []
    for i in range(depth):
        t = run(i, t)
        if i == depth - 1:
            t = norm(t)
            cls.append(t[:, 0])
        elif i >= depth - n_last_blocks:
            cls.append(norm(t[:, 0]))
    return t, torch.stack(cls, dim=1)


def attention_qkv(attn: nn.Module, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The queries, keys and values a timm ``Attention`` computes from its (already ``norm1``-ed) input.

    For code that needs part of the attention timm runs fused (DINO HA's global CLS row, attention maps).

    Args:
        attn: a timm ``Attention`` (``qkv``, ``num_heads``, ``head_dim``, ``q_norm``, ``k_norm``).
        y: ``(B, T, D)`` tokens.

    Returns:
        q, k, v, each ``(B, heads, T, head_dim)``; q and k after the block's q / k norms.
    """
    b, n, _ = y.shape
    q, k, v = attn.qkv(y).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def interpolate_pos_embed(
    pos_embed: torch.Tensor, rows: int, cols: int, *, offset: float = 0.1, antialias: bool = False
) -> torch.Tensor:
    """Resample a square grid of patch position embeddings as the released DINOv2 code does.

    Unchanged when the grid already is ``rows == cols == M``; otherwise bicubic in float32 with
    ``scale_factor=((rows + offset) / M, (cols + offset) / M)`` (a scale factor, not an output size) and
    no antialias, then cast back. With ``offset=0`` the grid is resampled to ``size=(rows, cols)``
    (DINOv2 "with registers" also sets ``antialias=True``, which equals timm's ``resample_abs_pos_embed``).

    Args:
        pos_embed: ``(1, 1 + M*M, D)``: the class position followed by the patch grid, row-major.
        rows: patch rows of the image (H / patch).
        cols: patch columns of the image (W / patch).
        offset: DINOv2's ``interpolate_offset`` (0.1).
        antialias: DINOv2's ``interpolate_antialias``.

    Returns:
        ``(1, 1 + rows*cols, D)`` in the dtype of ``pos_embed``.
    """
    n = pos_embed.shape[1] - 1
    m = int(math.isqrt(n))
    if m * m != n:
        raise ValueError(f"position embedding holds {n} patch positions, not a square grid")
    if rows == m and cols == m:
        return pos_embed
    dim = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
    if offset:
        kwargs = {"scale_factor": ((rows + offset) / m, (cols + offset) / m)}
    else:
        kwargs = {"size": (rows, cols)}
    grid = F.interpolate(grid, mode="bicubic", antialias=antialias, **kwargs)
    if grid.shape[-2:] != (rows, cols):  # pragma: no cover - guarded by the offset
        raise RuntimeError(f"interpolated grid {tuple(grid.shape[-2:])} != {(rows, cols)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
    return torch.cat([pos_embed[:, :1].float(), grid], dim=1).to(pos_embed.dtype)


class ViTBackbone(VisionTransformer):
    """A timm ``VisionTransformer`` with ``in_chans=1``, one class token, LayerScale, DINOv2
    position-embedding interpolation for any image size and a ``mask_token`` ``(1, D)``.

    With ``config.reg_tokens = R > 0`` (DINOv2 with registers) ``reg_token`` ``(1, R, D)`` follows the class
    token without a position embedding, as released; tokens are then ``[cls, reg × R, patches]``.

    Drop path: ``config.drop_path_rate`` on every block when ``config.drop_path_uniform`` (DINOv2's
    ``drop_path_uniform: true``), else timm's linear ramp ``linspace(0, rate, L)`` over the L blocks.

    ``forward_features`` / ``forward_intermediates`` are timm's and use the interpolation below, so
    every timm tool works on it. :meth:`prepare_tokens` adds masking for training.
    """

    def __init__(self, config: ModelConfig):
        super().__init__(
            img_size=config.img_size,
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            num_classes=0,
            global_pool="token",
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            init_values=config.init_values,
            class_token=True,
            reg_tokens=0,
            no_embed_class=False,
            dynamic_img_size=True,
            drop_path_rate=config.drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=config.layer_norm_eps),
        )
        if config.drop_path_uniform:
            for blk in self.blocks:
                blk.drop_path1 = DropPath(config.drop_path_rate) if config.drop_path_rate > 0 else nn.Identity()
                blk.drop_path2 = DropPath(config.drop_path_rate) if config.drop_path_rate > 0 else nn.Identity()
        self.interpolate_offset = config.interpolate_offset
        self.interpolate_antialias = config.interpolate_antialias
        self.mask_token = nn.Parameter(torch.zeros(1, config.embed_dim))
        if config.reg_tokens:
            self.reg_token = nn.Parameter(torch.zeros(1, config.reg_tokens, config.embed_dim))
            self.num_reg_tokens = config.reg_tokens
            self.num_prefix_tokens = 1 + config.reg_tokens

    def pos_embed_for(self, rows: int, cols: int) -> torch.Tensor:
        """Position embeddings ``(1, 1 + rows*cols, D)`` for a ``rows × cols`` patch grid."""
        return interpolate_pos_embed(
            self.pos_embed, rows, cols, offset=self.interpolate_offset, antialias=self.interpolate_antialias
        )

    def _pos_embed(self, x: torch.Tensor, cls_token: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, rows, cols, D) from the dynamic-size patch embedding
        b, rows, cols, d = x.shape
        cls = self.cls_token if cls_token is None else cls_token
        x = torch.cat([cls.expand(b, -1, -1), x.reshape(b, rows * cols, d)], dim=1)
        x = x + self.pos_embed_for(rows, cols)
        if self.reg_token is not None:  # registers after the class token, without position embedding
            x = torch.cat([x[:, :1], self.reg_token.expand(b, -1, -1).to(x.dtype), x[:, 1:]], dim=1)
        return self.pos_drop(x)

    def prepare_tokens(
        self, x: torch.Tensor, masks: torch.Tensor | None = None, *, cls_token: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Patchify, mask, add the class token and position embeddings.

        Args:
            x: ``(B, 1, H, W)`` pre-processed single-channel images; H, W multiples of the patch.
            masks: optional bool ``(B, N)``; True replaces that patch embedding by ``mask_token``.
            cls_token: ``(1, 1, D)`` to use instead of ``cls_token`` (DINO HA's channel CLS); it takes the
                class position embedding too.

        Returns:
            ``(B, 1 + R + N, D)`` tokens: class token, R register tokens (usually 0), patches.
        """
        p = self.patch_embed(x)  # (B, rows, cols, D)
        if masks is not None:
            b, rows, cols, d = p.shape
            m = masks.reshape(b, rows, cols, 1)
            p = torch.where(m, self.mask_token.to(p.dtype).reshape(1, 1, 1, d), p)
        return self.norm_pre(self._pos_embed(p, cls_token))

    def run_block(self, i: int, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Block ``i`` on ``x`` (gradient-checkpointed in training when enabled)."""
        blk = self.blocks[i]
        if self.grad_checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            if attn_mask is None:
                return checkpoint(blk, x, use_reentrant=False)
            return checkpoint(blk, x, attn_mask=attn_mask, use_reentrant=False)
        return blk(x) if attn_mask is None else blk(x, attn_mask=attn_mask)

    def run_last_blocks(self, t: torch.Tensor, n_last_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`run_last_blocks` with this backbone's blocks (checkpointed when enabled) and final norm."""
        return run_last_blocks(t, n_last_blocks, depth=len(self.blocks), run=self.run_block, norm=self.norm)

    def no_weight_decay(self) -> set[str]:
        """timm convention, used by the ``"timm"`` weight-decay rule only (DINOv2 decays these tokens)."""
        return {"pos_embed", "cls_token", "mask_token"} | ({"reg_token"} if self.reg_token is not None else set())
