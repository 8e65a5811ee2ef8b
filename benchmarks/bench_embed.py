"""Throughput of DINO BoC embedding: channel-images per second, our overhead over bare timm, and the
BoC batch against a per-channel Python loop.

For every model size, the same ``B·K`` channel-images (B images of K channels, 224 px by default) go
through four paths, which take turns in every iteration (best time is kept, so that a change in the load of
a shared machine hits all paths alike):

* ``timm``: a plain ``timm`` ``VisionTransformer.forward_features`` on the pre-processed ``(B·K, 1, S, S)``
  batch, holding the same weights (the floor);
* ``forward_tokens``: ``model.forward_tokens`` on the pre-processed ``(B, K, S, S)`` batch, 4 last blocks;
* ``embed``: ``dino_boc.embed`` on the raw uint16 ``(B, K, S, S)`` numpy batch (pre-processing, the
  forward, features back as numpy): the overhead over ``timm`` is what the library costs (target <= 5%);
* ``loop``: ``forward_tokens`` once per channel (K forwards of B channel-images), the Python loop that Bag of
  Channels avoids;
* ``preprocess``: the pre-processing of ``embed`` alone (CPU), the main part of its overhead, measured
  directly (on a busy machine the difference of two forward times is noisier than this).

On CUDA each precision (fp16 as released, bf16) is timed, with achieved TFLOP/s and model FLOP utilisation
(MFU) from FLOPs counted analytically from the config (~123 GFLOP per 224 px channel-image for ViT-L/16)
and the GPU's dense peak (``--peak-tflops`` to override). Untrained weights: speed does not depend on them.

    python benchmarks/bench_embed.py                                     # ViT-S and ViT-L, CPU, small
    python benchmarks/bench_embed.py --sizes l --batch 4 --iters 2       # ViT-L on a small CPU
    python benchmarks/bench_embed.py --device cuda --batch 256 --iters 20 --compile
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial
from typing import Callable

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import dino_boc
from dino_boc.embed import autocast_context
from dino_boc.preprocess import prepare_image

SIZES = {  # name -> (label, embed_dim, depth, num_heads)
    "s": ("ViT-S/16", 384, 12, 6),
    "b": ("ViT-B/16", 768, 12, 12),
    "l": ("ViT-L/16", 1024, 24, 16),
}
#: dense fp16/bf16 tensor-core peaks (TFLOP/s) by a substring of the CUDA device name
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
               "V100": 125.0, "T4": 65.0}


def vit_flops(dim: int, depth: int, patch: int, img: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs (2 per multiply-add) of one single-channel image through a ViT with a class token.

    Per block with N tokens: qkv ``2·N·D·3D``, scores and weighted sum ``2·2·N²·D``, projection ``2·N·D²``,
    MLP ``2·2·N·D·rD``; plus the patch embedding. Norms, softmax and GELU are left out (< 1%).
    """
    n = 1 + (img // patch) ** 2
    block = 2 * n * dim * 3 * dim + 4 * n * n * dim + 2 * n * dim * dim + 4 * n * dim * int(mlp_ratio * dim)
    return depth * block + 2 * (n - 1) * patch * patch * dim


def bare_timm(model: dino_boc.EmbeddingModel) -> VisionTransformer:
    """A plain timm ViT with the model's backbone weights (the reference the overhead is measured against)."""
    c = model.config
    vit = VisionTransformer(
        img_size=c.img_size, patch_size=c.patch_size, in_chans=1, embed_dim=c.embed_dim, depth=c.depth,
        num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, init_values=c.init_values, num_classes=0,
        global_pool="token", norm_layer=partial(nn.LayerNorm, eps=c.layer_norm_eps), dynamic_img_size=True,
    )
    vit.load_state_dict({k: v for k, v in model.backbone.state_dict().items() if k != "mask_token"})
    return vit.eval()


def best_times(paths: dict[str, Callable[[], object]], *, iters: int, warmup: int, cuda: bool) -> dict[str, float]:
    """Minimum wall time of each path; the paths take turns in every iteration, starting from a different
    one each time (no path always runs first)."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for i in range(warmup + iters):
        for name in names[i % len(names):] + names[:i % len(names)]:
            fn = paths[name]
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def bench_size(size: str, args: argparse.Namespace, device: torch.device) -> None:
    label, dim, depth, heads = SIZES[size]
    model = dino_boc.create_model("boc", embed_dim=dim, depth=depth, num_heads=heads, patch_size=16,
                                  img_size=args.img_size, seed=0).to(device)
    vit = bare_timm(model).to(device)
    if args.compile:  # per block, so that every path (timm, forward_tokens, embed) runs the compiled blocks
        for blk in list(model.backbone.blocks) + list(vit.blocks):
            blk.compile()
    k = args.channels
    n_images = max(1, args.batch // k)
    n = n_images * k
    raw = np.random.default_rng(0).integers(0, 4096, size=(n_images, k, args.img_size, args.img_size), dtype=np.uint16)
    x = torch.stack([prepare_image(img, model.preprocess, 16) for img in raw]).to(device)
    flat = x.reshape(n, 1, args.img_size, args.img_size)
    gflop = vit_flops(dim, depth, 16, args.img_size) / 1e9
    precisions = ["fp32"] if device.type == "cpu" else args.precisions
    peak = args.peak_tflops or next(
        (v for key, v in PEAK_TFLOPS.items() if device.type == "cuda" and key in torch.cuda.get_device_name(device)),
        None,
    )
    for precision in precisions:
        def in_mode(fn: Callable[[], object], p: str = precision) -> Callable[[], object]:
            def run() -> object:
                with torch.inference_mode(), autocast_context(device, p):
                    return fn()
            return run

        paths = {
            "timm": in_mode(lambda: vit.forward_features(flat)),
            "forward_tokens": in_mode(lambda: model.forward_tokens(x, n_last_blocks=4)),
            "embed": lambda p=precision: dino_boc.embed(raw, model=model, batch_size=n, precision=p),
            "loop": in_mode(lambda: [model.forward_tokens(x[:, c:c + 1], n_last_blocks=4) for c in range(k)]),
            "preprocess": lambda: [prepare_image(img, model.preprocess, 16) for img in raw],
        }
        best = best_times(paths, iters=args.iters, warmup=args.warmup, cuda=device.type == "cuda")
        for name, t in best.items():
            if name == "preprocess":
                print(f"{label:9s} {device.type:5s} {precision:5s} {n:5d} {k:2d}  {name:15s} {1e3 * t:10.1f} "
                      f"{'':10s} {'':8s} {'':7s} {100 * t / best['timm']:+6.1f}%", flush=True)
                continue
            rate = n / t
            tflops = rate * gflop / 1e3
            mfu = f"{100 * tflops / peak:5.1f}%" if peak and precision != "fp32" else "   n/a"
            vs = "" if name == "timm" else f"{100 * (t / best['timm'] - 1):+6.1f}%"
            print(f"{label:9s} {device.type:5s} {precision:5s} {n:5d} {k:2d}  {name:15s} {1e3 * t:10.1f} "
                  f"{rate:10.2f} {tflops:8.3f} {mfu:>7s} {vs:>9s}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="s,l", help="comma-separated model sizes from s, b, l (default: s,l)")
    parser.add_argument("--batch", type=int, default=16, help="channel-images per forward, B·K (default: 16)")
    parser.add_argument("--channels", type=int, default=4, help="K channels per image (default: 4)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per path (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per path (default: 1)")
    parser.add_argument("--img-size", type=int, default=224, help="image side in pixels (default: 224)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when present)")
    parser.add_argument("--precisions", default="fp16,bf16", help="CUDA autocast precisions (default: fp16,bf16)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every transformer block")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU dense peak for MFU (default: by name)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or args.batch < 1 or args.channels < 1 or args.iters < 1:
        parser.error(f"--sizes from {sorted(SIZES)} (got {unknown}); --batch, --channels, --iters >= 1")
    if args.compile:  # the first calls of each shape compile
        args.warmup = max(args.warmup, 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else
             f"CPU, {torch.get_num_threads()} threads of {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"# dino_boc {dino_boc.__version__}, torch {torch.__version__}, {where}; best of {args.iters} "
          f"(+{args.warmup} warm-up), {args.img_size} px, compile={args.compile}")
    print(f"{'model':9s} {'dev':5s} {'prec':5s} {'N':>5s} {'K':>2s}  {'path':15s} {'ms/fwd':>10s} "
          f"{'ch-img/s':>10s} {'TFLOP/s':>8s} {'MFU':>7s} {'vs timm':>9s}")
    for size in sizes:
        bench_size(size, args, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
