"""Tables printed by the commands (``dino-boc eval``, ``dino-boc eval profile/map``), in GitHub Markdown."""

from __future__ import annotations

import math
import numbers

__all__ = ["markdown_table"]


def _cell(value, digits: int) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return "" if math.isnan(value) else f"{float(value):.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(df, *, digits: int = 1, index: bool = False) -> str:
    """A GitHub-Markdown table of a DataFrame; floats with ``digits`` decimals, NaN as an empty cell."""
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for key, row in zip(df.index, df.itertuples(index=False)):
        cells = ([_cell(key, digits)] if index else []) + [_cell(v, digits) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
