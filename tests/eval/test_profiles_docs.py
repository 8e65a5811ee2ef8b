"""docs/profiles.md: the three commands of "The whole path" run as written (images -> embeddings ->
profiles -> mAP), on a synthetic two-plate screen embedded with a tiny model."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import dino_boc
from dino_boc.cli import main

pytest.importorskip("copairs")
pytest.importorskip("pycytominer")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "profiles.md"
COMPOUNDS = {"cmpA": "T1|T2", "cmpB": "T1", "cmpC": "T2", "cmpD": "T3"}


def documented_commands() -> list[list[str]]:
    text = DOCS.read_text()
    block = re.search(r"## The whole path.*?```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.startswith("dino-boc ")]


def image(rng: np.random.Generator, compound: str | None) -> np.ndarray:
    """(3, 32, 32) uint16: noise and blobs; a compound adds stripes of its own period and direction."""
    yy, xx = np.mgrid[:32, :32]
    img = rng.normal(1000, 60, size=(3, 32, 32))
    for _ in range(4):
        cy, cx = rng.uniform(4, 28, 2)
        img += 800 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    if compound is not None:
        k = list(COMPOUNDS).index(compound)
        phase = yy if k % 2 else xx
        img[k % 3] += 900 * (np.sin(2 * np.pi * phase / (3 + 2 * k)) > 0)
    return np.clip(img, 0, 65535).astype(np.uint16)


def screen(folder: Path) -> None:
    """plate.csv (one site per well, 8 DMSO + 3 wells of each compound per plate) and cellprofiler.csv.gz
    (hand-made per-well intensity features standing in for CellProfiler profiles)."""
    rng = np.random.default_rng(0)
    rows, cp = [], []
    for plate in ("P1", "P2"):
        layout = [None] * 8 + [c for c in COMPOUNDS for _ in range(3)]
        for w, compound in enumerate(layout):
            well = f"{'AB'[w // 10]}{w % 10 + 1:02d}"
            img = image(rng, compound)
            path = folder / f"{plate}_{well}.tif"
            tifffile.imwrite(path, img, photometric="minisblack", metadata={"axes": "CYX"})
            meta = {"Plate": plate, "Well": well, "pert_iname": compound or "DMSO",
                    "control_type": "negcon" if compound is None else "", "target_list": COMPOUNDS.get(compound, "")}
            rows.append({"path": path.name, **meta})
            cp.append({f"Metadata_{k}": v for k, v in meta.items()}
                      | {f"Cells_Intensity_{s}_{ch}": float(getattr(np, s.lower())(img[i]))
                         for i, ch in enumerate(("DNA", "RNA", "Mito")) for s in ("Mean", "Std", "Median")})
    pd.DataFrame(rows).to_csv(folder / "plate.csv", index=False)
    pd.DataFrame(cp).to_csv(folder / "cellprofiler.csv.gz", index=False)


def test_documented_path_runs_as_written(tmp_path, monkeypatch, capsys):
    commands = documented_commands()
    assert [c[:3] for c in commands] == [["dino-boc", "embed", "plate.csv"],
                                         ["dino-boc", "eval", "profiles"], ["dino-boc", "eval", "map"]]
    model = dino_boc.create_model("boc", embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32, seed=0)
    model_dir = model.save_pretrained(tmp_path / "tiny")
    screen(tmp_path)
    monkeypatch.chdir(tmp_path)
    extra = [["--model", str(model_dir), "--num-workers", "0", "--quiet", "--n-last-blocks", "2"], [], ["--null-size", "1000"]]
    for argv, more in zip(commands, extra):
        assert main(argv[1:] + more) == 0, argv
    features = pd.read_parquet("features.parquet")
    assert {"Metadata_Plate", "Metadata_Well", "Metadata_pert_iname"} <= set(features.columns) and len(features) == 40
    profiles = pd.read_parquet("profiles.parquet")
    assert len(profiles) == 40 and (profiles["Metadata_n_rows"] == 1).all()
    activity = pd.read_csv("map/activity.csv")
    assert sorted(activity.Metadata_pert_iname) == sorted(COMPOUNDS) and (activity.n_wells == 6).all()
    assert activity.below_corrected_p.any()  # the planted stripes are found
    summary = pd.read_csv("map/summary.csv")
    assert set(summary.features) == {"profiles", "cellprofiler"}
    assert Path("map/map.png").stat().st_size > 10_000 and Path("map/compare/activity.csv").exists()
    assert "| profiles | activity |" in capsys.readouterr().out


def test_readme_shows_the_same_commands():
    readme = (DOCS.parents[1] / "README.md").read_text()
    block = re.search(r"## Profiles and mAP.*?```bash\n(.*?)```", readme, re.S).group(1)
    assert [shlex.split(line) for line in block.splitlines() if line.startswith("dino-boc ")] == documented_commands()
