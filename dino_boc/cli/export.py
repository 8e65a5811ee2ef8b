"""``dino-boc export``: write a training run's teacher as a model folder for load_model / embed."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a training run's teacher for load_model()",
        description="Write the teacher network of RUN_DIR's newest checkpoint (or --checkpoint) to OUT_DIR as "
                    "config.json + model.safetensors; then dino_boc.load_model(OUT_DIR) embeds with it.",
    )
    p.add_argument("run_dir", help="training run folder (holds checkpoints/)")
    p.add_argument("out_dir", help="folder to write")
    p.add_argument("--checkpoint", default=None, help="a specific checkpoint file (default: the newest)")
    p.add_argument("--student", action="store_true", help="export the student instead of the teacher")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="storage dtype of the weights (default: %(default)s; float16 halves the size)")
    p.add_argument("--name", default="", help="model name stored in config.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dino_boc.train.export import export_run

    out = export_run(args.run_dir, args.out_dir, checkpoint=args.checkpoint,
                     which="student" if args.student else "teacher", dtype=args.dtype, name=args.name)
    print(f"exported to {out}; load it with dino_boc.load_model({str(out)!r})")
    return 0
