"""Label images (masks) by file name: cellpose's ``X_cp_masks.png`` next to ``X.tif``, ``X_masks.tif``, ...

A label image is matched to its image by file stem: the image ``plate1/A01_f1.ome.tif`` takes the label
image whose name, without its image suffix, is ``A01_f1`` or ``A01_f1`` followed by one of
:data:`MASK_SUFFIXES`. A folder scanned for images leaves out files named like label images (they are
integers per cell, not intensities) and says so; pass them as masks instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from dino_boc.io.formats import SUPPORTED_SUFFIXES

__all__ = ["MASK_SUFFIXES", "image_key", "mask_key", "is_label_name"]

MASK_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label", "_seg", "_segmentation")


def image_key(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``a.ome.tif`` -> ``a``)."""
    name = Path(path).name
    low = name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def mask_key(path: str | os.PathLike) -> str:
    """:func:`image_key` without a trailing mask suffix (``a_cp_masks.png`` -> ``a``)."""
    key = image_key(path)
    for suffix in MASK_SUFFIXES:
        if key.lower().endswith(suffix):
            return key[: -len(suffix)]
    return key


def is_label_name(path: str | os.PathLike) -> bool:
    """True when the file is named like a label image (its stem ends in one of :data:`MASK_SUFFIXES`)."""
    return mask_key(path) != image_key(path)
