"""--tile: a grid of tiles covering the field, tokens averaged per channel over tiles, then the usual layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

import dino_boc
from dino_boc.errors import ConfigError
from dino_boc.preprocess.tiles import tile_grid

from .conftest import L
from .helpers import feature_block, image, write_cyx


def test_grid_covers_the_image_with_the_first_and_last_tile_at_the_edges():
    assert tile_grid(40, 56, 32) == [(0, 0), (0, 24), (8, 0), (8, 24)]
    assert tile_grid(32, 32, 32) == [(0, 0)]
    assert tile_grid(100, 20, 32) == [(0, 0), (23, 0), (45, 0), (68, 0)]  # round(linspace(0, 68, 4))


def mean_tokens_features(model, tiles):
    """Independent: embed_tokens of every tile, mean of cls and patch_mean over tiles, released layout."""
    embs = [dino_boc.embed_tokens(t, n_last_blocks=L, model=model) for t in tiles]
    cls = np.mean([e.cls[0] for e in embs], axis=0)  # (L, K, D)
    pm = np.mean([e.patch_mean[0] for e in embs], axis=0)  # (K, D)
    return np.concatenate([cls[j, c] for j in range(L) for c in range(cls.shape[1])] + list(pm))


def test_tiled_row_is_the_mean_of_per_tile_tokens(tmp_path, rng, model):
    data = image(rng, 3, 40, 56)
    write_cyx(tmp_path / "big.tif", data, ["DNA", "ER", "RNA"])
    df = dino_boc.embed_dataset(tmp_path / "big.tif", model=model, n_last_blocks=L, tile=32, progress=False)
    assert len(df) == 1
    tiles = [data[:, y:y + 32, x:x + 32] for y, x in [(0, 0), (0, 24), (8, 0), (8, 24)]]
    np.testing.assert_allclose(feature_block(df, 0, ["DNA", "ER", "RNA"]), mean_tokens_features(model, tiles),
                               atol=1e-5, rtol=0)
    assert df.attrs["provenance"]["tiling"] == {"size": 32, "reduce": "mean", "grid": "cover"}


def test_a_side_shorter_than_the_tile_is_zero_padded_as_a_centre_crop(tmp_path, rng, model):
    data = image(rng, 1, 24, 40)
    write_cyx(tmp_path / "short.tif", data)
    df = dino_boc.embed_dataset(tmp_path / "short.tif", model=model, n_last_blocks=L, tile=32, progress=False)
    tiles = [TF.center_crop(torch.from_numpy(data[:, :, x:x + 32].astype(np.int32)), [32, 32]).numpy() for x in (0, 8)]
    np.testing.assert_allclose(feature_block(df, 0, 1), mean_tokens_features(model, tiles), atol=1e-5, rtol=0)


def test_tile_not_a_multiple_of_the_patch_or_with_masks_is_refused(tmp_path, rng, model):
    write_cyx(tmp_path / "x.tif", image(rng, 1))
    with pytest.raises(ConfigError, match="multiple"):
        dino_boc.embed_dataset(tmp_path / "x.tif", model=model, n_last_blocks=L, tile=30, progress=False)
    with pytest.raises(ConfigError, match="cannot be combined"):
        dino_boc.embed_dataset(tmp_path / "x.tif", model=model, n_last_blocks=L, tile=32, masks=tmp_path,
                               progress=False)
