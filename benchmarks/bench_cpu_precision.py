"""bf16 autocast against fp32 on the CPU: feature agreement (min cosine) and speed.

Two questions decide whether ``precision="auto"`` may pick bf16 on a CPU with native bf16
(AVX512-BF16 or AMX-BF16):

* **agreement**: the features of ``dino_boc.embed`` (CLS of the last 4 blocks + patch mean, concatenated
  over channels) in bf16 autocast against fp32, per image: min cosine, max abs and max relative
  difference (bar: min cosine >= 0.999). Two models:

  - ``vitl16``: a ViT-L/16 BoC (the paper's size) with **random weights** (seed 0; no pretrained ViT-L is
    available offline), at its LayerScale initialisation (1e-5: the blocks barely change the tokens, an easy
    case) and with every LayerScale set to 0.1 and 1.0 (the blocks contribute fully, a harder case), on
    ``224 x 224`` crops of the real 4-channel example image ``examples/images/mixed_4ch.tif``;
  - ``demo``: the shipped, trained ``dino-boc-vitt16-nuclei-demo`` on the real example images
    (``examples/images``) and the 52 held-out real crops (``examples/data/crops_heldout.tif``).

* **speed**: ``forward_tokens(n_last_blocks=4)`` of one batch of ``B·K`` channel-images (224 px), fp32 and
  bf16 taking turns, best time of each.

    python benchmarks/bench_cpu_precision.py                         # both parts, ViT-S and ViT-L speed
    python benchmarks/bench_cpu_precision.py --part speed --sizes s --iters 2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import tifffile
import torch

import dino_boc
from dino_boc.embed import autocast_context
from dino_boc.preprocess import prepare_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embed import SIZES, best_times, vit_flops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two ``(R, D)`` arrays (float64)."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def agreement(pairs: list[tuple[np.ndarray, np.ndarray]], dim: int) -> dict[str, float]:
    """Feature vectors ``(F,)`` in bf16 against their fp32 reference, one pair per image: min cosine of the
    whole vectors, min cosine of their D-sized parts (one CLS token of one block and channel, or one
    channel's patch mean), max abs difference, max difference relative to the image's largest value."""
    cos, part, dabs, drel = [], [], [], []
    for ref, low in pairs:
        a, b = ref.astype(np.float64).ravel(), low.astype(np.float64).ravel()
        cos.append(_cosines(a[None], b[None])[0])
        part.append(_cosines(a.reshape(-1, dim), b.reshape(-1, dim)).min())
        dabs.append(np.abs(a - b).max())
        drel.append(dabs[-1] / np.abs(a).max())
    return {"n": len(pairs), "min_cos": float(min(cos)), "min_part": float(min(part)), "max_abs": float(max(dabs)),
            "max_rel": float(max(drel))}


def fields_224(n_offsets: int = 5) -> np.ndarray:
    """``(B, 4, 224, 224)`` uint16 crops of the real 4-channel example image at corners and centre."""
    img = tifffile.imread(ROOT / "examples" / "images" / "mixed_4ch.tif")
    h, w = img.shape[-2:]
    offs = [(0, 0), (0, w - 224), (h - 224, 0), (h - 224, w - 224), ((h - 224) // 2, (w - 224) // 2)]
    return np.stack([img[:, y:y + 224, x:x + 224] for y, x in offs[:n_offsets]])


def compare(model, images, **kw) -> dict[str, float]:
    """``embed`` in fp32 and in bf16 autocast; ``images`` a list (any K) or a ``(B, K, H, W)`` batch."""
    fp32 = list(dino_boc.embed(images, model=model, precision="fp32", **kw))
    bf16 = list(dino_boc.embed(images, model=model, precision="bf16", **kw))
    return agreement(list(zip(fp32, bf16)), model.config.embed_dim)


def print_row(label: str, r: dict[str, float]) -> None:
    print(f"{label:56s} {r['n']:6d} {r['min_cos']:9.6f} {r['min_part']:9.6f} {r['max_abs']:9.2e} {r['max_rel']:9.2e}",
          flush=True)


def part_agreement(args: argparse.Namespace) -> None:
    print("# agreement: bf16 autocast vs fp32 features (embed: 4 last CLS + patch mean), per image")
    print(f"{'model':56s} {'images':>6s} {'min cos':>9s} {'part cos':>9s} {'max abs':>9s} {'max rel':>9s}")
    demo = dino_boc.load_model("dino-boc-vitt16-nuclei-demo")
    files = sorted((ROOT / "examples" / "images").glob("*.tif"))
    crops = tifffile.imread(ROOT / "examples" / "data" / "crops_heldout.tif")  # (52, 64, 64)
    rows = [("demo, example images (whole fields)", compare(demo, [str(f) for f in files])),
            ("demo, 52 held-out crops (64 px)", compare(demo, crops[:, None]))]
    for name, r in rows:
        print_row(name, r)
    fields = fields_224(args.fields)
    _, dim, depth, heads = SIZES["l"]
    model = dino_boc.create_model("boc", embed_dim=dim, depth=depth, num_heads=heads, patch_size=16, img_size=224,
                                  seed=0)
    for gamma in args.layerscale:
        if gamma is not None:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith(("ls1.gamma", "ls2.gamma")):
                        p.fill_(gamma)
        r = compare(model, fields, batch_size=4 * len(fields))
        label = f"ViT-L/16 random, LayerScale {'init 1e-5' if gamma is None else gamma}, 224 px K=4"
        print_row(label, r)


def part_speed(args: argparse.Namespace) -> None:
    k, n_images = args.channels, max(1, args.batch // args.channels)
    print(f"# speed: forward_tokens(n_last_blocks=4), {n_images} x {k} channel-images, {args.img_size} px")
    print(f"{'model':9s} {'prec':5s} {'ms/fwd':>10s} {'ch-img/s':>9s} {'TFLOP/s':>8s} {'bf16 speed-up':>14s}")
    for size in args.sizes:
        label, dim, depth, heads = SIZES[size]
        model = dino_boc.create_model("boc", embed_dim=dim, depth=depth, num_heads=heads, patch_size=16,
                                      img_size=args.img_size, seed=0)
        raw = np.random.default_rng(0).integers(0, 4096, (n_images, k, args.img_size, args.img_size), np.uint16)
        x = torch.stack([prepare_image(img, model.preprocess, 16) for img in raw])

        def run(p: str):
            def go() -> object:
                with torch.inference_mode(), autocast_context(torch.device("cpu"), p):
                    return model.forward_tokens(x, n_last_blocks=4)
            return go

        best = best_times({"fp32": run("fp32"), "bf16": run("bf16")}, iters=args.iters, warmup=args.warmup,
                          cuda=False)
        gflop = vit_flops(dim, depth, 16, args.img_size) / 1e9
        for p, t in best.items():
            rate = n_images * k / t
            up = f"{best['fp32'] / t:.2f}x" if p == "bf16" else ""
            print(f"{label:9s} {p:5s} {1e3 * t:10.1f} {rate:9.2f} {rate * gflop / 1e3:8.3f} {up:>14s}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "agreement", "speed"], default="all")
    parser.add_argument("--sizes", default="s,l", help="speed: model sizes from s, b, l (default: s,l)")
    parser.add_argument("--batch", type=int, default=4, help="speed: channel-images per forward, B·K (default: 4)")
    parser.add_argument("--channels", type=int, default=4, help="speed: K (default: 4)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=2, help="speed: timed iterations (default: 2)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--fields", type=int, default=5, help="agreement: 224 px crops of mixed_4ch.tif (1-5)")
    parser.add_argument("--layerscale", default="init,0.1,1.0",
                        help="agreement: ViT-L LayerScale values, 'init' = as initialised (default: init,0.1,1.0)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    args.sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    args.layerscale = [None if v.strip() == "init" else float(v) for v in args.layerscale.split(",") if v.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# dino_boc {dino_boc.__version__}, torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads of {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    if args.part in ("all", "agreement"):
        part_agreement(args)
    if args.part in ("all", "speed"):
        part_speed(args)
    print(f"# load at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
