"""Fine-tune a dino_boc model to classify the example crops, then score it on the held-out crops.

The task (examples/README.md, ``data/``): 64 x 64 single-channel nuclei crops from three sources
(labels ``dsb_img2d``, ``napari_nuclei``, ``mahotas_nuclear``); 164 training crops, 52 held-out crops
cut from regions disjoint from the training ones. Chance is about 33 %.

A linear head reads the last block's CLS token (averaged over channels: these crops have one channel,
but the same code takes any number). The last ``--unfreeze-last`` transformer blocks train with it,
with layer-wise learning-rate decay (block i of L gets ``lr * layer_decay ** (L - i)``), AdamW, a short
warm-up and a cosine schedule. See dino_boc/eval/finetune.py.

    python examples/finetune.py                                   # a random ViT-S/16: runs anywhere
    python examples/finetune.py --model dino-boc-vitl16 --lr 2e-4 # the paper's model, once added

The default model has RANDOM weights: the run shows the mechanics, and what a model learns from 164
crops alone; it says nothing about pre-trained features. With the paper's weights (``dino-boc weights add
FILE.pth``), a GPU and ``--unfreeze-last 0`` (head only) the same script is a linear probe through the
model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog import load_crops  # noqa: E402

import dino_boc  # noqa: E402
from dino_boc.eval import accuracy, macro_f1  # noqa: E402
from dino_boc.train.finetune import Classifier, finetune, predict, prepare_images  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="random-init-boc-vits16",
                   help="model name, folder or checkpoint (default: %(default)s, random weights)")
    p.add_argument("--unfreeze-last", type=int, default=2,
                   help="last blocks trained with the head; 0 = head only (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=15, help="default: %(default)s")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the head (default: %(default)s)")
    p.add_argument("--layer-decay", type=float, default=0.75, help="default: %(default)s")
    p.add_argument("--weight-decay", type=float, default=0.05, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    p.add_argument("--device", default=None, help="cpu or cuda (default: GPU if present)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    return p.parse_args(argv)


def load_split(split: str, model, classes: list[str] | None = None):
    """Pre-processed crops (N, 1, 64, 64) and their class codes."""
    pixels, rows = load_crops(split)
    names = [r["label"] for r in rows]
    classes = classes or sorted(set(names))
    codes = np.array([classes.index(n) for n in names])
    return prepare_images(pixels[:, None], model), codes, classes


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = dino_boc.load_model(args.model, device=device)
    train_x, train_y, classes = load_split("train", model)
    test_x, test_y, _ = load_split("heldout", model, classes)
    print(f"train {tuple(train_x.shape)}, held-out {tuple(test_x.shape)}, classes {classes}")

    clf = Classifier(model, len(classes), pool="mean", unfreeze_last=args.unfreeze_last).to(device)
    trainable = sum(p.numel() for p in clf.parameters() if p.requires_grad)
    print(f"training {trainable:,} parameters (head + last {args.unfreeze_last} blocks)")
    history = finetune(clf, train_x, train_y, epochs=args.epochs, lr=args.lr, layer_decay=args.layer_decay,
                       weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed)
    print(f"training loss: first epoch {history.loss[0]:.3f}, last epoch {history.loss[-1]:.3f}")

    pred = predict(clf, test_x)
    print(f"held-out accuracy {accuracy(test_y, pred):.3f}, macro-F1 {macro_f1(test_y, pred):.3f} "
          f"(chance {1 / len(classes):.3f})")
    for c, name in enumerate(classes):
        hit = pred[test_y == c] == c
        print(f"  {name:16s} {hit.sum():3d} / {hit.size:3d} correct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
