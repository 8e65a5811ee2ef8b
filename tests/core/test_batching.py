"""Batch invariance: an image gives the same features alone, in a batch, in a mixed list, in any chunking."""

from __future__ import annotations

import numpy as np
import pytest

import dino_boc

ATOL = 1e-5


@pytest.fixture
def images(rng):
    return rng.integers(0, 4096, size=(3, 3, 32, 32)).astype(np.uint16)


def test_alone_and_inside_a_batch(tiny_model, images):
    batch = dino_boc.embed(images, model=tiny_model)
    assert batch.shape == (3, 4 * 3 * 64 + 3 * 64)
    for i in range(3):
        np.testing.assert_allclose(dino_boc.embed(images[i], model=tiny_model), batch[i], atol=ATOL, rtol=0)


def test_inside_a_list_with_other_sizes_and_channel_counts(tiny_model, images, rng):
    other = rng.integers(0, 255, size=(5, 48, 40)).astype(np.uint8)
    one_channel = rng.normal(size=(1, 32, 32)).astype(np.float32)
    out = dino_boc.embed([images[1], other, images, one_channel], model=tiny_model)
    assert [o.shape for o in out] == [(960,), (5 * 5 * 64,), (3, 960), (5 * 64,)]
    np.testing.assert_allclose(out[0], dino_boc.embed(images[1], model=tiny_model), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out[1], dino_boc.embed(other, model=tiny_model), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out[2], dino_boc.embed(images, model=tiny_model), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out[3], dino_boc.embed(one_channel, model=tiny_model), atol=ATOL, rtol=0)


def test_embed_tokens_of_a_list_is_one_embedding_per_entry(tiny_model, images, rng):
    other = rng.integers(0, 255, size=(2, 32, 32)).astype(np.uint8)
    out = dino_boc.embed_tokens([images, other], model=tiny_model)
    assert out[0].cls.shape == (3, 4, 3, 64) and out[1].cls.shape == (1, 4, 2, 64)
    assert out[0].blocks == (0, 1, 2, 3)


@pytest.mark.parametrize("batch_size", [1, 2, 4, 7])
def test_batch_size_chunking_does_not_change_results(tiny_model, images, batch_size):
    want = dino_boc.embed(images, model=tiny_model)
    got = dino_boc.embed(images, model=tiny_model, batch_size=batch_size)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_a_model_name_is_loaded_once_and_reused(monkeypatch, rng):
    import importlib

    from dino_boc.models.config import ModelConfig
    from dino_boc.weights.registry import REGISTRY, RegistryEntry

    embed_module = importlib.import_module("dino_boc.embed")  # the module; dino_boc.embed is the function
    monkeypatch.setattr(importlib.import_module("dino_boc.weights.resolve"), "_CACHE", {})  # the cache lives there
    config = ModelConfig(embed_dim=64, depth=4, num_heads=2, patch_size=8, img_size=32)
    monkeypatch.setitem(REGISTRY, "tiny-random", RegistryEntry(name="tiny-random", description="test",
                                                               source="random", config=config))
    first = embed_module.default_model("tiny-random", device="cpu")
    assert embed_module.default_model("tiny-random", device="cpu") is first
    assert first.pretrained is False and first.name == "tiny-random"
    img = rng.integers(0, 255, size=(2, 32, 32)).astype(np.uint8)
    np.testing.assert_array_equal(dino_boc.embed(img, model="tiny-random"), dino_boc.embed(img, model=first))


def test_compile_option_gives_the_same_features():
    """embed(compile=True) runs the model through torch.compile and changes no value."""
    import numpy as np

    import dino_boc

    model = dino_boc.create_model("boc", embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32, seed=0)
    img = np.random.default_rng(1).integers(0, 255, (2, 32, 32)).astype(np.uint8)
    ref = dino_boc.embed(img, n_last_blocks=2, model=model)
    out = dino_boc.embed(img, n_last_blocks=2, compile=True, model=model)
    assert getattr(model, "_compiled_call_impl", None) is not None
    np.testing.assert_allclose(out, ref, atol=1e-5)
