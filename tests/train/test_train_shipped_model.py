"""The shipped demo model: its card, its file hash, and its held-out k-NN claim (recomputed here)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import dino_boc
from dino_boc.models import build_model
from dino_boc.weights.load import file_sha256
from dino_boc.weights.registry import packaged_dir

NAME = "dino-boc-vitt16-nuclei-demo"
DATA = Path(__file__).resolve().parents[2] / "examples" / "data"


def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    pixels = tifffile.imread(DATA / f"crops_{split}.tif")[:, None]
    with open(DATA / f"crops_{split}.csv", newline="") as fh:
        return pixels, np.array([row["label"] for row in csv.DictReader(fh)])


def _knn5(model) -> float:
    """Cosine 5-NN accuracy of held-out crops against the training crops, written out with numpy."""
    (xtr, ytr), (xte, yte) = _split("train"), _split("heldout")
    ftr = dino_boc.embed(xtr, model=model, n_last_blocks=1)
    fte = dino_boc.embed(xte, model=model, n_last_blocks=1)
    ftr /= np.linalg.norm(ftr, axis=1, keepdims=True)
    fte /= np.linalg.norm(fte, axis=1, keepdims=True)
    nearest = np.argsort(-(fte @ ftr.T), axis=1, kind="stable")[:, :5]
    pred = []
    for row in ytr[nearest]:
        labels, counts = np.unique(row, return_counts=True)
        pred.append(labels[np.argmax(counts)])
    return float((np.array(pred) == yte).mean())


def test_shipped_model_card_and_files():
    folder = packaged_dir() / NAME
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert (folder / "model.safetensors").stat().st_size < 5 * 2**20
    model = dino_boc.load_model(NAME, device="cpu")
    assert model.pretrained and model.config.arch == "boc" and model.config.patch_size == 16
    card = model.card
    for key in ("summary", "licence", "data_terms", "trained_on", "training", "evaluation", "good_for", "not_good_for"):
        assert card[key], key
    assert card["trained_on"]["crops"] == 164 and sum(card["trained_on"]["sources"].values()) == 164
    assert card["sha256"] == file_sha256(folder / "model.safetensors") == model.weights_sha256
    assert dino_boc.weights.registry.REGISTRY[NAME].licence.startswith("Apache-2.0")


def test_shipped_model_beats_random_init_on_held_out_crops():
    model = dino_boc.load_model(NAME, device="cpu")
    trained = _knn5(model)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        twin = build_model(model.config, preprocess=model.preprocess).eval()
    random_init = _knn5(twin)
    claimed = model.card["evaluation"]["knn_heldout"]["n_last_blocks=1,k=5"]
    assert trained == pytest.approx(claimed["trained"], abs=2 / 52)  # a tie or two may flip on another CPU
    assert trained - random_init >= 0.1
