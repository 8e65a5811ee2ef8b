"""Helpers of the output tests: a fake corpus of embedded inputs and an independent expected table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dino_boc.outputs.provenance import FeatureLayout, Provenance

CHANNELS = ["DNA", "RNA", "ER", "AGP", "Mito"]
D = 2  # features per channel in the fake layout


def make_provenance(**changes: Any) -> Provenance:
    fields: dict[str, Any] = dict(
        model_name="tiny-boc",
        state_dict_sha256="ab" * 32,
        pretrained=False,
        preprocessing={"normalize": "self", "resize": None, "crop": 32, "scale": 255.0, "eps": 1e-7},
        feature_layout=FeatureLayout(arch="boc", n_last_blocks=1, avgpool=False),
        tiling=None,
        options={"dims": None},
    )
    fields.update(changes)
    return Provenance(**fields)


def make_items(n: int, *, seed: int = 0, single_cell: bool = False, fail_every: int = 7) -> list[dict[str, Any]]:
    """n fake inputs: 3 or 5 channels (so F = 6 or 10), plate/well/site metadata, some failures.

    Each item is a plain dict (picklable for the torchrun test): index, path, names, rows (metadata
    dicts), features (rows, F) float32, or reason for a failed input.
    """
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        path = f"/data/plate{i % 2}/img_{i:03d}.tif"
        if fail_every and i % fail_every == 3:
            kind = "ImageReadError" if i % 2 else "InputError"
            items.append({"index": i, "path": path, "reason": f"{kind}: cannot use input {i}"})
            continue
        k = 5 if rng.random() < 0.3 else 3
        chans = CHANNELS[:k]
        names = [f"{c}_cls_{d}" for c in chans for d in range(D)]
        base = {
            "Metadata_path": path,
            "Metadata_channels": ";".join(chans),
            "Metadata_Plate": f"P{i % 2}",
            "Metadata_Well": f"A{i % 12:02d}",
            "Metadata_site": i % 4,
        }
        if single_cell:
            n_cells = int(rng.integers(0, 4))
            rows = [
                {**base, "Metadata_cell_label": c + 1, "Metadata_centroid_y": 10.0 + c, "Metadata_centroid_x": 20.5 - c}
                for c in range(n_cells)
            ]
        else:
            rows = [base]
        feats = rng.standard_normal((len(rows), len(names))).astype(np.float32)
        items.append({"index": i, "path": path, "names": names, "rows": rows, "features": feats})
    return items


def feed(writer, items: list[dict[str, Any]], *, batch: int = 3) -> None:
    """Add items the way a pipeline would: batches of up to `batch` inputs of one feature schema."""
    group: list[dict[str, Any]] = []

    def flush() -> None:
        if group:
            writer.add(
                [it["index"] for it in group for _ in it["rows"]],
                [row for it in group for row in it["rows"]],
                np.concatenate([it["features"] for it in group]),
                group[0]["names"],
            )
            group.clear()

    for it in items:
        if "reason" in it:
            writer.add_failure(it["index"], it["path"], it["reason"])
            continue
        if group and (it["names"] != group[0]["names"] or len(group) == batch):
            flush()
        group.append(it)
    flush()


def expected_frame(items: list[dict[str, Any]]) -> pd.DataFrame:
    """The final table computed directly: one row per metadata row in input order, metadata columns
    (index, path, channels, input metadata, cell columns), then features by first appearance."""
    records, meta_cols, feat_cols = [], [], []
    for it in sorted(items, key=lambda it: it["index"]):
        if "reason" in it:
            continue
        for row, feat in zip(it["rows"], it["features"]):
            rec = {"Metadata_index": it["index"], **row}
            for key in rec:
                if key not in meta_cols:
                    meta_cols.append(key)
            for name in it["names"]:
                if name not in feat_cols:
                    feat_cols.append(name)
            rec.update(zip(it["names"], feat.tolist()))
            records.append(rec)
    cell = [c for c in ("Metadata_cell_label", "Metadata_centroid_y", "Metadata_centroid_x") if c in meta_cols]
    meta_cols = [c for c in meta_cols if c not in cell] + cell
    frame = pd.DataFrame.from_records(records, columns=meta_cols + feat_cols)
    frame[feat_cols] = frame[feat_cols].astype(np.float32)
    return frame
