"""Fixtures of the core tests: a tiny seeded BoC model and an independent reference computation.

The reference is written here from plain timm, torchvision and torch, never from dino_boc: a timm
``VisionTransformer`` (in_chans=1) holding the model's backbone weights, the released pre-processing
(``x / 255``, torchvision resize + centre crop, per-channel self-normalisation), a Python loop over
channels, and the released ``create_linear_input`` concatenation (CLS of the last L blocks, block-major
then channel, then the per-channel mean of the last block's patch tokens).
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.transforms import InterpolationMode

import dino_boc
from core.active_blocks import with_active_blocks

TINY = dict(embed_dim=64, depth=4, num_heads=2, patch_size=8, img_size=32)


@pytest.fixture
def tiny_model():
    """Seeded ViT with D=64, 4 blocks, 2 heads, 8 px patches, 32 px native size (grid M=4)."""
    return with_active_blocks(dino_boc.create_model("boc", seed=0, **TINY))


def reference_vit(model) -> VisionTransformer:
    """A plain timm ViT with the model's backbone weights (the mask token is training-only)."""
    vit = VisionTransformer(
        img_size=TINY["img_size"], patch_size=TINY["patch_size"], in_chans=1, embed_dim=TINY["embed_dim"],
        depth=TINY["depth"], num_heads=TINY["num_heads"], init_values=1e-5, num_classes=0, global_pool="token",
        norm_layer=partial(nn.LayerNorm, eps=1e-6), dynamic_img_size=True,
    )
    state = {k: v for k, v in model.backbone.state_dict().items() if k != "mask_token"}
    vit.load_state_dict(state, strict=True)
    return vit.eval()


def reference_preprocess(img: np.ndarray, *, resize: int | None = None, crop: int | None = None) -> torch.Tensor:
    """Released pre-processing of a (K, H, W) array: /255, resize, centre crop, (x-mean)/(std+1e-7)."""
    x = torch.from_numpy(np.asarray(img).astype(np.float64)).float() / 255.0
    if resize is not None:
        x = TF.resize(x, [resize], interpolation=InterpolationMode.BICUBIC, antialias=False)
    if crop is not None:
        x = TF.center_crop(x, [crop, crop])
    out = []
    for plane in x:  # per channel, over H and W
        out.append((plane - plane.mean()) / (plane.std(unbiased=False) + 1e-7))
    return torch.stack(out)


def released_pos_embed(pos_embed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """DINOv2's ``interpolate_pos_encoding`` written out for a ``rows x cols`` patch grid.

    (DINOv2 names the image height ``w`` and the width ``h``; the first scale factor goes with rows.)
    """
    n = pos_embed.shape[1] - 1
    m = int(round(n ** 0.5))
    if rows == m and cols == m:
        return pos_embed
    pe = pos_embed.float()
    dim = pe.shape[-1]
    grid = pe[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / m, (cols + 0.1) / m), mode="bicubic", antialias=False)
    assert grid.shape[-2:] == (rows, cols)  # test-internal sanity check of the formula
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
    return torch.cat([pe[:, :1], grid], dim=1).to(pos_embed.dtype)


@torch.no_grad()
def reference_tokens(vit: VisionTransformer, plane: torch.Tensor, n_last_blocks: int):
    """Per-block final-normed (cls (L, D), patches (N, D)) of one (H, W) channel with the released
    position embeddings: timm's ``forward_intermediates`` at the native size, by hand elsewhere."""
    h, w = plane.shape
    p = TINY["patch_size"]
    if (h, w) == (TINY["img_size"],) * 2:
        out = vit.forward_intermediates(
            plane[None, None], indices=n_last_blocks, norm=True, return_prefix_tokens=True, output_fmt="NLC",
            intermediates_only=True,
        )
        return [(pre[0, 0], sp[0]) for sp, pre in out]
    conv = F.conv2d(plane[None, None], vit.patch_embed.proj.weight, vit.patch_embed.proj.bias, stride=p)
    tokens = conv.flatten(2).transpose(1, 2)  # (1, N, D), row-major
    tokens = torch.cat([vit.cls_token, tokens], dim=1) + released_pos_embed(vit.pos_embed, h // p, w // p)
    kept = []
    for i, blk in enumerate(vit.blocks):
        tokens = blk(tokens)
        if i >= len(vit.blocks) - n_last_blocks:
            normed = vit.norm(tokens)
            kept.append((normed[0, 0], normed[0, 1:]))
    return kept


def reference_features(vit: VisionTransformer, x: torch.Tensor, *, n_last_blocks: int = 4,
                       avgpool: bool = True) -> np.ndarray:
    """The documented flat features of one pre-processed (K, H, W) image, one channel at a time."""
    per_channel = [reference_tokens(vit, x[c], n_last_blocks) for c in range(x.shape[0])]
    parts = []
    for j in range(n_last_blocks):  # block-major ...
        for c in range(x.shape[0]):  # ... then channel
            parts.append(per_channel[c][j][0])
    if avgpool:
        parts += [per_channel[c][-1][1].mean(dim=0) for c in range(x.shape[0])]
    return torch.cat(parts).numpy()


@pytest.fixture
def reference():
    """The independent reference computation (functions above) as one namespace."""
    return SimpleNamespace(
        vit=reference_vit, preprocess=reference_preprocess, features=reference_features,
        tokens=reference_tokens, pos_embed=released_pos_embed,
    )


@pytest.fixture
def rng():
    return np.random.default_rng(0)
