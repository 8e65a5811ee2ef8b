"""Position embeddings at any size, as the released DINOv2 code computes them (formula in conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.layers import resample_abs_pos_embed

import dino_boc
from dino_boc.models.backbone import interpolate_pos_embed


@pytest.mark.parametrize(("rows", "cols"), [(6, 5), (5, 6), (3, 3), (14, 14), (4, 7)])
def test_interpolation_matches_the_released_formula(tiny_model, reference, rows, cols):
    pe = tiny_model.backbone.pos_embed.detach()
    got = tiny_model.backbone.pos_embed_for(rows, cols)
    assert got.shape == (1, 1 + rows * cols, 64)
    torch.testing.assert_close(got, reference.pos_embed(pe, rows, cols), atol=0, rtol=0)


def test_native_grid_is_unchanged(tiny_model):
    pe = tiny_model.backbone.pos_embed
    torch.testing.assert_close(tiny_model.backbone.pos_embed_for(4, 4), pe, atol=0, rtol=0)


def test_half_precision_is_interpolated_in_float32(tiny_model, reference):
    pe = tiny_model.backbone.pos_embed.detach().to(torch.bfloat16)
    got = interpolate_pos_embed(pe, 6, 5)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, reference.pos_embed(pe, 6, 5), atol=0, rtol=0)


def test_features_at_a_non_native_size_match_the_reference(tiny_model, reference, rng):
    # 48 x 40 pixels with a 32 px native size: a 6 x 5 grid from the stored 4 x 4 grid
    img = rng.integers(0, 255, size=(2, 48, 40)).astype(np.uint8)
    vit = reference.vit(tiny_model)
    want = reference.features(vit, reference.preprocess(img))
    got = dino_boc.embed(img, model=tiny_model, precision="fp32")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_timm_default_resampling_would_differ(tiny_model, reference):
    # The offset scale factor is what the released model saw; timm's own size-based resampling is not it,
    # so the tests above can tell the two apart.
    pe = tiny_model.backbone.pos_embed.detach()
    timm_pe = resample_abs_pos_embed(pe, (6, 5), (4, 4), num_prefix_tokens=1, interpolation="bicubic",
                                     antialias=False)
    assert (timm_pe - reference.pos_embed(pe, 6, 5)).abs().max() > 1e-4
