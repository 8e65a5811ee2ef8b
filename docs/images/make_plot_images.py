"""Regenerate the pictures of docs/plots.md from the example data (CPU, about a minute).

Run from the repository root: ``python docs/images/make_plot_images.py``. The model is
``dino-boc-vitt16-nuclei-demo``, the small demo model shipped in the package (trained on CPU on the example
crops; see its model card in docs/models.md).
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import tifffile  # noqa: E402

import dino_boc  # noqa: E402
from dino_boc import plot  # noqa: E402
import dino_boc

MODEL = "dino-boc-vitt16-nuclei-demo"
OUT = Path("docs/images")
IMAGE = Path("examples/images/mixed_4ch.tif")
DPI = 80


def crops_table(model) -> pd.DataFrame:
    """Features of every example crop (both splits), with Metadata_label and Metadata_split."""
    frames = []
    for split in ("train", "heldout"):
        pixels = tifffile.imread(f"examples/data/crops_{split}.tif")  # (N, 64, 64)
        with open(f"examples/data/crops_{split}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        feats = dino_boc.embed(pixels[:, None], model=model, n_last_blocks=1)
        meta = pd.DataFrame({"Metadata_label": [r["label"] for r in rows], "Metadata_split": split})
        frames.append(pd.concat([meta, pd.DataFrame(feats, columns=dino_boc.feature_names(model, 1, n_last_blocks=1))], axis=1))
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    model = dino_boc.load_model(MODEL)
    OUT.mkdir(parents=True, exist_ok=True)
    fig = plot.channels(IMAGE)  # noisy pixels compress poorly: a lower resolution keeps the PNG small
    fig.savefig(OUT / "plot_channels.png", dpi=DPI - 16, bbox_inches="tight", facecolor="white")
    fig = plot.patch_maps(IMAGE, model=model, channels=["dsb_img2d", "nuclei_z34"])
    fig.savefig(OUT / "plot_patch_maps.png", dpi=DPI, bbox_inches="tight", facecolor="white")
    table = crops_table(model)
    for method in ("pca", "umap"):
        fig = plot.embedding(table, "Metadata_label", method=method)
        fig.savefig(OUT / f"plot_embedding_{method}.png", dpi=DPI + 20, bbox_inches="tight", facecolor="white")
    for p in sorted(OUT.glob("plot_*.png")):
        print(f"{p}: {p.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
