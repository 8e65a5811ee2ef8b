"""Issue 15's GPU suite: one script, <= 8 minutes on an H100/H200, writing ``gpu_suite.json`` + ``gpu_suite.log``.

Steps (each one guarded by the time budget; a failing step is recorded and the next one runs):

1. model-only throughput of a ViT-L/16 BoC (random weights, 224 px, ``forward_tokens(n_last_blocks=4)``):
   bf16 and fp16 autocast, 256/512/1024 channel-images per batch, eager then ``torch.compile`` (every block);
   channel-images/s, TFLOP/s (122.9 GFLOP per channel-image) and MFU against ``--peak-tflops`` (989);
2. correctness: the same batch (crops of the real example image) in fp32, fp16 and bf16 on the device, and
   device fp32 against CPU fp32: max abs, max rel, min cosine of the ``embed`` feature vectors;
3. the whole pipeline: ``embed_dataset`` over 16-bit 5-channel TIFF fields this script writes to local
   disk (synthetic cells, with their label images), ``crop=224`` and a single-cell run with masks, 8-16
   workers: images/s and channel-images/s against the model alone on the same batch shape, and the
   model's share of the wall time (CUDA events around every forward) plus NVML GPU utilisation;
4. DINO HA and Channel-ViT against BoC at K = 5, bf16;
5. training: ``vitl16_boc`` step time, images/s and peak memory at batch 16 and 32 in bf16, eager and
   compiled (20 steps), and ``--vits-steps`` steps of the same recipe at ViT-S size, batch 256, logging
   the DINO term against log(P).

Random weights throughout: speed does not depend on them (step 2 sets LayerScale to 0.1 so that every
block changes the features; at its 1e-5 initialisation the agreement would be trivially high).

On the GPU machine (torch, timm, tifffile, safetensors installed; nothing downloaded)::

    pip install --no-deps --no-build-isolation -e .       # optional: the script finds the repository itself
    python benchmarks/gpu_suite.py --out "$OUT"            # <= 8 min; the table is printed last
    python benchmarks/gpu_suite.py --smoke --out /tmp/s    # tiny sizes on the CPU, seconds (a pytest test)
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tifffile
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the repository (without installing) and the sibling scripts

import dino_boc  # noqa: E402
from bench_archs import build as build_arch  # noqa: E402
from bench_cpu_precision import agreement  # noqa: E402
from bench_embed import PEAK_TFLOPS, vit_flops  # noqa: E402
from dino_boc.precision import autocast_context  # noqa: E402

logger = logging.getLogger("gpu_suite")
VIT = {"s": (384, 12, 6), "l": (1024, 24, 16), "tiny": (64, 4, 2)}  # embed_dim, depth, heads


@dataclass(frozen=True)
class Sizes:
    """Everything the suite sizes; ``SMOKE`` shrinks it to seconds on a CPU."""

    vit: str = "l"
    img: int = 224
    batches: tuple[int, ...] = (256, 512, 1024)
    precisions: tuple[str, ...] = ("bf16", "fp16")
    compile: bool = True
    iters: int = 10
    warmup: int = 3
    check_images: int = 8            # step 2: images of K=4 (32 channel-images)
    fields: int = 1000               # step 3: 5 x field x field uint16 TIFFs
    field: int = 540
    channels: int = 5
    cell_fields: int = 200           # step 3: fields of the single-cell run (about 8,000 cells)
    cells_per_field: int = 40
    cell_size: int = 96
    workers: int = 12
    pipeline_batch: int = 1024
    arch_images: int = 64            # step 4: images of K=5
    train_config: str = "vitl16_boc"
    train_batches: tuple[int, ...] = (16, 32)
    train_steps: int = 20
    train_warmup: int = 3
    train_compile: bool = True
    #: ViT-S size; a 200-iteration schedule (10 epochs of 20, 2 of warm-up) so the short run gets past warm-up
    vits_config: tuple[str, ...] = ("model.embed_dim=384", "model.depth=12", "model.num_heads=6", "optim.epochs=10",
                                    "optim.iters_per_epoch=20", "optim.warmup_epochs=2",
                                    "optim.warmup_teacher_temp_epochs=2")
    vits_batch: int = 256
    vits_steps: int = 200


SMOKE = Sizes(vit="tiny", img=32, batches=(8, 16), precisions=("bf16",), compile=False, iters=2, warmup=1,
              check_images=2, fields=6, field=48, cell_fields=2, cells_per_field=3, cell_size=32, workers=1,
              pipeline_batch=16, arch_images=2, train_config="tiny_cpu", train_batches=(4,), train_steps=2,
              train_warmup=1, train_compile=False, vits_config=(), vits_batch=8, vits_steps=2)


class Budget:
    """Seconds left of the suite's wall-clock budget."""

    def __init__(self, seconds: float, end: float | None = None) -> None:
        self.end = time.monotonic() + seconds if end is None else end

    def left(self) -> float:
        return self.end - time.monotonic()

    def share(self, seconds: float) -> "Budget":
        """A step's budget: at most ``seconds`` from now, never past the whole suite's end."""
        return Budget(0.0, end=min(self.end, time.monotonic() + seconds))


