"""Figure of a phenotypic-activity (mAP) run: mAP against significance per feature set, and with two
feature sets, each perturbation's mAP under one against the other (see docs/profiles.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dino_boc.errors import InputError
from dino_boc.plot._common import matplotlib_figure, save_figure

if TYPE_CHECKING:  # matplotlib is an optional extra
    from matplotlib.figure import Figure

__all__ = ["map_activity"]

_REQUIRED = ("mean_average_precision", "corrected_p_value", "below_corrected_p")


def _neg_log10(p: pd.Series) -> np.ndarray:
    return -np.log10(np.clip(p.to_numpy(dtype=np.float64), 1e-300, 1.0))


def map_activity(
    tables: Mapping[str, pd.DataFrame],
    *,
    key: str,
    threshold: float = 0.05,
    output: str | os.PathLike | None = None,
) -> Figure:
    """Plot phenotypic activity tables (``activity.csv`` of ``dino-boc eval map``).

    Left panel, one colour per feature set: each perturbation's mAP (x) against -log10 of its
    FDR-corrected p-value (y); points above the dashed line (``threshold``) are retrieved. With two
    feature sets, the right panel puts each perturbation's mAP under the first set (x) against the
    second (y): points above the diagonal are better retrieved by the second set.

    Args:
        tables: feature-set name -> activity table (one row per perturbation, copairs' columns).
        key: the perturbation column that matches rows between tables (e.g. ``Metadata_pert_iname``).
        threshold: the FDR level the run used.
        output: save the figure there (``.png``, ``.svg`` or ``.pdf``).

    Returns:
        The matplotlib ``Figure``.

    Raises:
        InputError: no table, more than two, or a table without copairs' columns or ``key``.
    """
    if not 1 <= len(tables) <= 2:
        raise InputError(f"map_activity takes one or two activity tables; got {len(tables)}")
    for name, table in tables.items():
        missing = [c for c in (key, *_REQUIRED) if c not in table.columns]
        if missing:
            raise InputError(f"activity table {name!r} lacks columns {missing}; expected the activity.csv of "
                             "'dino-boc eval map'")
    fig = matplotlib_figure(figsize=(5.2 * len(tables), 4.4), layout="constrained")
    axes = fig.subplots(1, len(tables), squeeze=False)[0]
    ax = axes[0]
    for colour, (name, table) in zip(("tab:blue", "tab:orange"), tables.items()):
        hit = table["below_corrected_p"].astype(bool).to_numpy()
        frac = float(hit.mean()) if len(hit) else float("nan")
        ax.scatter(table["mean_average_precision"], _neg_log10(table["corrected_p_value"]), s=14, alpha=0.6,
                   color=colour, label=f"{name}: {hit.sum()}/{len(hit)} retrieved ({frac:.0%}), "
                                       f"mean mAP {table['mean_average_precision'].mean():.3f}")
    ax.axhline(-np.log10(threshold), color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("mAP (replicates vs. controls)")
    ax.set_ylabel("-log10 corrected p-value")
    ax.set_xlim(-0.02, 1.02)
    ax.set_title("Phenotypic activity", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    if len(tables) == 2:
        (name_a, a), (name_b, b) = tables.items()
        both = a[[key, "mean_average_precision"]].merge(b[[key, "mean_average_precision"]], on=key,
                                                        suffixes=("_a", "_b"))
        ax2 = axes[1]
        ax2.scatter(both["mean_average_precision_a"], both["mean_average_precision_b"], s=14, alpha=0.6,
                    color="tab:purple")
        ax2.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax2.set_xlabel(f"mAP, {name_a}")
        ax2.set_ylabel(f"mAP, {name_b}")
        ax2.set_xlim(-0.02, 1.02)
        ax2.set_ylim(-0.02, 1.02)
        better = int((both["mean_average_precision_b"] > both["mean_average_precision_a"]).sum())
        ax2.set_title(f"{len(both)} perturbations in both; {better} higher with {name_b}", fontsize=10)
    save_figure(fig, output)
    return fig
