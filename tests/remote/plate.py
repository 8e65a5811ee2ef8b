"""A tiny Cell Painting Gallery-like plate on disk: per-channel TIFFs (LZW), a LoadData table, OME-Zarr, PNG, npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

CHANNELS = ["DNA", "ER", "Mito"]
WELLS = [("A01", 1), ("A01", 2), ("B02", 1)]
PREFIX = "cpg0000-test/source_1/images/batch1"


def write_plate(root: Path, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``root/<PREFIX>/images/plate1/*.tiff`` (one LZW TIFF per channel and site) and
    ``root/<PREFIX>/load_data_csv/plate1/load_data.csv.gz`` with relative PathName_/FileName_ columns.

    Returns:
        the (K, H, W) array of each site, keyed ``<well>-<site>``.
    """
    rng = np.random.default_rng(seed)
    images = root / PREFIX / "images" / "plate1"
    images.mkdir(parents=True, exist_ok=True)
    tables = root / PREFIX / "load_data_csv" / "plate1"
    tables.mkdir(parents=True, exist_ok=True)
    rows, arrays = [], {}
    for well, site in WELLS:
        stack = rng.integers(0, 4096, size=(len(CHANNELS), 32, 32), dtype=np.uint16)
        arrays[f"{well}-{site}"] = stack
        row = {"Metadata_Source": "source_1", "Metadata_Batch": "batch1", "Metadata_Plate": "plate1",
               "Metadata_Well": well, "Metadata_Site": site}
        for k, ch in enumerate(CHANNELS):
            name = f"r{well}f{site:02d}-ch{k + 1}.tiff"
            tifffile.imwrite(images / name, stack[k], compression="lzw")
            row[f"FileName_Orig{ch}"] = name
            row[f"PathName_Orig{ch}"] = "../../images/plate1"
        rows.append(row)
    pd.DataFrame(rows).to_csv(tables / "load_data.csv.gz", index=False)
    return arrays
