"""``dino-boc weights``: list the registry, add a downloaded checkpoint to the cache."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights", help="list models, add downloaded weights",
        description="Manage model weights. The paper's ViT-L/16 weights are gated by their authors: request "
                    "them, download the .pth, then 'dino-boc weights add FILE.pth'.",
    )
    s = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    a = s.add_parser("add", help="download (optional), convert a released checkpoint once and cache it",
                     description="Convert CHECKPOINT (.pth, or its http(s) URL: downloaded with a progress bar, "
                                 "resumed when interrupted) to the dino_boc format, verify it (the SHA-256 prefix "
                                 "in a released file name, e.g. ...-ef7c17ff.pth), and cache it under "
                                 "$DINO_BOC_CACHE (default ~/.cache/dino_boc) so load_model(NAME) finds it. The "
                                 "model's licence is shown and recorded.")
    a.add_argument("checkpoint", help="the checkpoint file (.pth) or its URL (e.g. the signed link e-mailed to you)")
    a.add_argument("--name", default="dino-boc-vitl16",
                   help="name to store it under: one folder name of letters, digits, '.', '_', '-' (default: "
                        "%(default)s); load_model(NAME) then finds it")
    a.add_argument("--num-heads", type=int, default=None, help="attention heads (default: embed_dim / 64)")
    a.add_argument("--sha256", default=None, help="expected SHA-256 of the checkpoint file")
    a.set_defaults(func=run_add)
    ls = s.add_parser("list", help="list the registry's models, their licence and whether their weights are here")
    ls.set_defaults(func=run_list)


def run_add(args: argparse.Namespace) -> int:
    from dino_boc.weights import add_weights

    from dino_boc.weights.download import is_url, public_url
    from dino_boc.weights.registry import REGISTRY

    target = add_weights(args.checkpoint, name=args.name, num_heads=args.num_heads, sha256=args.sha256)
    shown = public_url(args.checkpoint) if is_url(args.checkpoint) else args.checkpoint
    print(f"cached {shown} as {args.name!r} in {target}")
    if args.name in REGISTRY and REGISTRY[args.name].licence:
        print(f"licence: {REGISTRY[args.name].licence}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from dino_boc.weights.names import is_model_folder
    from dino_boc.weights.registry import REGISTRY, cache_dir, model_table

    for row in model_table():
        cached = bool(row["cached"])
        here = {
            "random": "random init", "packaged": "shipped",
            "hub": "cached (Hub)" if cached else "Hub, not cached",
            "gated": "cached" if cached else "not here (gated)",
        }[str(row["source"])]
        print(f"{row['name']:32s} {here:18s} {row['description']}\n{'':32s} licence: {row['licence']}")

    root = cache_dir()
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name not in REGISTRY and not folder.name.startswith(".") and is_model_folder(folder):
            print(f"{folder.name:32s} {'cached':18s} added with 'dino-boc weights add --name'")
    return 0
