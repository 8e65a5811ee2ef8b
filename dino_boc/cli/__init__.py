"""The ``dino-boc`` command: a thin shell over the Python API, one module per subcommand.

Each subcommand module defines ``register(subparsers)`` (adds its parser and sets ``func``) and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

__all__ = ["main", "build_parser"]

_ORDER = ["embed", "weights", "train", "export", "eval", "plot"]


def _subcommand_modules() -> list[str]:
    import dino_boc.cli as pkg

    found = {m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")}
    return [n for n in _ORDER if n in found] + sorted(found - set(_ORDER))


def build_parser() -> argparse.ArgumentParser:
    from dino_boc._version import __version__

    parser = argparse.ArgumentParser(
        prog="dino-boc",
        description="Channel-invariant features for fluorescence microscopy images (DINO Bag of Channels).",
        epilog="Run 'dino-boc COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"dino-boc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _subcommand_modules():
        importlib.import_module(f"dino_boc.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from dino_boc.errors import DinoBocError

    from dino_boc.cli._hints import option_flags, to_cli

    try:
        return int(args.func(args) or 0)
    except DinoBocError as exc:  # the library's hints (crop=288) in CLI syntax (--crop 288)
        print(f"error: {to_cli(str(exc), option_flags(parser))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
