"""Hints in CLI syntax: the library's messages say ``pass crop=288``; on the command line that is ``--crop 288``.

The options are read from the parser itself, so every flag the CLI has is translated, and nothing else:
``crop=288`` -> ``--crop 288``, ``dims='CYX'`` -> ``--dims CYX``, ``channels=["DNA", "ER"]`` ->
``--channels DNA,ER``, ``resume=True`` -> ``--resume``, a bare ``crop=`` -> ``--crop``.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["option_flags", "to_cli"]

_VALUE = r"""(?P<value>'[^']*'|"[^"]*"|\[[^\]]*\]|\([^)]*\)|[-\w.]+)?"""


def option_flags(parser: argparse.ArgumentParser) -> dict[str, tuple[str, bool]]:
    """``{dest: (long flag, takes no value)}`` of every optional argument of ``parser`` and its subcommands."""
    flags: dict[str, tuple[str, bool]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for dest, flag in option_flags(sub).items():
                    flags.setdefault(dest, flag)
        elif action.option_strings and action.dest not in ("help", "version"):
            long = max(action.option_strings, key=len)
            flags.setdefault(action.dest, (long, action.nargs == 0))
    return flags


def _plain(value: str) -> str:
    """A Python literal as a command-line value: quotes dropped, lists joined by commas."""
    value = value.strip()
    if value[:1] in "[(" and value[-1:] in "])":
        return ",".join(_plain(v) for v in value[1:-1].split(",") if v.strip())
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def to_cli(message: str, flags: dict[str, tuple[str, bool]]) -> str:
    """``message`` with every ``name=value`` of a CLI option written as the flag (see the module doc)."""
    if not flags:
        return message
    names = "|".join(sorted((re.escape(n) for n in flags), key=len, reverse=True))

    def repl(m: re.Match) -> str:
        flag, is_switch = flags[m.group("name")]
        value = m.group("value")
        if is_switch:
            return flag if value in (None, "True") else m.group(0)
        return flag if value is None else f"{flag} {_plain(value)}"

    out = re.sub(rf"(?<![\w.-])(?P<name>{names})={_VALUE}", repl, message)
    return re.sub(r"(--[\w-]+) \(\1\)", r"\1", out)  # "resume=True (--resume)" -> "--resume"
