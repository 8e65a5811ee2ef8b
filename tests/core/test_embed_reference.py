"""dino_boc.embed against the independent reference of conftest.py (plain timm, per-channel loop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dino_boc
from dino_boc.preprocess import PreprocessConfig, prepare_image

ATOL = 1e-5  # the reference runs in fp32, so these tests pass precision="fp32" ("auto" is bf16 on some CPUs)


@pytest.mark.parametrize("k", [1, 3])
def test_features_match_per_channel_timm_at_native_size(tiny_model, reference, rng, k):
    img = rng.integers(0, 4096, size=(k, 32, 32)).astype(np.uint16)
    want = reference.features(reference.vit(tiny_model), reference.preprocess(img))
    got = dino_boc.embed(img, model=tiny_model, precision="fp32")
    assert got.dtype == np.float32 and got.shape == (4 * k * 64 + k * 64,)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("shape", "dtype", "resize", "crop"), [
    ((3, 32, 32), np.uint8, None, None),
    ((2, 45, 61), np.uint16, 36, 32),  # downscale: antialias would show here
    ((2, 20, 28), np.uint16, 40, None),  # upscale, non-square result 40 x 56
    ((1, 30, 31), np.float32, None, 40),  # crop larger than the image: zero padding
])
def test_prepare_image_matches_the_released_preprocessing(reference, rng, shape, dtype, resize, crop):
    img = (rng.random(shape) * 3000).astype(dtype)
    cfg = PreprocessConfig(resize=resize, crop=crop)
    got = prepare_image(img, cfg, 8)
    want = reference.preprocess(img, resize=resize, crop=crop)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_percentile_normalisation(rng):
    img = rng.normal(1000, 100, size=(2, 32, 32)).astype(np.float32)
    img[0, 0, 0] = 1e6  # a hot pixel, clipped away
    x = img.astype(np.float64) / 255.0
    lo = np.percentile(x, 1, axis=(1, 2), keepdims=True)
    hi = np.percentile(x, 99, axis=(1, 2), keepdims=True)
    y = np.clip((x - lo) / (hi - lo), 0, 1)
    want = (y - y.mean(axis=(1, 2), keepdims=True)) / (y.std(axis=(1, 2), keepdims=True) + 1e-7)
    got = prepare_image(img, PreprocessConfig(normalize="percentile"), 8)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=0)


def test_model_embed_is_dino_boc_embed(tiny_model, rng):
    img = rng.normal(100, 20, size=(2, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(dino_boc.embed(img, model=tiny_model), dino_boc.embed(img, model=tiny_model))


@pytest.mark.parametrize(("n_last_blocks", "avgpool"), [(1, True), (2, False), (4, False)])
def test_block_count_and_avgpool_options(tiny_model, reference, rng, n_last_blocks, avgpool):
    img = rng.integers(0, 255, size=(2, 32, 32)).astype(np.uint8)
    want = reference.features(reference.vit(tiny_model), reference.preprocess(img), n_last_blocks=n_last_blocks,
                              avgpool=avgpool)
    got = dino_boc.embed(img, model=tiny_model, n_last_blocks=n_last_blocks, avgpool=avgpool, precision="fp32")
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_resize_and_crop_of_a_non_square_uint16_image(tiny_model, reference, rng):
    # 45 x 61 -> shorter side 36 (long side int(36 * 61 / 45) = 48) -> centre crop 32
    img = rng.integers(0, 65535, size=(3, 45, 61)).astype(np.uint16)
    want = reference.features(reference.vit(tiny_model), reference.preprocess(img, resize=36, crop=32))
    got = dino_boc.embed(img, model=tiny_model, resize=36, crop=32, precision="fp32")
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_dim_16_bit_image_is_divided_by_255_before_the_epsilon(tiny_model, reference):
    # A nearly flat 16-bit channel: std/255 is ~1e-6, so the 1e-7 epsilon matters and the /255 with it.
    img = np.full((1, 32, 32), 1000, dtype=np.uint16)
    img[0, ::7, ::5] += 1
    vit = reference.vit(tiny_model)
    want = reference.features(vit, reference.preprocess(img))
    got = dino_boc.embed(img, model=tiny_model, precision="fp32")
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    without_division = reference.features(vit, reference.preprocess(img.astype(np.float64) * 255.0))
    assert np.abs(without_division - want).max() > 1e-3  # the test can tell the two apart


def test_crop_larger_than_the_image_pads_with_zeros_bottom_right(tiny_model, reference, rng):
    # 30 x 31 -> crop 40: torchvision puts (40-30)//2 = 5 rows on top, 5 below; 4 columns left, 5 right.
    img = rng.integers(1, 255, size=(2, 30, 31)).astype(np.uint8)
    padded = np.zeros((2, 40, 40), dtype=np.float64)
    padded[:, 5:35, 4:35] = img / 255.0
    x = torch.from_numpy(padded).float()
    x = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std(dim=(1, 2), keepdim=True, unbiased=False) + 1e-7)
    want = reference.features(reference.vit(tiny_model), x)  # 5 x 5 grid: interpolated position embeddings
    got = dino_boc.embed(img, model=tiny_model, crop=40, precision="fp32")
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_torch_input_equals_numpy_input(tiny_model, rng):
    img = rng.normal(50, 10, size=(2, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(dino_boc.embed(torch.from_numpy(img), model=tiny_model),
                                  dino_boc.embed(img, model=tiny_model))


def test_normalize_none_feeds_raw_values(tiny_model, reference, rng):
    img = rng.normal(0, 1, size=(2, 32, 32)).astype(np.float32)
    want = reference.features(reference.vit(tiny_model), torch.from_numpy(img))
    got = dino_boc.embed(img, model=tiny_model, normalize="none", precision="fp32")
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_forward_tokens_keeps_gradients(tiny_model, rng):
    x = torch.from_numpy(rng.normal(size=(1, 2, 32, 32)).astype(np.float32))
    out = tiny_model(x, n_last_blocks=2)
    assert out.cls.shape == (1, 2, 2, 64) and out.patch.shape == (1, 2, 16, 64) and out.blocks == (2, 3)
    out.cls.sum().backward()
    assert tiny_model.backbone.patch_embed.proj.weight.grad is not None
