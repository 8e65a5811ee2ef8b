"""Does training learn? k-NN accuracy of exported features, trained vs the same model at random init.

Makes synthetic multi-channel fluorescence-like images (uint16, 3 channels, 64 x 64) whose class sets
the shape and texture of every channel: 0 = a few large round blobs (nuclei-like), 1 = many small
puncta, 2 = thin oriented filaments. Position, count, size, orientation, intensity, blur and noise
vary per image and channel. Trains the ``tiny_cpu`` BoC model (64-d, 4 blocks, patch 8, 32 px crops)
on the unlabelled training images with ``dino_boc.train`` (CPU, a few minutes), exports the teacher,
and prints held-out k-NN accuracy (cosine, k = 5, features of ``dino_boc.embed``) for the random
initialisation and the trained model.

    python benchmarks/knn_learning.py                   # ~3-5 minutes on 2 CPU cores
    python benchmarks/knn_learning.py --epochs 20 --n-train 600
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import dino_boc
from dino_boc.eval.knn import knn
from dino_boc.models import build_model
from dino_boc.train.engine import train
from dino_boc.train.export import export_run
from dino_boc.train.sources import ArraySource

CLASSES = ("blobs", "puncta", "filaments")


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with a truncated kernel (numpy only)."""
    r = max(1, int(3 * sigma))
    x = np.arange(-r, r + 1)
    k = np.exp(-(x**2) / (2 * sigma**2))
    k /= k.sum()
    out = np.apply_along_axis(lambda v: np.convolve(np.pad(v, r, mode="reflect"), k, mode="valid"), 0, img)
    return np.apply_along_axis(lambda v: np.convolve(np.pad(v, r, mode="reflect"), k, mode="valid"), 1, out)


def _channel(cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    img = np.zeros((size, size), np.float32)
    if cls == 0:  # a few large round blobs
        for _ in range(rng.integers(2, 5)):
            cy, cx, rad = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(6, 11)
            img += rng.uniform(0.6, 1.0) * (((yy - cy) ** 2 + (xx - cx) ** 2) < rad**2)
        img = _blur(img, rng.uniform(1.0, 2.0))
    elif cls == 1:  # many small puncta
        for _ in range(rng.integers(25, 60)):
            cy, cx = rng.uniform(0, size), rng.uniform(0, size)
            img += rng.uniform(0.5, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(0.7, 1.4) ** 2))
    else:  # thin filaments along a dominant orientation
        theta = rng.uniform(0, np.pi)
        for _ in range(rng.integers(4, 9)):
            t = theta + rng.normal(0, 0.15)
            offset = rng.uniform(-size / 2, size / 2)
            d = np.abs((xx - size / 2) * np.sin(t) - (yy - size / 2) * np.cos(t) - offset)
            img += rng.uniform(0.5, 1.0) * np.exp(-(d**2) / (2 * rng.uniform(0.6, 1.2) ** 2))
    img = img * rng.uniform(0.4, 1.0) + rng.uniform(0.02, 0.1) + rng.normal(0, rng.uniform(0.01, 0.04), img.shape)
    return np.clip(img * rng.uniform(1500, 4000), 0, 65535).astype(np.uint16)


def make_images(n: int, *, channels: int = 3, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, channels, size, size)`` uint16 and their class labels ``(n,)`` (balanced)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    images = np.stack([np.stack([_channel(int(c), size, rng) for _ in range(channels)]) for c in labels])
    return images, labels


def knn_accuracy(model, x_train, y_train, x_test, y_test, *, k: int = 5) -> float:
    opts = {"model": model, "n_last_blocks": 1, "avgpool": True, "batch_size": 64}
    f_train = dino_boc.embed(x_train, **opts)
    f_test = dino_boc.embed(x_test, **opts)
    return float((knn(f_train, y_train, f_test, k=k, metric="cosine", device="cpu") == y_test).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-test", type=int, default=150)
    p.add_argument("--epochs", type=float, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    p.add_argument("overrides", nargs="*", help="extra config overrides key=value")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x_train, y_train = make_images(args.n_train, seed=args.seed)
    x_test, y_test = make_images(args.n_test, seed=args.seed + 1)
    overrides = [f"optim.epochs={args.epochs}", f"train.seed={args.seed}", f"train.num_threads={args.threads}",
                 "train.progress=false", "train.checkpoint_every=100000", *args.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.out or tmp) / "run"
        t0 = time.time()
        result = train("tiny_cpu", overrides, output_dir=run, sources=[ArraySource(x_train, name="synthetic")])
        minutes = (time.time() - t0) / 60
        model = dino_boc.load_model(export_run(run, Path(tmp) / "model"), device="cpu")
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            random_init = build_model(model.config, preprocess=model.preprocess).eval()
        acc_random = knn_accuracy(random_init, x_train, y_train, x_test, y_test)
        acc_trained = knn_accuracy(model, x_train, y_train, x_test, y_test)
    speed = float(np.median([h["images_per_s"] for h in result.history[3:]]))
    print(json.dumps({"iterations": result.iterations, "minutes": round(minutes, 2), "images_per_s": round(speed, 1),
                      "final_loss": round(result.history[-1]["loss/total"], 4)}))
    print(f"k-NN accuracy (k=5, cosine, {args.n_test} held-out images, chance {1 / len(CLASSES):.3f}):")
    print(f"  random init: {acc_random:.3f}")
    print(f"  trained:     {acc_trained:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
