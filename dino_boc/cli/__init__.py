"""The ``dino-boc`` command: a thin shell over the Python API, one module per subcommand.

Each subcommand module defines ``register(subparsers)`` (adds its parser and sets ``func``) and
``run(args) -> int``. :func:`main` imports only the module of the command it runs: ``dino-boc --help`` and
``--version`` read each command's one-line help from its source (the ``add_parser(NAME, help=...)`` call)
and import neither torch nor timm.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import logging
import pkgutil
import sys

from dino_boc._version import __version__

__all__ = ["main", "build_parser"]

_ORDER = ["embed", "weights", "train", "export", "eval", "plot"]


def _subcommand_modules() -> list[str]:
    import dino_boc.cli as pkg

    found = {m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")}
    return [n for n in _ORDER if n in found] + sorted(found - set(_ORDER))


def _summary(name: str) -> str | None:
    """The ``help=`` of ``add_parser(name, ...)`` in ``dino_boc.cli.<name>``, read from its source (no import)."""
    spec = importlib.util.find_spec(f"dino_boc.cli.{name}")
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())  # type: ignore[union-attr, arg-type]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_parser" and node.args
                and isinstance(node.args[0], ast.Constant) and node.args[0].value == name):
            for kw in node.keywords:
                if kw.arg == "help" and isinstance(kw.value, ast.Constant):
                    return str(kw.value.value)
    return None


def build_parser(only: str | None = "") -> argparse.ArgumentParser:
    """The ``dino-boc`` parser.

    Args:
        only: ``""`` (default): every subcommand in full. A name: that subcommand in full, the others as
            their one-line help only. None: every subcommand as its one-line help (enough for ``--help``).
    """
    parser = argparse.ArgumentParser(
        prog="dino-boc",
        description="Channel-invariant features for fluorescence microscopy images (DINO Bag of Channels).",
        epilog="Run 'dino-boc COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"dino-boc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _subcommand_modules():
        if only == "" or name == only:
            importlib.import_module(f"dino_boc.cli.{name}").register(sub)
        else:
            sub.add_parser(name, help=_summary(name))
    return parser


def _command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option), or None."""
    names = set(_subcommand_modules())
    for word in argv:
        if not word.startswith("-"):
            return word if word in names else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_command(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from dino_boc.cli._hints import option_flags, to_cli
    from dino_boc.errors import DinoBocError

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