#: seconds each step may start new runs for (step 5 takes what is left); 8 minutes in all with start-up
STEP_SECONDS = {"1": 150.0, "2": 25.0, "3": 100.0, "4": 25.0, "5": 1e9}


# ---------------------------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, *, iters: int, warmup: int) -> dict[str, float]:
    """Median and min seconds of ``fn`` (CUDA events on a GPU, the host clock after a sync elsewhere)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def vit_model(sizes: Sizes, device: torch.device, arch: str = "boc", **extra: Any) -> dino_boc.EmbeddingModel:
    dim, depth, heads = VIT[sizes.vit]
    return dino_boc.create_model(arch, embed_dim=dim, depth=depth, num_heads=heads, patch_size=16,
                                 img_size=sizes.img, seed=0, **extra).to(device).eval()


def peak_tflops(args: argparse.Namespace, device: torch.device) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for key, v in PEAK_TFLOPS.items() if key in name), None)


def environment(device: torch.device, argv: list[str]) -> dict[str, Any]:
    env: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/gpu_suite.py", *argv]), "device": str(device),
        "torch": torch.__version__, "cuda": torch.version.cuda, "dino_boc": dino_boc.__version__,
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    try:
        import timm

        env["timm"] = timm.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            env["nvidia_smi"] = out.stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            env["nvidia_smi"] = f"unavailable: {exc}"
    return env


# ---------------------------------------------------------------------------------------------- step 1
def step_model_only(sizes: Sizes, device: torch.device, args, budget: Budget) -> dict[str, Any]:
    model = vit_model(sizes, device)
    dim, depth, _ = VIT[sizes.vit]
    gflop = vit_flops(dim, depth, 16, sizes.img) / 1e9
    peak = peak_tflops(args, device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    rows: list[dict[str, Any]] = []
    runs = [("eager", p, n) for p in sizes.precisions for n in sizes.batches]
    if sizes.compile:  # largest batch first: what the budget leaves out is the least informative
        runs += [("compiled", p, n) for n in sorted(sizes.batches, reverse=True) for p in sizes.precisions]
    compiled = False
    for mode, precision, n in runs:
        if budget.left() < args.reserve_s:
            rows.append({"mode": mode, "precision": precision, "batch": n, "skipped": "time budget"})
            continue
        if mode == "compiled" and not compiled:
            dynamo = torch._dynamo.config  # one graph per (batch, precision): keep them all (default limit 8)
            dynamo.recompile_limit = max(getattr(dynamo, "recompile_limit", 8), 64)
            for blk in model.backbone.blocks:
                blk.compile(dynamic=False)  # one graph per batch size and precision
            compiled = True
        x = torch.randn(n // 4, 4, sizes.img, sizes.img, generator=gen).to(device)

        def fwd() -> object:
            with torch.inference_mode(), autocast_context(device, precision):
                return model.forward_tokens(x, n_last_blocks=4)

        t0 = time.perf_counter()
        fwd()  # the first call compiles
        sync(device)
        first = time.perf_counter() - t0
        t = time_fn(fwd, device, iters=sizes.iters, warmup=sizes.warmup)
        rate = x.shape[0] * 4 / t["median_s"]
        row = {"mode": mode, "precision": precision, "batch": n, "first_call_s": round(first, 2),
               "ms_per_batch": round(1e3 * t["median_s"], 2), "ch_img_per_s": round(rate, 1),
               "tflops": round(rate * gflop / 1e3, 2),
               "mfu": None if peak is None else round(rate * gflop / 1e3 / peak, 4)}
        rows.append(row)
        logger.info("step 1 %s", row)
        del x
    return {"gflop_per_channel_image": round(gflop, 2), "peak_tflops": peak, "rows": rows}


# ---------------------------------------------------------------------------------------------- step 2
def example_crops(n: int, size: int) -> np.ndarray:
    """``(n, 4, size, size)`` uint16 crops of the real example image at spread offsets."""
    img = tifffile.imread(HERE.parent / "examples" / "images" / "mixed_4ch.tif")
    h, w = img.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the example image {h}x{w}")
    ys = np.linspace(0, h - size, n).astype(int)
    xs = np.linspace(w - size, 0, n).astype(int)
    return np.stack([img[:, y:y + size, x:x + size] for y, x in zip(ys, xs)])


def step_correctness(sizes: Sizes, device: torch.device, args, budget: Budget) -> dict[str, Any]:
    model = vit_model(sizes, device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ls1.gamma", "ls2.gamma")):
                p.fill_(0.1)
    raw = example_crops(sizes.check_images, sizes.img)
    kw = dict(batch_size=raw.shape[0] * 4)
    dim = model.config.embed_dim
    feats = {"fp32": dino_boc.embed(raw, model=model, precision="fp32", **kw)}
    for p in ("fp16", "bf16") if device.type == "cuda" else ("bf16",):
        feats[p] = dino_boc.embed(raw, model=model, precision=p, **kw)
    out: dict[str, Any] = {"images": int(raw.shape[0]), "channels": 4, "layerscale": 0.1}
    for p in feats:
        if p != "fp32":
            out[f"{p}_vs_fp32"] = agreement(list(zip(feats["fp32"], feats[p])), dim)
    cpu = model.to("cpu")
    ref = dino_boc.embed(raw, model=cpu, precision="fp32", **kw)
    out["device_fp32_vs_cpu_fp32"] = agreement(list(zip(ref, feats["fp32"])), dim)
    model.to(device)
    logger.info("step 2 %s", out)
    return out


# ---------------------------------------------------------------------------------------------- step 3
def synth_field(seed: int, k: int, size: int, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``(K, S, S)`` uint16 field of ``n_cells`` disk-shaped cells (one brightness per cell and channel,
    channel c a disk of radius ``r·(0.5 + 0.15c)``, on noise) and its ``(S, S)`` uint16 label image."""
    rng = np.random.default_rng(seed)
    img = rng.normal(200, 20, size=(k, size, size)).clip(0)
    labels = np.zeros((size, size), np.uint16)
    yy, xx = np.mgrid[:size, :size]
    r_max = max(4, size // 27)
    margin = r_max + 2
    for label in range(1, n_cells + 1):
        cy, cx = rng.integers(margin, size - margin, 2)
        r = rng.uniform(0.5, 1.0) * r_max
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        labels[d2 <= r * r] = label
        for c in range(k):
            img[c][d2 <= (r * (0.5 + 0.15 * c)) ** 2] += rng.uniform(500, 8000)
    return img.clip(0, 65535).astype(np.uint16), labels


def _write_fields(job: tuple[Path, int, int, int, int, int]) -> int:
    folder, start, stop, k, size, n_cells = job
    img, labels = synth_field(start, k, size, n_cells)
    for i in range(start, stop):
        shift = (7 * (i - start)) % size  # a different field per file, cells and labels moved together
        tifffile.imwrite(folder / "fields" / f"f{i:05d}.tif", np.roll(img, shift, axis=-1),
                         photometric="minisblack", metadata={"axes": "CYX"})
        tifffile.imwrite(folder / "masks" / f"f{i:05d}.tif", np.roll(labels, shift, axis=-1))
    return stop - start


def write_fields(folder: Path, n: int, k: int, size: int, n_cells: int, processes: int) -> float:
    """Write ``n`` fields (and masks) with ``processes`` processes; returns the seconds taken."""
    (folder / "fields").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    per = max(1, math.ceil(n / max(1, processes)))
    jobs = [(folder, s, min(n, s + per), k, size, n_cells) for s in range(0, n, per)]
    t0 = time.perf_counter()
    if processes > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(processes) as pool:
            pool.map(_write_fields, jobs)
    else:
        for job in jobs:
            _write_fields(job)
    return time.perf_counter() - t0


class ForwardClock:
    """CUDA events around every forward of ``model`` (hooks): the model's busy time inside a pipeline run."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.device, self.events, self.calls = device, [], 0
        self._t0 = 0.0
        self.host_s = 0.0
        self.first: float | None = None  # host time of the first forward (after workers started, first batch read)
        self.handles = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _pre(self, *_: Any) -> None:
        self.calls += 1
        if self.first is None:
            self.first = time.perf_counter()
        if self.device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self.events.append([start, None])
        else:
            self._t0 = time.perf_counter()

    def _post(self, *_: Any) -> None:
        if self.device.type == "cuda":
            stop = torch.cuda.Event(enable_timing=True)
            stop.record()
            self.events[-1][1] = stop
        else:
            self.host_s += time.perf_counter() - self._t0

    def seconds(self) -> float:
        for h in self.handles:
            h.remove()
        if self.device.type != "cuda":
            return self.host_s
        sync(self.device)
        return sum(a.elapsed_time(b) for a, b in self.events if b is not None) / 1e3


class Utilisation:
    """Mean NVML GPU utilisation (% of time a kernel ran), sampled every 0.1 s while in use; None without NVML."""

    def __init__(self, device: torch.device) -> None:
        self.samples: list[int] = []
        self.stop = threading.Event()
        self.handle = None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self.nvml = pynvml
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            except Exception:  # noqa: BLE001 - NVML is optional: no sampling
                self.handle = None

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def __enter__(self) -> "Utilisation":
        if self.handle is not None:
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.handle is not None:
            self.stop.set()
            self.thread.join()

    def mean(self) -> float | None:
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def pipeline_run(model, source: Path, out: Path, device, sizes: Sizes, **kw: Any) -> dict[str, Any]:
    clock = ForwardClock(model, device)
    with Utilisation(device) as util:
        t0 = time.perf_counter()
        summary = dino_boc.embed_dataset(source, out, model=model, batch_size=sizes.pipeline_batch,
                                         num_workers=sizes.workers, device=str(device), progress=False, **kw)
        end = time.perf_counter()
        wall = end - t0
    busy = clock.seconds()
    steady = end - (clock.first or t0)
    n = int(summary["n_rows"])  # one row per field, or per cell
    return {"inputs": int(summary["n_ok"]), "rows": n, "failed": int(summary["n_failed"]), "wall_s": round(wall, 2),
            "forwards": clock.calls, "rows_per_s": round(n / wall, 1),
            "ch_img_per_s": round(n * sizes.channels / wall, 1),
            "from_first_forward_s": round(steady, 2),
            "ch_img_per_s_from_first_forward": round(n * sizes.channels / steady, 1),
            "model_busy_s": round(busy, 2), "model_busy_share": round(busy / wall, 3),
            "nvml_util_mean_pct": util.mean()}


def model_only_rate(model, device, sizes: Sizes, side: int) -> float:
    """Channel-images/s of the model alone on the pipeline's batch shape (``batch // K`` images of K)."""
    per = max(1, sizes.pipeline_batch // sizes.channels)
    x = torch.randn(per, sizes.channels, side, side, device=device)

    def fwd() -> object:
        with torch.inference_mode(), autocast_context(device, "auto"):
            return model(x, n_last_blocks=4)

    t = time_fn(fwd, device, iters=sizes.iters, warmup=sizes.warmup)
    return per * sizes.channels / t["median_s"]


def step_pipeline(sizes: Sizes, device: torch.device, args, budget: Budget, work: Path) -> dict[str, Any]:
    model = vit_model(sizes, device)
    out: dict[str, Any] = {"fields": sizes.fields, "field": f"{sizes.channels}x{sizes.field}x{sizes.field} uint16",
                           "workers": sizes.workers, "batch": sizes.pipeline_batch, "precision": "auto"}
    procs = min(16, os.cpu_count() or 1)
    out["write_s"] = round(write_fields(work, sizes.fields, sizes.channels, sizes.field, sizes.cells_per_field,
                                        procs), 2)
    out["bytes_written"] = sum(f.stat().st_size for f in (work / "fields").iterdir())
    logger.info("step 3: wrote %d fields (%.2f GB) in %.1f s", sizes.fields, out["bytes_written"] / 1e9,
                out["write_s"])
    crop = sizes.img
    out["model_only_crop_ch_img_per_s"] = round(model_only_rate(model, device, sizes, crop), 1)
    if budget.left() > args.reserve_s:
        out["crop"] = pipeline_run(model, work / "fields", work / "crop.parquet", device, sizes, crop=crop)
        for key in ("", "_from_first_forward"):
            out["crop"][f"vs_model_only{key}"] = round(out["crop"][f"ch_img_per_s{key}"]
                                                       / out["model_only_crop_ch_img_per_s"], 3)
        logger.info("step 3 crop %s", out["crop"])
    cell_dir = work / "cells"
    (cell_dir / "fields").mkdir(parents=True, exist_ok=True)
    (cell_dir / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(sizes.cell_fields):  # links: the same files, a smaller run
        for kind in ("fields", "masks"):
            os.symlink(work / kind / f"f{i:05d}.tif", cell_dir / kind / f"f{i:05d}.tif")
    out["cell_objects"] = int(sum(len(np.unique(tifffile.imread(cell_dir / "masks" / f"f{i:05d}.tif"))) - 1
                                  for i in range(sizes.cell_fields)))
    out["model_only_cell_ch_img_per_s"] = round(model_only_rate(model, device, sizes, sizes.cell_size), 1)
    if budget.left() > args.reserve_s:
        out["cells"] = pipeline_run(model, cell_dir / "fields", work / "cells.parquet", device, sizes,
                                    masks=cell_dir / "masks", cell_size=sizes.cell_size)
        for key in ("", "_from_first_forward"):
            out["cells"][f"vs_model_only{key}"] = round(out["cells"][f"ch_img_per_s{key}"]
                                                        / out["model_only_cell_ch_img_per_s"], 3)
        logger.info("step 3 cells %s", out["cells"])
    return out


# ---------------------------------------------------------------------------------------------- step 4
def step_archs(sizes: Sizes, device: torch.device, args, budget: Budget) -> dict[str, Any]:
    k = sizes.channels
    size = {"l": "l", "s": "s"}.get(sizes.vit)
    models = {}
    for arch in ("boc", "ha", "channel_vit"):  # the paper's three (zoo archs need their own configs)
        if size is None:  # smoke: the tiny ViT
            extra = {"max_channels": k} if arch == "channel_vit" else {}
            models[arch] = vit_model(sizes, device, arch=arch, **extra)
        else:
            models[arch] = build_arch(arch, size, sizes.img, k).to(device).eval()
    x = torch.randn(sizes.arch_images, k, sizes.img, sizes.img, device=device)
    precision = "bf16"
    out: dict[str, Any] = {"channels": k, "images": sizes.arch_images, "precision": precision}
    for arch, model in models.items():
        def fwd(m=model) -> object:
            with torch.inference_mode(), autocast_context(device, precision):
                return m.forward_tokens(x, n_last_blocks=4)

        t = time_fn(fwd, device, iters=sizes.iters, warmup=sizes.warmup)
        out[arch] = {"ms_per_batch": round(1e3 * t["median_s"], 2),
                     "ch_img_per_s": round(sizes.arch_images * k / t["median_s"], 1)}
    out["ha_over_boc_time"] = round(out["ha"]["ms_per_batch"] / out["boc"]["ms_per_batch"], 3)
    out["channel_vit_over_boc_time"] = round(out["channel_vit"]["ms_per_batch"] / out["boc"]["ms_per_batch"], 3)
    logger.info("step 4 %s", out)
    return out


# ---------------------------------------------------------------------------------------------- step 5
def train_images(sizes: Sizes, work: Path) -> np.ndarray:
    """``(N, K, S, S)`` uint16 synthetic cell fields for the training runs (S: 1.25 x the global crop)."""
    from dino_boc.train.config import load_config

    side = int(load_config(sizes.train_config).crops.global_size * 1.25)
    n = max(16, min(64, sizes.vits_batch // sizes.channels))
    return np.stack([np.roll(synth_field(i, sizes.channels, side, max(3, sizes.cells_per_field // 4))[0], 3 * i, -1)
                     for i in range(n)])


def train_steps(sizes: Sizes, device, images: np.ndarray, overrides: list[str], *, batch: int, steps: int,
                warmup: int, work: Path) -> dict[str, Any]:
    """Median step time of ``steps`` optimiser steps on one batch (data loading excluded), and peak memory."""
    from dino_boc.train.config import load_config
    from dino_boc.train.engine import Trainer
    from dino_boc.train.sources import ArraySource

    cfg = load_config(sizes.train_config, [f"train.batch_size={batch}", f"train.device={device.type}",
                                           "train.progress=false", "train.tensorboard=false", "data.num_workers=0",
                                           *overrides])
    run_dir = Path(tempfile.mkdtemp(dir=work, prefix="train_"))
    trainer = Trainer(cfg, output_dir=run_dir, sources=[ArraySource(images, name="synthetic")])
    trainer.setup()
    data = trainer.builder(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, first = [], None
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        trainer.train_step(data, i)
        sync(device)
        dt = time.perf_counter() - t0
        first = dt if first is None else first
        if i >= warmup:
            times.append(dt)
    step = statistics.median(times)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    precision = "bf16" if trainer.autocast else "fp32"
    del trainer, data
    gc.collect()  # the next configuration's peak memory must not hold this one's
    if device.type == "cuda":
        torch.cuda.empty_cache()
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"batch": batch, "compile": cfg.train.compile, "precision": precision,
            "first_step_s": round(first, 2), "step_s": round(step, 4), "images_per_s": round(batch / step, 1),
            "peak_memory_gib": None if mem is None else round(mem, 2)}


def train_rows(sizes: Sizes, device, args, budget: Budget, work: Path, images: np.ndarray, *,
               compiled: bool, need_s: float) -> list[dict[str, Any]]:
    """Step times of the ``train_config`` at each batch size (skipped when less than ``need_s`` is left)."""
    rows: list[dict[str, Any]] = []
    for batch in sizes.train_batches:
        if budget.left() < args.reserve_s + need_s:
            rows.append({"batch": batch, "compile": compiled, "skipped": "time budget"})
            continue
        try:
            row = train_steps(sizes, device, images, ["train.precision=bf16", f"train.compile={compiled}"],
                              batch=batch, steps=sizes.train_steps, warmup=sizes.train_warmup, work=work)
        except torch.OutOfMemoryError as exc:
            row = {"batch": batch, "compile": compiled, "error": f"out of memory: {exc}"[:300]}
            torch.cuda.empty_cache()
        rows.append(row)
        logger.info("step 5 %s", row)
    return rows


def vits_run(sizes: Sizes, device, work: Path, images: np.ndarray) -> dict[str, Any]:
    """``vits_steps`` steps of the recipe at ViT-S size with the data loader: does the DINO term leave log(P)?"""
    from dino_boc.train.config import load_config
    from dino_boc.train.engine import Trainer
    from dino_boc.train.sources import ArraySource

    cfg = load_config(sizes.train_config, [
        *sizes.vits_config, f"train.batch_size={sizes.vits_batch}", f"train.device={device.type}",
        f"train.max_iterations={sizes.vits_steps}", "train.precision=bf16", "train.progress=false",
        "train.tensorboard=false", f"train.checkpoint_every={10 ** 9}", "train.log_every=10",
        f"data.num_workers={sizes.workers}"])
    t0 = time.perf_counter()
    res = Trainer(cfg, output_dir=work / "vits_run", sources=[ArraySource(images, name="synthetic")]).run()
    wall = time.perf_counter() - t0
    dino = [(h["iteration"], round(float(h["loss/dino"]), 4)) for h in res.history]
    return {
        "overrides": list(sizes.vits_config), "batch": sizes.vits_batch, "steps": len(res.history),
        "wall_s": round(wall, 1),
        "images_per_s_median": round(statistics.median(h["images_per_s"] for h in res.history), 1),
        "log_p": round(math.log(cfg.dino.head_n_prototypes), 4),
        "loss_terms": sorted(k for k in res.history[-1] if k.startswith("loss/")),
        "dino_every_10": dino[::10] + ([dino[-1]] if (len(dino) - 1) % 10 else []),
    }


def step_train(sizes: Sizes, device: torch.device, args, budget: Budget, work: Path) -> dict[str, Any]:
    """Eager step times, then the ViT-S run, then compiled step times (the slowest to start, so last)."""
    images = train_images(sizes, work)
    out: dict[str, Any] = {"config": sizes.train_config}
    rows = train_rows(sizes, device, args, budget, work, images, compiled=False, need_s=30)
    if budget.left() > args.reserve_s + 60 or args.smoke:
        out["vits"] = vits_run(sizes, device, work, images)
        logger.info("step 5 ViT-S %s", out["vits"])
    else:
        out["vits"] = {"skipped": "time budget"}
    if sizes.train_compile:
        rows += train_rows(sizes, device, args, budget, work, images, compiled=True, need_s=120)
    out["steps"] = rows
    return out


# ---------------------------------------------------------------------------------------------- main
STEPS = {"1": "model_only", "2": "correctness", "3": "pipeline", "4": "archs", "5": "train"}


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The short table printed last."""
    lines = [f"# {results['env'].get('gpu', results['env']['device'])}, torch {results['env']['torch']}, "
             f"wall {results.get('wall_s', 0):.0f} s"]
    s1 = results["steps"].get("model_only", {})
    for r in s1.get("rows", []):
        if "ch_img_per_s" in r:
            mfu = "" if r["mfu"] is None else f" MFU {100 * r['mfu']:.1f}%"
            lines.append(f"1 {r['mode']:8s} {r['precision']} batch {r['batch']:5d}: {r['ch_img_per_s']:9.1f} ch-img/s "
                         f"{r['tflops']:7.1f} TFLOP/s{mfu}")
    s2 = results["steps"].get("correctness", {})
    for key, r in s2.items():
        if isinstance(r, dict) and "min_cos" in r:
            lines.append(f"2 {key}: min cos {r['min_cos']:.6f} (part {r['min_part']:.6f}), max abs {r['max_abs']:.2e}")
    s3 = results["steps"].get("pipeline", {})
    for key in ("crop", "cells"):
        if key in s3:
            r = s3[key]
            lines.append(f"3 {key}: {r['rows_per_s']} rows/s, {r['ch_img_per_s']} ch-img/s = {r['vs_model_only']:.2f} "
                         f"of model-only ({r['vs_model_only_from_first_forward']:.2f} from the first forward); "
                         f"model busy {100 * r['model_busy_share']:.0f}% of wall, NVML util {r['nvml_util_mean_pct']}")
    s4 = results["steps"].get("archs", {})
    if "ha_over_boc_time" in s4:
        lines.append(f"4 K={s4['channels']}: HA/BoC time {s4['ha_over_boc_time']}, "
                     f"Channel-ViT/BoC {s4['channel_vit_over_boc_time']}")
    for r in results["steps"].get("train", {}).get("steps", []):
        if "step_s" in r:
            lines.append(f"5 train batch {r['batch']} compile={r['compile']}: {r['step_s']} s/step, "
                         f"{r['images_per_s']} img/s, peak {r['peak_memory_gib']} GiB")
    v = results["steps"].get("train", {}).get("vits", {})
    if "dino_every_10" in v:
        lines.append(f"5 ViT-S {v['steps']} steps: DINO term {v['dino_every_10'][0][1]} -> {v['dino_every_10'][-1][1]} "
                     f"(log P = {v['log_p']})")
    for name, err in results["errors"].items():
        lines.append(f"! {name}: {err}")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_suite_out", help="folder for gpu_suite.json and gpu_suite.log")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU, seconds): checks the script runs")
    parser.add_argument("--steps", default="1,2,3,4,5", help="which steps (default: all)")
    parser.add_argument("--device", default=None, help="default: cuda when present (cpu with --smoke)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of the suite (default 450)")
    parser.add_argument("--reserve-s", type=float, default=20.0, help="stop a step's runs with this much left")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: 989 for H100/H200)")
    parser.add_argument("--work", default=None, help="scratch folder for the TIFFs (default: a temporary folder)")
    parser.add_argument("--vits-steps", type=int, default=None, help="steps of the ViT-S training run (default 200)")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else Sizes()
    if args.vits_steps is not None:
        sizes = replace(sizes, vits_steps=args.vits_steps)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        handlers=[logging.FileHandler(out / "gpu_suite.log", mode="w"), logging.StreamHandler()],
                        force=True)
    budget = Budget(args.budget_s)
    t_start = time.perf_counter()
    results: dict[str, Any] = {"env": environment(device, argv), "sizes": asdict(sizes), "steps": {}, "errors": {}}
    logger.info("environment %s", results["env"])
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_suite_"))
    work.mkdir(parents=True, exist_ok=True)
    wanted = [s.strip() for s in args.steps.split(",") if s.strip()]
    try:
        for key in wanted:
            name = STEPS[key]
            if budget.left() < args.reserve_s:
                results["errors"][name] = "skipped: time budget"
                continue
            t0 = time.perf_counter()
            mine = budget.share(STEP_SECONDS[key] * (1 if not args.smoke else 100))
            try:
                fn = {"1": step_model_only, "2": step_correctness, "4": step_archs}.get(key)
                if fn is not None:
                    results["steps"][name] = fn(sizes, device, args, mine)
                else:
                    step = step_pipeline if key == "3" else step_train
                    results["steps"][name] = step(sizes, device, args, mine, work)
                results["steps"][name]["step_wall_s"] = round(time.perf_counter() - t0, 1)
            except Exception as exc:  # noqa: BLE001 - record and go on to the next step
                logger.exception("step %s (%s) failed", key, name)
                results["errors"][name] = f"{type(exc).__name__}: {exc}"[:500]
            if device.type == "cuda":
                torch.cuda.empty_cache()
            results["wall_s"] = round(time.perf_counter() - t_start, 1)
            (out / "gpu_suite.json").write_text(json.dumps(results, indent=1, default=str))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_s"] = round(time.perf_counter() - t_start, 1)
    (out / "gpu_suite.json").write_text(json.dumps(results, indent=1, default=str))
    for line in summary_lines(results):
        logger.info("%s", line)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
