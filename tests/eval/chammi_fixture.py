"""A tiny CHAMMI release written by the tests: both CSVs with the real column names, tape images."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import tifffile

TASKS = ("Task_one", "Task_two", "Task_three", "Task_four")

# folder, K, channel width, height, image suffix, dtype, rows: (split, label, group)
LAYOUT = {
    "Allen": (3, 6, 5, ".ome.tiff", np.uint16, [
        *[("Train", lab, None) for lab in ("M0", "M1M2", "M3", "M0", "M1M2", "M3", "M0", "M3")],
        *[("Task_one", lab, None) for lab in ("M0", "M1M2", "M3", "M0")],
        *[("Task_two", lab, None) for lab in ("M3", "M1M2", "M0", "M0")],
    ]),
    "HPA": (4, 5, 4, ".png", np.uint8, [
        *[("Train", lab, ct) for lab, ct in [("golgi", "A"), ("mito", "B"), ("speckles", "C"), ("tubules", "A"),
                                             ("golgi", "B"), ("mito", "C"), ("speckles", "A"), ("tubules", "B")]],
        *[("Task_one", lab, "A") for lab in ("golgi", "mito", "speckles", "tubules")],
        *[("Task_two", lab, "D") for lab in ("tubules", "golgi", "mito", "speckles")],
        *[("Task_three", lab, ct) for lab, ct in [("cytosol", "A"), ("er", "A"), ("nucleoplasm", "B"),
                                                  ("cytosol", "B"), ("er", "C"), ("nucleoplasm", "C")]],
    ]),
    "CP": (5, 4, 4, ".png", np.uint16, [
        *[("Train", lab, pl) for lab, pl in [("DMSO", "P1"), ("BRD-A", "P2"), ("BRD-B", "P1"), ("BRD-C", "P2"),
                                             ("DMSO", "P2"), ("BRD-A", "P1"), ("BRD-B", "P2"), ("BRD-C", "P1"),
                                             ("DMSO", "P1"), ("BRD-A", "P2")]],
        *[("Task_one", lab, "P1") for lab in ("DMSO", "BRD-A", "BRD-B")],
        *[("Task_two", lab, "P3") for lab in ("BRD-C", "DMSO", "BRD-A")],
        *[("Task_three", lab, "P4") for lab in ("BRD-B", "BRD-C", "DMSO")],
        *[("Task_four", lab, pl) for lab, pl in [("BRD-X", "P1"), ("BRD-Y", "P1"), ("BRD-Z", "P2"),
                                                 ("BRD-X", "P2"), ("BRD-Y", "P2"), ("BRD-Z", "P1")]],
    ]),
}


def enriched_frame(folder: str, rows, *, suffix: str = ".png", channel_width: int = 4) -> pd.DataFrame:
    """The enriched_meta.csv rows of one source: rows are (split, label, group)."""
    records = []
    for i, (split, label, group) in enumerate(rows):
        rec = {"file_path": f"{folder}/crops/img_{i:03d}{suffix}", "ID": f"{folder}{i}", "Label": label,
               "train_test_split": split, "channel_width": channel_width}
        rec.update({t: split == t for t in TASKS})
        if folder == "Allen":
            rec["Structure"] = "nuclear speckles"
        elif folder == "HPA":
            rec["cell_type"] = group
        else:
            rec["Plate"] = group
            rec["source"] = "BBBC022" if split == "Task_three" else "BBBC036"
        records.append(rec)
    df = pd.DataFrame(records)
    if folder == "Allen":  # the Allen source has only two tasks
        df = df.drop(columns=["Task_three", "Task_four"])
    if folder == "HPA":
        df = df.drop(columns=["Task_four"])
    return df


def write_chammi(root: Path, seed: int = 0, *, drop_enriched_width: bool = False):
    """Write the release under ``root``; returns {file_path: channels (K, H, W)}."""
    rng = np.random.default_rng(seed)
    index, images = [], {}
    for folder, (k, cw, h, suffix, dtype, rows) in LAYOUT.items():
        df = enriched_frame(folder, rows, suffix=suffix, channel_width=cw)
        for fp in df["file_path"]:
            chans = rng.integers(0, np.iinfo(dtype).max, size=(k, h, cw), dtype=dtype)
            tape = np.concatenate(list(chans), axis=1)  # channels side by side: (H, K*W)
            path = root / fp
            path.parent.mkdir(parents=True, exist_ok=True)
            if suffix.endswith("tiff"):
                tifffile.imwrite(path, tape)
            else:
                iio.imwrite(path, tape)
            images[fp] = chans
        index.append(pd.DataFrame({"file_path": df["file_path"], "train_test_split": df["train_test_split"],
                                   "label": df["Label"], "chunk": folder, "channel_width": cw}))
        (root / folder).mkdir(parents=True, exist_ok=True)
        (df.drop(columns=["channel_width"]) if drop_enriched_width else df).to_csv(
            root / folder / "enriched_meta.csv", index=False)
    pd.concat(index).to_csv(root / "morphem70k_v2.csv", index=False)
    return images


def read_metadata_as_user(root: Path) -> pd.DataFrame:
    """What the issue calls 'the three enriched_meta.csv files concatenated in that order as read with pandas'."""
    return pd.concat([pd.read_csv(root / f / "enriched_meta.csv") for f in ("Allen", "HPA", "CP")],
                     ignore_index=True)
