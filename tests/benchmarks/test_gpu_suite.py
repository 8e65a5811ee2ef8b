"""benchmarks/gpu_suite.py runs end to end (``--smoke``: tiny sizes on the CPU) and reports what it measured.

The GPU figures themselves need a GPU; here the script's plumbing is checked: every step runs, the
numbers it writes agree with each other and with what is on disk, and the FLOP count is the issue's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"


def test_vit_l_flops_are_the_issues_figure():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_embed import vit_flops
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert round(vit_flops(1024, 24, 16, 224) / 1e9, 1) == 122.9  # issue 15: 122.9 GFLOP per channel-image


def test_smoke_run_writes_every_step(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(SUITE), "--smoke", "--out", str(out), "--work", str(work)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "gpu_suite.json").read_text())
    assert res["errors"] == {}
    assert set(res["steps"]) == {"model_only", "correctness", "pipeline", "archs", "train"}
    sizes = res["sizes"]

    # 1: one row per precision and batch; rate = batch / time
    rows = res["steps"]["model_only"]["rows"]
    assert [(r["precision"], r["batch"]) for r in rows] == [("bf16", b) for b in sizes["batches"]]
    for r in rows:
        assert math.isclose(r["ch_img_per_s"], r["batch"] / (r["ms_per_batch"] / 1e3), rel_tol=0.01)

    # 2: bf16 ran (not identical) and agrees with fp32; the same device against the CPU is exact
    corr = res["steps"]["correctness"]
    assert corr["bf16_vs_fp32"]["max_abs"] > 0
    assert corr["bf16_vs_fp32"]["min_cos"] >= 0.999 and corr["bf16_vs_fp32"]["min_part"] >= 0.999
    assert corr["device_fp32_vs_cpu_fp32"]["max_abs"] == 0.0

    # 3: the fields it wrote, and one row per field / per labelled cell
    pipe = res["steps"]["pipeline"]
    fields = sorted((work / "fields").glob("*.tif"))
    assert len(fields) == sizes["fields"]
    first = tifffile.imread(fields[0])
    assert first.shape == (sizes["channels"], sizes["field"], sizes["field"]) and first.dtype == np.uint16
    assert pipe["crop"]["rows"] == sizes["fields"] and pipe["crop"]["failed"] == 0
    n_cells = sum(len(np.unique(tifffile.imread(work / "masks" / f.name))) - 1 for f in fields[:sizes["cell_fields"]])
    assert pipe["cell_objects"] == n_cells and pipe["cells"]["rows"] == n_cells and pipe["cells"]["failed"] == 0
    for run in (pipe["crop"], pipe["cells"]):
        assert math.isclose(run["ch_img_per_s"], run["rows"] * sizes["channels"] / run["wall_s"], rel_tol=0.05,
                            abs_tol=0.06)
        assert 0 < run["model_busy_s"] <= run["wall_s"] and run["forwards"] >= 1

    # 4: the three families at K = 5
    archs = res["steps"]["archs"]
    assert archs["channels"] == 5
    assert math.isclose(archs["ha_over_boc_time"], archs["ha"]["ms_per_batch"] / archs["boc"]["ms_per_batch"],
                        rel_tol=0.01)

    # 5: step times and the DINO term of the short run
    train = res["steps"]["train"]
    for r in train["steps"]:
        assert r["precision"] == "bf16" and math.isclose(r["images_per_s"], r["batch"] / r["step_s"], rel_tol=0.02,
                                                                     abs_tol=0.06)
    vits = train["vits"]
    assert vits["steps"] == sizes["vits_steps"] and all(np.isfinite(v) for _, v in vits["dino_every_10"])

    log = (out / "gpu_suite.log").read_text()
    assert "1 eager    bf16 batch" in log and "5 ViT-S" in log
