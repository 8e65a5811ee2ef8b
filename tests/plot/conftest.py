"""Fixtures for the figure tests: a tiny seeded BoC model, small images and a feature table."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

import dino_boc

CHANNEL_NAMES = ["DNA", "nuclei_z26", "Mito"]  # an underscore in a channel label on purpose


@pytest.fixture(scope="session")
def tiny_model():
    return dino_boc.create_model("boc", embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32, seed=0)


@pytest.fixture
def image() -> np.ndarray:
    """(3, 32, 32) uint16 with blobs, different per channel."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    out = np.empty((3, 32, 32), dtype=np.uint16)
    for k, (cy, cx) in enumerate([(8, 8), (20, 12), (16, 26)]):
        blob = 3000 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)
        out[k] = (blob + rng.integers(0, 200, size=(32, 32))).astype(np.uint16)
    return out


@pytest.fixture(scope="session")
def feature_table(tiny_model) -> pd.DataFrame:
    """12 rows: Metadata_group (3 categories), Metadata_dose (float), then the model's feature columns."""
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(12, 3, 32, 32, generator=g) * 255
    imgs[4:8, 0] *= 3  # groups differ in one channel's intensity pattern
    imgs[8:, 1] = imgs[8:, 1].sort(dim=-1).values
    feats = dino_boc.embed(imgs.numpy(), model=tiny_model, n_last_blocks=2)
    names = dino_boc.feature_names(tiny_model, CHANNEL_NAMES, n_last_blocks=2)
    meta = pd.DataFrame({
        "Metadata_group": ["a"] * 4 + ["b"] * 4 + ["c"] * 4,
        "Metadata_dose": np.linspace(0.0, 1.0, 12),
    })
    return pd.concat([meta, pd.DataFrame(feats, columns=names)], axis=1)
