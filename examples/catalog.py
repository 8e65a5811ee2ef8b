"""List and load the example images and crops shipped in ``examples/``.

Needs only numpy and tifffile. Run ``python examples/catalog.py`` to print the catalogue, or
import it (``sys.path.insert(0, "examples")``) and call ``list_images`` / ``load_crops``.
Provenance and licences: ``examples/README.md`` and ``examples/LICENSES.md``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile

EXAMPLES_DIR = Path(__file__).resolve().parent
IMAGES_DIR = EXAMPLES_DIR / "images"
DATA_DIR = EXAMPLES_DIR / "data"


@dataclass(frozen=True)
class ExampleImage:
    """One example TIFF: its path, channel names (ImageJ ``Labels``), shape and dtype."""

    path: Path
    channel_names: tuple[str, ...]
    shape: tuple[int, int, int]  # (K, H, W)
    dtype: str
    info: str  # provenance text stored in the file (ImageJ ``Info``)

    def read(self) -> np.ndarray:
        """Return the pixels as (K, H, W) in the stored dtype (also for K = 1)."""
        return tifffile.imread(self.path).reshape(self.shape)


def list_images() -> list[ExampleImage]:
    """The example images in ``examples/images``, sorted by file name.

    Returns:
        one ExampleImage per ``*.tif``; ``shape`` is (K, H, W) even for K = 1, whose file
        holds a plain (H, W) page and a single label string.
    """
    images = []
    for path in sorted(IMAGES_DIR.glob("*.tif")):
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            meta = tif.imagej_metadata or {}
            labels = meta.get("Labels", ())
            names = (labels,) if isinstance(labels, str) else tuple(labels)
            height, width = series.shape[-2:]
            images.append(ExampleImage(path, names, (len(names), height, width),
                                       series.dtype.name, meta.get("Info", "")))
    return images


def load_crops(split: Literal["train", "heldout"]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Load the single-channel crops of one split.

    Args:
        split: ``"train"`` or ``"heldout"`` (spatially disjoint regions of the same sources).

    Returns:
        pixels (N, 64, 64) uint16 (uint8 sources are stored as uint16 with the same values; the
        ``source_dtype`` column says which), and N rows of ``crops_<split>.csv`` (keys index,
        label, package, source, source_dtype, plane, y, x, height, width), in pixel order.

    Raises:
        ValueError: if ``split`` is not one of the two names.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split={split!r}; expected 'train' or 'heldout'")
    pixels = tifffile.imread(DATA_DIR / f"crops_{split}.tif")
    with open(DATA_DIR / f"crops_{split}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return pixels, rows


if __name__ == "__main__":
    for image in list_images():
        print(f"{image.path.name}: {image.shape} {image.dtype} channels={list(image.channel_names)}")
    for split in ("train", "heldout"):
        pixels, rows = load_crops(split)
        labels = sorted({r["label"] for r in rows})
        counts = {label: sum(r["label"] == label for r in rows) for label in labels}
        print(f"crops_{split}: {pixels.shape} {pixels.dtype} {counts}")
