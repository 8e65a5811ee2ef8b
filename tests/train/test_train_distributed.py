"""A 2-process gloo run via torchrun (DDP and FSDP2) equals a single-process run of the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from dist_worker import EXACT
from train_helpers import random_images, tiny_config

from dino_boc.train.engine import Trainer
from dino_boc.train.sources import ArraySource

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(HERE / "dist_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    single = Trainer(tiny_config(*EXACT), output_dir=tmp_path / "single",
                     sources=[ArraySource(random_images(10, size=24))])
    losses = [h["loss/total"] for h in single.run().history]
    reference = single.objective.teacher.state_dict()
    for mode in ("ddp", "fsdp"):
        ranks = [torch.load(tmp_path / f"{mode}_teacher_rank{r}.pt", weights_only=True) for r in range(2)]
        assert set(ranks[0]) == set(reference)
        for k, v in reference.items():
            assert torch.equal(ranks[0][k], ranks[1][k]), f"{mode}: ranks differ in {k}"
            torch.testing.assert_close(ranks[0][k], v, rtol=1e-5, atol=1e-6, msg=f"{mode}: {k}")
        for r in range(2):
            got = json.loads((tmp_path / f"{mode}_losses_rank{r}.json").read_text())
            torch.testing.assert_close(torch.tensor(got), torch.tensor(losses), rtol=1e-5, atol=1e-6)
    assert (tmp_path / "ddp" / "checkpoints" / "latest").is_file()
    assert (tmp_path / "fsdp" / "checkpoints" / "latest").is_file()
