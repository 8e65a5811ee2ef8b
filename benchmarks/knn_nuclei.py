"""k-NN accuracy of a model on the held-out real nuclei crops, against the same architecture at random init.

References: the 164 crops of ``examples/data/crops_train.tif``; queries: the 52 crops of
``crops_heldout.tif`` (spatially disjoint regions of the same 3 sources); label = source (3 classes,
chance 33-38 %). Features: ``dino_boc.embed`` with the model's preprocessing, CLS of the last
``--blocks`` blocks + patch mean; cosine k-NN (``dino_boc.eval.knn``).

    python benchmarks/knn_nuclei.py dino-boc-vitt16-nuclei-demo          # a registry name or a folder
    python benchmarks/knn_nuclei.py runs/vitt16_nuclei_demo --run        # newest checkpoint of a run
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import tifffile
import torch

import dino_boc
from dino_boc.eval.knn import knn
from dino_boc.models import build_model

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Crops ``(N, 1, 64, 64)`` uint16 and their labels ``(N,)``."""
    pixels = tifffile.imread(DATA / f"crops_{split}.tif")
    with open(DATA / f"crops_{split}.csv", newline="") as fh:
        labels = np.array([row["label"] for row in csv.DictReader(fh)])
    return pixels[:, None], labels


def knn_accuracy(model, *, blocks: int = 1, k: int = 1, avgpool: bool = True) -> float:
    """Held-out k-NN accuracy (cosine) of ``model``'s features."""
    xtr, ytr = load_split("train")
    xte, yte = load_split("heldout")
    opts = {"model": model, "n_last_blocks": blocks, "avgpool": avgpool, "batch_size": 64}
    ftr = dino_boc.embed(xtr, **opts)
    fte = dino_boc.embed(xte, **opts)
    pred = knn(ftr, ytr, fte, k=k, metric="cosine", device="cpu")
    return float((pred == yte).mean())


def random_twin(model, seed: int = 0):
    """The same architecture and preprocessing, randomly initialised (seeded)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        twin = build_model(model.config, preprocess=model.preprocess, name="random-init")
    return twin.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="registry name, model folder, or run folder with --run")
    p.add_argument("--run", action="store_true", help="MODEL is a training run: use its newest checkpoint's teacher")
    p.add_argument("--blocks", type=int, default=1, help="n_last_blocks of the features (default 1)")
    p.add_argument("--k", type=int, nargs="+", default=[1, 5], help="neighbours (default 1 5)")
    p.add_argument("--seeds", type=int, default=3, help="random-init seeds to average (default 3)")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.run:
        from dino_boc.train.export import model_from_checkpoint

        model, state = model_from_checkpoint(args.model)
        print(f"run {args.model}: iteration {state['iteration']}")
    else:
        model = dino_boc.load_model(args.model, device="cpu")
    for k in args.k:
        trained = knn_accuracy(model, blocks=args.blocks, k=k)
        rand = [knn_accuracy(random_twin(model, s), blocks=args.blocks, k=k) for s in range(args.seeds)]
        print(f"k={k} n_last_blocks={args.blocks}: trained {trained:.3f}  random init {np.mean(rand):.3f} "
              f"(seeds {', '.join(f'{r:.3f}' for r in rand)})  chance {12 / 52:.3f}-{20 / 52:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
