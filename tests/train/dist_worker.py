"""Run by test_train_distributed.py under torchrun (2 gloo processes): a DDP run, then an FSDP2 run.

Each rank saves its teacher's full state and the losses it logged, so that the test can compare the
ranks with each other and with a single-process run of the same global batch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from train_helpers import random_images, tiny_config

from dino_boc.train.engine import Trainer
from dino_boc.train.sources import ArraySource

#: drop path and KoLeo act per process (DINOv2 too), so they are off for an exact comparison
EXACT = ("optim.epochs=1", "model.drop_path_rate=0", "dino.koleo_loss_weight=0")


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for mode in ("ddp", "fsdp"):
        cfg = tiny_config(*EXACT, f"train.distributed={mode}")
        trainer = Trainer(cfg, output_dir=out / mode, sources=[ArraySource(random_images(10, size=24))])
        result = trainer.run()
        teacher = trainer.objective.teacher
        if mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(teacher, options=StateDictOptions(full_state_dict=True))
        else:
            state = teacher.state_dict()
        torch.save({k: v.detach().clone() for k, v in state.items()}, out / f"{mode}_teacher_rank{rank}.pt")
        (out / f"{mode}_losses_rank{rank}.json").write_text(json.dumps([h["loss/total"] for h in result.history]))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
