"""``dino-boc train``: pretrain a model with the paper's DINOv2 recipe (a thin shell over dino_boc.train)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="pretrain BoC / HA / Channel-ViT with DINOv2 (CPU, one GPU, or torchrun)",
        description="Pretrain a model with the paper's DINOv2 recipe. CONFIG is a YAML file or a shipped config "
                    "(vitl16_boc, vitl16_ha, vitl16_channel_vit, tiny_cpu, vitt16_nuclei_demo); KEY=VALUE pairs "
                    "override it (e.g. optim.base_lr=1e-4 'data.sources=[{path: images/}]'). Several processes: "
                    "torchrun --nproc-per-node=8 -m dino_boc train CONFIG. Export the result with "
                    "'dino-boc export RUN_DIR OUT_DIR'.",
    )
    p.add_argument("config", nargs="?", default=None,
                   help="YAML file or shipped config name (optional with --resume: the run's own config.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--output-dir", "-o", default=None, help="run folder (default: train.output_dir of the config)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of the run folder")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from dino_boc.errors import ConfigError
    from dino_boc.train.config import config_to_dict, load_config

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        overrides.insert(0, config)
        config = None
    if config is None:
        saved = Path(args.output_dir or "") / "config.yaml"
        if not (args.resume and args.output_dir and saved.is_file()):
            raise ConfigError(
                "give a CONFIG (YAML file or shipped name), or --resume --output-dir RUN with a saved config"
            )
        config = saved
    cfg = load_config(config, overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    import os

    from dino_boc.train.engine import train

    result = train(cfg, output_dir=args.output_dir, resume=args.resume)
    if int(os.environ.get("RANK", "0") or 0) == 0:  # the process group is gone by now
        last = result.history[-1] if result.history else {}
        print(f"trained iterations {result.start_iteration}..{result.iterations} of {result.total_iterations}; "
              f"last loss {last.get('loss/total', float('nan')):.4f}; checkpoint {result.last_checkpoint}")
        print(f"export with: dino-boc export {result.run_dir} MODEL_DIR")
    return 0
