"""Fixtures of the pipeline tests: a tiny seeded BoC model saved to disk (so the CLI can load it by path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dino_boc

TINY = dict(embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32)
L = 2  # n_last_blocks of the tiny model (it has 2 blocks)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """The tiny model (LayerScale gammas set to seeded values in [0.5, 1.5], so blocks matter), saved."""
    model = dino_boc.create_model("boc", seed=0, **TINY)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for blk in model.backbone.blocks:
            for ls in (blk.ls1, blk.ls2):
                ls.gamma.copy_(0.5 + torch.rand(ls.gamma.shape, generator=gen))
    return str(model.save_pretrained(tmp_path_factory.mktemp("tiny_model")))


@pytest.fixture(scope="session")
def model(model_dir):
    return dino_boc.load_model(model_dir, device="cpu")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
