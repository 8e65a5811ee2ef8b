"""Column names and sizes of the flat features: one name per column, unique, in the documented order."""

from __future__ import annotations

import numpy as np
import pytest

import dino_boc
from dino_boc.features import feature_size

D, DEPTH = 64, 4


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize(("n_last_blocks", "avgpool"), [(4, True), (1, True), (2, False)])
def test_names_fit_the_features(tiny_model, rng, k, n_last_blocks, avgpool):
    img = rng.integers(0, 255, size=(k, 32, 32)).astype(np.uint8)
    feats = dino_boc.embed(img, model=tiny_model, n_last_blocks=n_last_blocks, avgpool=avgpool)
    names = dino_boc.feature_names(tiny_model, k, n_last_blocks=n_last_blocks, avgpool=avgpool)
    size = feature_size("boc", k, D, n_last_blocks=n_last_blocks, avgpool=avgpool)
    assert size == (n_last_blocks * k + (k if avgpool else 0)) * D  # L·K·D + K·D
    assert feats.shape == (size,) and len(names) == size and len(set(names)) == size


def test_each_name_points_at_its_value(tiny_model, rng):
    img = rng.integers(0, 255, size=(3, 32, 32)).astype(np.uint8)
    emb = dino_boc.embed_tokens(img, n_last_blocks=2, model=tiny_model)
    flat = dino_boc.embed(img, model=tiny_model, n_last_blocks=2)
    names = dino_boc.feature_names(tiny_model, ["DNA", "ER", "Mito"], n_last_blocks=2)
    col = dict(zip(names, flat))
    assert emb.blocks == (2, 3)
    assert names[0] == "DNA_cls2_0000" and names[D] == "ER_cls2_0000" and names[-1] == f"Mito_mean_{D - 1:04d}"
    for c, ch in enumerate(["DNA", "ER", "Mito"]):
        for j, blk in enumerate(emb.blocks):
            assert col[f"{ch}_cls{blk}_0005"] == emb.cls[0, j, c, 5]
        assert col[f"{ch}_mean_0017"] == emb.patch_mean[0, c, 17]


def test_duplicate_channel_names_fall_back_to_indices(tiny_model):
    names = dino_boc.feature_names(tiny_model, ["DNA", "DNA"], n_last_blocks=1)
    assert names[0] == "ch0_cls3_0000" and len(set(names)) == len(names)


def test_channel_mean_pooling(tiny_model, rng):
    img = rng.integers(0, 255, size=(3, 32, 32)).astype(np.uint8)
    emb = dino_boc.embed_tokens(img, n_last_blocks=1, model=tiny_model)
    pooled = dino_boc.embed(img, model=tiny_model, n_last_blocks=1, channel_pool="mean")
    want = np.concatenate([emb.cls[0, 0].mean(axis=0), emb.patch_mean[0].mean(axis=0)])
    np.testing.assert_allclose(pooled, want, atol=1e-6, rtol=0)
    names = dino_boc.feature_names(tiny_model, 3, n_last_blocks=1, channel_pool="mean")
    assert len(names) == pooled.size == feature_size("boc", 3, D, n_last_blocks=1, channel_pool="mean")


def test_parse_feature_name_inverts_feature_names():
    """Every generated column parses back to its channel, kind, block and dim; others give None."""
    from dino_boc.features import feature_names, parse_feature_name

    for arch in ("boc", "ha", "channel_vit"):
        names = feature_names(arch, ["DNA", "ER_x"], 3, n_last_blocks=2, last_block=12)
        for name in names:
            f = parse_feature_name(name)
            assert f is not None
            rebuilt = (
                f"global_cls{f.block}_{f.dim:04d}" if f.channel is None
                else f"{f.channel}_{'mean' if f.kind == 'mean' else f'cls{f.block}'}_{f.dim:04d}"
            )
            assert rebuilt == name
    assert parse_feature_name("Metadata_path") is None
    assert parse_feature_name("ER_x_cls11_0002") == ("ER_x", "cls", 11, 2)
