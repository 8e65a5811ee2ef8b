"""Helpers of the pipeline tests: small image files of every kind, and reading tables back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from dino_boc.features import feature_names

META = ["Metadata_index", "Metadata_path", "Metadata_channels"]


def write_cyx(path, data, names=None) -> Path:
    """An ImageJ CYX TIFF with channel labels, as examples/images has (or plain CYX without names)."""
    path = Path(path)
    if names is None:
        tifffile.imwrite(path, data, photometric="minisblack", metadata={"axes": "CYX"})
    else:
        tifffile.imwrite(path, data, imagej=True, metadata={"axes": "CYX", "Labels": list(names)})
    return path


def image(rng, k, h=32, w=32, dtype=np.uint16, high=4096):
    return rng.integers(0, high, size=(k, h, w)).astype(dtype)


def feature_block(df: pd.DataFrame, row: int, names) -> np.ndarray:
    """The feature columns of ``names`` (channel names or K) of one row, in layout order."""
    cols = feature_names("boc", names, 64, n_last_blocks=2, last_block=2)
    return df.iloc[row][cols].to_numpy(dtype=np.float32)


def features_only(df: pd.DataFrame) -> pd.DataFrame:
    return df[[c for c in df.columns if not c.startswith("Metadata_")]]
