"""Channel order and selection: BoC features are per channel, so a permutation permutes the blocks."""

from __future__ import annotations

import numpy as np
import pytest

import dino_boc
from dino_boc.errors import ChannelError

K, D, L = 4, 64, 4


@pytest.fixture
def img(rng):
    return rng.integers(0, 4096, size=(K, 32, 32)).astype(np.uint16)


def test_permutation_permutes_the_per_channel_blocks(tiny_model, img):
    perm = [2, 0, 3, 1]
    base = dino_boc.embed_tokens(img, model=tiny_model)
    permuted = dino_boc.embed_tokens(img[perm], model=tiny_model)
    assert base.cls.shape == (1, L, K, D) and base.patch_mean.shape == (1, K, D)
    np.testing.assert_allclose(permuted.cls, base.cls[:, :, perm], atol=1e-6, rtol=0)
    np.testing.assert_allclose(permuted.patch_mean, base.patch_mean[:, perm], atol=1e-6, rtol=0)


def test_permutation_of_the_flat_features(tiny_model, img):
    perm = [3, 1, 0, 2]
    flat = dino_boc.embed(img, model=tiny_model)
    cls = flat[: L * K * D].reshape(L, K, D)
    mean = flat[L * K * D:].reshape(K, D)
    want = np.concatenate([cls[:, perm].reshape(-1), mean[perm].reshape(-1)])
    np.testing.assert_allclose(dino_boc.embed(img[perm], model=tiny_model), want, atol=1e-6, rtol=0)


def test_channels_by_index_select_and_order(tiny_model, img):
    np.testing.assert_array_equal(
        dino_boc.embed(img, [2, 0], model=tiny_model), dino_boc.embed(img[[2, 0]], model=tiny_model)
    )
    np.testing.assert_array_equal(
        dino_boc.embed(img, [-1], model=tiny_model), dino_boc.embed(img[[3]], model=tiny_model)
    )


def test_channels_apply_to_every_image_of_a_batch(tiny_model, rng):
    batch = rng.integers(0, 255, size=(2, 3, 32, 32)).astype(np.uint8)
    np.testing.assert_array_equal(
        dino_boc.embed(batch, [1, 2], model=tiny_model), dino_boc.embed(batch[:, [1, 2]], model=tiny_model)
    )


def test_channel_names_without_names_in_the_input_is_an_error(tiny_model, img):
    with pytest.raises(ChannelError, match="no channel names"):
        dino_boc.embed(img, ["DNA"], model=tiny_model)


def test_embedding_channel_names_default_to_indices(tiny_model, img):
    assert dino_boc.embed_tokens(img, [3, 1], model=tiny_model).channel_names == ["ch0", "ch1"]


def _read_image():
    try:
        from dino_boc.io import read_image
    except ImportError:
        pytest.skip("dino_boc.io.read_image is not importable in this checkout")
    return read_image


def test_channels_by_name_from_an_imagej_tiff(tiny_model, img, tmp_path):
    read_image = _read_image()
    import tifffile

    path = tmp_path / "cells.tif"
    names = ["DNA", "ER", "RNA", "Mito"]
    tifffile.imwrite(path, img, imagej=True, metadata={"axes": "CYX", "Labels": names})
    arr, got_names = read_image(path)
    assert got_names == names
    np.testing.assert_array_equal(arr, img)
    by_name = dino_boc.embed(str(path), ["Mito", "DNA"], model=tiny_model)
    np.testing.assert_array_equal(by_name, dino_boc.embed(img[[3, 0]], model=tiny_model))
    emb = dino_boc.embed_tokens(str(path), ["Mito", "DNA"], model=tiny_model)
    assert emb.channel_names == ["Mito", "DNA"]
    with pytest.raises(ChannelError, match="'Actin'"):
        dino_boc.embed(str(path), ["Actin"], model=tiny_model)
