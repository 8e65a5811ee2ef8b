"""One size rule for ``embed()`` and the pipeline/CLI: with no crop, a side that is not a multiple of the
patch is centre-cropped to the largest multiple (torchvision's offsets), and the run records it."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

import dino_boc
from dino_boc.cli import main

from .conftest import L
from .helpers import feature_block, image, write_cyx


def _centre(a: np.ndarray, patch: int) -> np.ndarray:
    """The independent crop: the largest multiple of the patch, offsets as torchvision's center_crop."""
    h, w = a.shape[-2:]
    hh, ww = h - h % patch, w - w % patch
    top, left = int(round((h - hh) / 2.0)), int(round((w - ww) / 2.0))
    return a[:, top:top + hh, left:left + ww]


@pytest.mark.parametrize("shape", [(36, 43), (40, 33), (47, 47)])
def test_embed_and_cli_centre_crop_alike(tmp_path, rng, model, model_dir, shape, caplog):
    arr = image(rng, 2, *shape)
    with caplog.at_level(logging.INFO, logger="dino_boc.embed"):
        got = dino_boc.embed(arr, model=model, n_last_blocks=L)
    assert "centre-cropped to a multiple of the 8-pixel patch" in caplog.text
    want = dino_boc.embed(np.ascontiguousarray(_centre(arr, 8)), model=model, n_last_blocks=L)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    write_cyx(tmp_path / "a.tif", arr, ["DNA", "ER"])
    assert main(["embed", str(tmp_path / "a.tif"), "-o", str(tmp_path / "f.parquet"), "--model", model_dir,
                 "--n-last-blocks", str(L), "--quiet"]) == 0
    df = pd.read_parquet(tmp_path / "f.parquet")
    np.testing.assert_allclose(feature_block(df, 0, ["DNA", "ER"]), got, atol=1e-5, rtol=0)
    prov = dino_boc.outputs.writers.read_provenance(tmp_path / "f.parquet")
    assert prov.options["fit_to_patch"] == "center-crop"


def test_embed_channel_names(rng, model):
    arr = image(rng, 2)
    emb = dino_boc.embed_tokens(arr, model=model, n_last_blocks=L, channel_names="DNA,ER")
    assert emb.channel_names == ["DNA", "ER"]
    with pytest.raises(dino_boc.errors.ChannelError, match="1 names"):
        dino_boc.embed(arr, model=model, n_last_blocks=L, channel_names=["DNA"])
