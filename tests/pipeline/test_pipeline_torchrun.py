"""Two CPU processes under torchrun (gloo) give the same table as one process."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

import dino_boc

from .conftest import L
from .helpers import image, write_cyx


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path, rng, model, model_dir):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(9):  # mixed channel counts and sizes, one bad file
        k = 1 + i % 3
        write_cyx(src / f"img{i}.tif", image(rng, k, 32 + 8 * (i % 2), 32), ["DNA", "ER", "RNA"][:k] if k > 1 else None)
    (src / "img4.tif").write_bytes(b"broken")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT", "CUDA_VISIBLE_DEVICES")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "dino_boc", "embed", str(src), "-o", str(tmp_path / "two.parquet"), "--model", model_dir,
           "--n-last-blocks", str(L), "--batch-size", "4", "--shard-size", "2", "--keep-shards", "--quiet"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("embedded 8 of 9 inputs") == 1  # the summary is printed by rank 0 only
    ranks = sorted(p.name for p in (tmp_path / "two.parquet.shards").iterdir())
    assert ranks == ["rank-00000", "rank-00001"]
    one = dino_boc.embed_dataset(src, tmp_path / "one.parquet", model=model, n_last_blocks=L, progress=False)
    assert one["n_ok"] == 8
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "two.parquet"), pd.read_parquet(tmp_path / "one.parquet"))
    assert (tmp_path / "two.parquet.errors.csv").read_text() == (tmp_path / "one.parquet.errors.csv").read_text()
