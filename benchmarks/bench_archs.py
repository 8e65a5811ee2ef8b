"""Throughput of DINO BoC, DINO HA and DINO Channel-ViT: channel-images per second for K channels.

Untrained models (speed does not depend on the weights), ``forward_tokens`` under ``inference_mode``,
fixed ``(B, K, S, S)`` random inputs, the models taking turns in every iteration (best time). Prints a
table; ``HA/BoC`` is the HA time over the BoC time for the same batch (target <= 1.3).

    python benchmarks/bench_archs.py --threads 1                     # ViT-S/16, CPU, small (~1 min)
    python benchmarks/bench_archs.py --arch-size l --batch 32 --iters 20 --precision fp16  # GPU
"""

from __future__ import annotations

import argparse
import time

import torch

import dino_boc
from dino_boc.embed import autocast_context

SIZES = {  # name -> (embed_dim, depth, num_heads)
    "s": (384, 12, 6),
    "b": (768, 12, 12),
    "l": (1024, 24, 16),
}


def build(arch: str, size: str, img_size: int, max_channels: int) -> dino_boc.EmbeddingModel:
    dim, depth, heads = SIZES[size]
    extra = {"max_channels": max_channels} if arch == "channel_vit" else {}
    return dino_boc.create_model(arch, embed_dim=dim, depth=depth, num_heads=heads, patch_size=16,
                                 img_size=img_size, seed=0, **extra)


def time_round_robin(runs: dict[str, tuple], x: torch.Tensor, *, iters: int, warmup: int, precision: str,
                     n_last_blocks: int) -> dict[str, float]:
    """Best (minimum) wall time of one forward pass per entry of ``runs`` (name -> (model, extra kwargs)).

    The entries take turns in every iteration, so that a change in machine load hits all of them alike; the
    minimum is the time least disturbed by other processes (as ``timeit`` reports).
    """
    device = x.device
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode(), autocast_context(device, precision):
        for i in range(warmup + iters):
            for name, (model, kwargs) in runs.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model.forward_tokens(x, n_last_blocks=n_last_blocks, **kwargs)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch-size", choices=sorted(SIZES), default="s", help="ViT-S/B/L with patch 16")
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 3, 5, 8], help="values of K")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1, help="images B per forward (B·K channel-images)")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--n-last-blocks", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                        help="auto: fp16 autocast on CUDA, bf16 on CPUs with native bf16, else fp32")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--with-masked", action="store_true",
                        help="also time HA's masked-attention reference path (slow)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    kmax = max(args.channels)
    models = {arch: build(arch, args.arch_size, args.img_size, kmax).to(device) for arch in dino_boc.models.ARCHS}
    print(f"ViT-{args.arch_size.upper()}/16, {args.img_size} px, B={args.batch}, device={device}, "
          f"precision={args.precision}, threads={torch.get_num_threads()}, iters={args.iters} (best), "
          f"n_last_blocks={args.n_last_blocks}, torch {torch.__version__}")
    head = f"{'K':>3} | {'BoC ch-img/s':>12} | {'HA ch-img/s':>11} | {'C-ViT ch-img/s':>14} | {'HA/BoC':>6}"
    if args.with_masked:
        head += f" | {'HA-masked/BoC':>13}"
    print(head)
    print("-" * len(head))
    gen = torch.Generator().manual_seed(0)
    for k in args.channels:
        x = torch.randn(args.batch, k, args.img_size, args.img_size, generator=gen).to(device)
        runs = {arch: (m, {}) for arch, m in models.items()}
        if args.with_masked:
            runs["ha_masked"] = (models["ha"], {"attention": "masked"})
        t = time_round_robin(runs, x, iters=args.iters, warmup=args.warmup, precision=args.precision,
                             n_last_blocks=args.n_last_blocks)
        rate = {arch: args.batch * k / s for arch, s in t.items()}
        row = (f"{k:>3} | {rate['boc']:>12.2f} | {rate['ha']:>11.2f} | {rate['channel_vit']:>14.2f} | "
               f"{t['ha'] / t['boc']:>6.2f}")
        if args.with_masked:
            row += f" | {t['ha_masked'] / t['boc']:>13.2f}"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
