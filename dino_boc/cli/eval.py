"""``dino-boc eval``: the CHAMMI benchmark and linear probing, each printed as a Markdown table."""

from __future__ import annotations

import argparse
import inspect
from typing import get_args

from dino_boc.cli._tables import markdown_table

_CHAMMI_HELP = """\
Score a model on the CHAMMI benchmark (1-nearest-neighbour, macro-F1 in percent, as in the paper's
Tables 4 and 5). ROOT is the unpacked CHAMMI download (Zenodo record 7988357): the folder holding
morphem70k_v2.csv and the Allen, HPA and CP folders. The images are embedded once and the features
cached; running again with the same model reads the cache. See docs/eval.md for how to read the table.
"""

_LINEAR_HELP = """\
Train linear classifiers on a feature table (e.g. written by 'dino-boc embed' with your own label
and split columns added): 14 learning rates x 3 weight decays trained together, the best one chosen
on the validation rows, then scored once on the test rows (macro-F1 and accuracy, fractions of 1).
Feature columns are all columns not starting with 'Metadata_' (other than --label and --split).
"""


def _defaults(func) -> dict:
    """The keyword defaults of a public function: the CLI shows and uses the Python API's own defaults."""
    return {name: par.default for name, par in inspect.signature(func).parameters.items()
            if par.default is not inspect.Parameter.empty}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``eval``; choices come from the eval modules' ``Literal`` types and presets, defaults from the
    signatures of :func:`~dino_boc.eval.chammi` and :func:`~dino_boc.eval.linear.linear_probe`."""
    from dino_boc.eval.chammi import chammi
    from dino_boc.eval.knn import Metric
    from dino_boc.eval.linear import linear_probe
    from dino_boc.eval.presets import PRESETS

    dc, dl = _defaults(chammi), _defaults(linear_probe)
    p = sub.add_parser(
        "eval", help="benchmarks: CHAMMI 1-NN, linear probe, well profiles and mAP",
        description="Evaluate features: the CHAMMI benchmark, a linear probe, or well profiles scored with "
                    "mAP (copairs). See docs/eval.md and docs/profiles.md.",
    )
    s = p.add_subparsers(dest="eval_command", metavar="ACTION", required=True)

    c = s.add_parser("chammi", help="score a model on the CHAMMI benchmark", description=_CHAMMI_HELP)
    c.add_argument("--root", required=True, help="folder of the unpacked CHAMMI download")
    c.add_argument("--model", required=True,
                   help="model name (see 'dino-boc weights list'), model folder, checkpoint or hf-hub:org/repo")
    c.add_argument("--metric", choices=get_args(Metric), default=dc["metric"],
                   help="nearest-neighbour distance: cosine as in the paper, l2 as the benchmark's own scripts "
                        "(default: %(default)s)")
    c.add_argument("--preset", choices=tuple(PRESETS), default=dc["preset"],
                   help="which features: 'chammi' = last-block CLS tokens (the paper's 1-NN tables), 'linear' = "
                        "plus the average of patch tokens (default: %(default)s)")
    c.add_argument("--cache-dir", default=None,
                   help="where features are cached (default: $DINO_BOC_CACHE/chammi or ~/.cache/dino_boc/chammi); "
                        "delete the model's folder there to embed again")
    c.add_argument("--batch-size", type=int, default=dc["batch_size"], help="images per forward pass (default: %(default)s)")
    c.add_argument("--num-workers", type=int, default=dc["num_workers"],
                   help="processes reading images while embedding (default: %(default)s)")
    c.add_argument("--cache-name", default=None,
                   help="cache folder name to use instead of the model's name and weights hash, e.g. for features "
                        "computed elsewhere (you vouch that they match the model)")
    c.add_argument("-o", "--output", default=None, help="also save the table as CSV here")
    c.set_defaults(func=run)

    lin = s.add_parser("linear", help="linear probe on a feature table (train / val / test rows)",
                       description=_LINEAR_HELP)
    lin.add_argument("features", help="feature table (.parquet or .csv): Metadata_* columns, then features")
    lin.add_argument("--label", required=True, help="column with the class of each row, e.g. Metadata_moa")
    lin.add_argument("--split", required=True, help="column saying which split each row is in, e.g. Metadata_split")
    lin.add_argument("--train", default="train", help="value of --split marking training rows (default: %(default)s)")
    lin.add_argument("--val", default="val",
                     help="value marking validation rows, used to choose the learning rate (default: %(default)s)")
    lin.add_argument("--test", default="test", help="value marking test rows, scored once (default: %(default)s)")
    lin.add_argument("--epochs", type=int, default=dl["epochs"], help="passes over the training rows (default: %(default)s)")
    lin.add_argument("--batch-size", type=int, default=dl["batch_size"], help="rows per step (default: %(default)s)")
    lin.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: GPU if present)")
    lin.add_argument("--seed", type=int, default=dl["seed"], help="random seed (default: %(default)s)")
    lin.add_argument("--sweep", default=None, help="also save every learning rate's validation scores as CSV here")
    lin.add_argument("-o", "--output", default=None, help="also save the result table as CSV here")
    lin.set_defaults(func=run)

    from dino_boc.cli import _profiles

    _profiles.register(s)


def run_chammi(args: argparse.Namespace) -> int:
    from dino_boc.eval import chammi

    table = chammi(args.root, model=args.model, cache_dir=args.cache_dir, metric=args.metric, preset=args.preset,
                   batch_size=args.batch_size, num_workers=args.num_workers, cache_name=args.cache_name)
    table.index.name = "model"
    print(markdown_table(table, digits=1, index=True))
    if args.output:
        table.to_csv(args.output)
        print(f"\nwrote {args.output}")
    return 0


def run_linear(args: argparse.Namespace) -> int:
    from dino_boc.eval.linear import check_sweep_options, feature_splits, linear_probe, read_feature_table

    check_sweep_options(epochs=args.epochs, batch_size=args.batch_size)  # before the table is read
    splits = feature_splits(read_feature_table(args.features), label=args.label, split=args.split, train=args.train,
                            val=args.val, test=args.test)
    result = linear_probe(*splits.probe_args(), epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                          seed=args.seed)
    table = result.to_frame()
    table.insert(0, "n_features", len(splits.feature_columns))
    for name, y in (("n_train", splits.train_y), ("n_val", splits.val_y), ("n_test", splits.test_y)):
        table[name] = len(y)
    print(markdown_table(table.assign(lr=[f"{result.lr:.3g}"], weight_decay=[f"{result.weight_decay:g}"]), digits=4))
    if args.output:
        table.to_csv(args.output, index=False)
        print(f"\nwrote {args.output}")
    if args.sweep:
        result.sweep.to_csv(args.sweep, index=False)
        print(f"wrote {args.sweep}")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_chammi(args) if args.eval_command == "chammi" else run_linear(args)
