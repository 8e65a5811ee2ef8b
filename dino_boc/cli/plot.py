"""``dino-boc plot``: figures of a feature table or of one image (needs the ``plot`` extra)."""

from __future__ import annotations

import argparse
import inspect
from typing import get_args


def _channels(values: list[str] | None) -> list[int | str] | None:
    """``--channels DNA,ER`` (as ``dino-boc embed``) or ``--channels DNA ER``: indices when integers, else names."""
    if values is None:
        return None
    names = [c.strip() for v in values for c in v.split(",") if c.strip()]
    return [int(c) if c.lstrip("-").isdigit() else c for c in names]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``plot``; ``--method`` choices and the defaults come from :func:`dino_boc.plot.embedding.embedding`."""
    from dino_boc.plot.embedding import ReduceMethod, embedding

    p = sub.add_parser(
        "plot", help="UMAP/PCA of features, patch and attention maps, channel montage",
        description="Draw figures and save them as PNG, SVG or PDF (by the suffix of -o). "
                    "Needs: pip install \"dino-boc[plot]\". See docs/plots.md for how to read them.",
    )
    s = p.add_subparsers(dest="plot_command", metavar="ACTION", required=True)

    e = s.add_parser("embedding", help="2-D map of a feature table, one point per row",
                     description="Map every row of FEATURES (.parquet, .h5ad or .csv) to 2-D with "
                                 "UMAP or PCA and colour it by a metadata column.")
    e.add_argument("features", help="feature table written by 'dino-boc embed' (.parquet, .h5ad, .csv)")
    e.add_argument("--color", default=None, help="metadata column to colour by, e.g. Metadata_Plate")
    e.add_argument("--method", choices=get_args(ReduceMethod), default=inspect.signature(embedding).parameters["method"].default,
                   help="default: %(default)s")
    e.add_argument("--channels", nargs="+", default=None, metavar="NAMES",
                   help="use only these channels' feature columns, comma-separated as in 'dino-boc embed' (DNA,ER; "
                        "labels as in the column names, or indices)")
    e.add_argument("--no-standardize", dest="standardize", action="store_false",
                   help="do not z-score the feature columns first")
    e.add_argument("--seed", type=int, default=inspect.signature(embedding).parameters["seed"].default,
                   help="random seed (default: %(default)s)")
    e.add_argument("-o", "--output", required=True, help="figure file (.png, .svg or .pdf)")
    e.set_defaults(func=run)

    m = s.add_parser("patches", help="per channel: input, patch-token PCA, CLS attention",
                     description="For each channel of IMAGE: the pre-processed channel, the first three "
                                 "principal components of its last-block patch tokens as RGB, and the last "
                                 "block's CLS attention (mean over heads).")
    m.add_argument("image", help="image file (TIFF, OME-Zarr, PNG, ...)")
    m.add_argument("--model", default=None,
                   help="model name, folder or checkpoint (default: the library's default model, as dino-boc embed)")
    m.add_argument("--channels", nargs="+", default=None, metavar="NAMES",
                   help="channels by name or index, comma-separated as in 'dino-boc embed' (DNA,ER or 0,2)")
    m.add_argument("--resize", type=int, default=None, help="shorter side after resizing (0: none)")
    m.add_argument("--crop", type=int, default=None, help="centre-crop side (0: none)")
    m.add_argument("--no-attention", dest="attention", action="store_false",
                   help="leave out the attention column (needed for non-BoC models)")
    m.add_argument("-o", "--output", required=True, help="figure file (.png, .svg or .pdf)")
    m.set_defaults(func=run)

    c = s.add_parser("channels", help="montage of an image's channels and a pseudo-colour composite")
    c.add_argument("image", help="image file")
    c.add_argument("-o", "--output", required=True, help="figure file (.png, .svg or .pdf)")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dino_boc import plot

    if args.plot_command == "embedding":
        plot.embedding(args.features, args.color, method=args.method, channels=_channels(args.channels),
                       standardize=args.standardize, seed=args.seed, output=args.output)
    elif args.plot_command == "patches":
        from dino_boc.cli.embed import default_model_name

        plot.patch_maps(args.image, model=args.model or default_model_name(), channels=_channels(args.channels),
                        resize=args.resize, crop=args.crop, attention=args.attention, output=args.output)
    else:
        plot.channels(args.image, output=args.output)
    print(f"wrote {args.output}")
    return 0
