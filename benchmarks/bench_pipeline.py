"""Benchmark of ``embed_dataset``: throughput against the model alone, and peak memory against the image count.

1. Throughput: N multi-channel TIFF files embedded by the whole pipeline (read, pre-process in
   DataLoader workers, group by shape, model, shards, merge into Parquet; everything from the call to
   the written file, including start-up and merge) against the model alone on the same images already
   pre-processed in memory (``dino_boc.embed.run_tensors``, same batch size). Best of ``--repeats`` runs.
2. Memory: peak RSS of a fresh process embedding 1,000 and then 10,000 small TIFFs (main process and,
   separately, its DataLoader workers). Flat memory means the two peaks are about equal.

Run (CPU, a few minutes on 2 cores)::

    python benchmarks/bench_pipeline.py                      # defaults below
    python benchmarks/bench_pipeline.py --n 256 --workers 0 1 --counts 1000 10000
    python benchmarks/bench_pipeline.py --device cuda --dim 1024 --depth 24 --heads 16 --size 224 --n 2048

Prints a small table; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_tiffs(folder: Path, n: int, *, channels: int, size: int, seed: int = 0) -> None:
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = ["DNA", "ER", "RNA", "AGP", "Mito"][:channels]
    base = rng.integers(0, 4096, size=(channels, size, size), dtype=np.uint16)
    for i in range(n):
        data = np.roll(base, i, axis=-1)  # distinct images, cheap to make
        tifffile.imwrite(folder / f"img{i:06d}.tif", data, imagej=True, metadata={"axes": "CYX", "Labels": names})


def make_model(args):
    import dino_boc

    return dino_boc.create_model("boc", seed=0, embed_dim=args.dim, depth=args.depth, num_heads=args.heads,
                                 patch_size=16, img_size=args.size)


def model_alone(model, folder: Path, args) -> float:
    """Images/s of the model on the pre-processed images held in memory (reading excluded)."""
    import torch

    from dino_boc.engine import run_tensors
    from dino_boc.io import read_image
    from dino_boc.preprocess import prepare_image

    tensors = [prepare_image(read_image(p)[0], model.preprocess, 16) for p in sorted(folder.glob("*.tif"))]
    run = dict(n_last_blocks=args.blocks, avgpool=True, batch_size=args.batch_size, precision="auto")
    run_tensors(model, tensors[: max(1, args.batch_size // args.channels)], **run)  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        run_tensors(model, tensors, **run)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(tensors) / best


def pipeline(model, folder: Path, out: Path, args, workers: int) -> float:
    import dino_boc

    dino_boc.embed_dataset(sorted(folder.glob("*.tif"))[:8], out, model=model, n_last_blocks=args.blocks,
                           batch_size=args.batch_size, num_workers=workers, progress=False, device=args.device)  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        summary = dino_boc.embed_dataset(folder, out, model=model, n_last_blocks=args.blocks,
                                         batch_size=args.batch_size, num_workers=workers, progress=False,
                                         device=args.device)
        best = min(best, time.perf_counter() - start)
        assert summary["n_ok"] == args.n, summary
    return args.n / best


def memory_child(folder: str, out: str, workers: int) -> None:
    """Runs in a fresh process: embed the folder with a tiny model and print its own peak RSS (MiB)."""
    import dino_boc

    model = dino_boc.create_model("boc", seed=0, embed_dim=64, depth=2, num_heads=2, patch_size=16, img_size=32)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20  # after imports and model
    summary = dino_boc.embed_dataset(folder, out, model=model, n_last_blocks=2, num_workers=workers, progress=False)
    print(json.dumps({
        "n_ok": summary["n_ok"],
        "before_mib": before,
        "main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20,
        "workers_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale / 2**20,
    }))


def memory(root: Path, counts: list[int], workers: int) -> list[dict]:
    results = []
    for n in counts:
        folder = root / f"mem{n}"
        write_tiffs(folder, n, channels=1, size=32)
        start = time.perf_counter()
        res = subprocess.run([sys.executable, __file__, "--memory-child", str(folder), str(root / f"mem{n}.parquet"),
                              str(workers)], capture_output=True, text=True, check=True)
        results.append({"n": n, "seconds": time.perf_counter() - start, **json.loads(res.stdout.strip().splitlines()[-1])})
    return results


def throughput(root: Path, args) -> None:
    """Images/s of the model alone and of the whole pipeline, printed."""
    folder = root / "tput"
    write_tiffs(folder, args.n, channels=args.channels, size=args.size)
    model = make_model(args).to(args.device)
    print(f"throughput: {args.n} TIFFs ({args.channels}, {args.size}, {args.size}) uint16, ViT D={args.dim} "
          f"depth={args.depth}, batch {args.batch_size} channel-images")
    alone = model_alone(model, folder, args)
    print(f"  model alone (pre-processed, in memory): {alone:8.1f} images/s")
    for w in args.workers:
        rate = pipeline(model, folder, root / "out.parquet", args, w)
        print(f"  pipeline, num_workers={w}:              {rate:8.1f} images/s  = {100 * rate / alone:5.1f}% of the model alone")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=128, help="images for the throughput test")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per setting (the best is kept)")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--blocks", type=int, default=4, help="n_last_blocks")
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    p.add_argument("--counts", type=int, nargs="*", default=[1000, 10000], help="image counts for the memory test")
    p.add_argument("--memory-workers", type=int, default=1)
    p.add_argument("--memory-only", action="store_true", help="skip the throughput test")
    p.add_argument("--device", default=None)
    p.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1], int(args.memory_child[2]))
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.device = device
    print(f"torch {torch.__version__}, device {device}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.memory_only:
            throughput(root, args)
        if args.counts:
            print(f"memory: peak RSS of a fresh process (tiny model, 1-channel 32x32 TIFFs, num_workers={args.memory_workers})")
            for r in memory(root, args.counts, args.memory_workers):
                print(f"  {r['n']:6d} images: main {r['main_mib']:7.1f} MiB (before the run {r['before_mib']:7.1f} MiB), "
                      f"largest worker {r['workers_mib']:7.1f} MiB ({r['seconds']:.0f} s, {r['n_ok']} embedded)")


if __name__ == "__main__":
    main()
