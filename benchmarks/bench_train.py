"""Training speed: images per second of one optimiser step (teacher + student forward, backward, AdamW, EMA).

Builds a :class:`dino_boc.train.engine.Trainer` for a config on random in-memory images, builds one batch,
then times ``--iters`` steps after ``--warmup`` (data loading excluded; ``--loader`` also times the full
loop with DataLoader workers). "Images" are samples: single-channel images for BoC, K-channel images for
HA / Channel-ViT.

    python benchmarks/bench_train.py --config tiny_cpu --batch 32
    python benchmarks/bench_train.py --config vitl16_boc --batch 32 --device cuda      # per-GPU share of 1024
    python benchmarks/bench_train.py --config vitl16_ha --batch 8 --channels 4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from dino_boc.train.config import load_config
from dino_boc.train.engine import Trainer
from dino_boc.train.sources import ArraySource


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny_cpu")
    p.add_argument("--batch", type=int, default=32, help="global batch (one process)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--channels", type=int, default=1, help="channels of the random images")
    p.add_argument("--size", type=int, default=0, help="image side (default: 1.25 x the global crop)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--loader", action="store_true", help="also time the full loop with DataLoader workers")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"train.batch_size={args.batch}", f"train.device={args.device}",
                                    "train.progress=false", "train.tensorboard=false", *args.overrides])
    size = args.size or int(cfg.crops.global_size * 1.25)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 4096, size=(max(64, args.batch), args.channels, size, size), dtype=np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, output_dir=tmp, sources=[ArraySource(images, name="random")])
        trainer.setup()
        batch = trainer.builder(0)
        times = []
        for i in range(args.warmup + args.iters):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            trainer.train_step(batch, i)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        step = statistics.median(times[args.warmup:])
        mem = (torch.cuda.max_memory_allocated() / 2**30) if trainer.device.type == "cuda" else float("nan")
        out = {
            "config": args.config, "arch": cfg.model.arch, "embed_dim": cfg.model.embed_dim, "depth": cfg.model.depth,
            "device": (torch.cuda.get_device_name(0) if trainer.device.type == "cuda"
                       else f"cpu x{torch.get_num_threads()}"),
            "precision": "bf16" if trainer.autocast else "fp32", "batch": args.batch, "channels": args.channels,
            "crops": f"{cfg.crops.n_global}x{cfg.crops.global_size} + {cfg.crops.n_local}x{cfg.crops.local_size}",
            "step_s": round(step, 4), "images_per_s": round(args.batch / step, 1), "peak_gpu_mem_gib": round(mem, 2),
        }
        if args.loader:
            cfg2 = cfg.replace(**{"train.max_iterations": args.warmup + args.iters})
            res = Trainer(cfg2, output_dir=tmp + "/loop", sources=[ArraySource(images, name="random")]).run()
            out["loop_images_per_s"] = round(statistics.median(h["images_per_s"] for h in res.history[args.warmup:]), 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
