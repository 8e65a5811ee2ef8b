"""``embedding()``: a 2-D map (UMAP or PCA) of a feature table, one point per row, coloured by metadata."""

from __future__ import annotations

import logging
import math
import os
import warnings
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from dino_boc.errors import ChannelError, InputError, require
from dino_boc.features import parse_feature_name
from dino_boc.outputs.columns import METADATA_PREFIX
from dino_boc.outputs.read import read_features
from dino_boc.plot._common import matplotlib_figure, pca, save_figure

__all__ = ["embedding", "load_table", "select_channels", "complete_rows_and_columns", "reduce"]

logger = logging.getLogger(__name__)

#: UMAP input is first reduced to this many principal components (as scanpy does), for speed
_UMAP_PCS = 50
_NA = "NA"

#: how :func:`embedding` maps rows to 2-D (the CLI's ``--method`` choices)
ReduceMethod = Literal["umap", "pca"]


def load_table(
    table: Any, features: Any = None, *, allow_missing: bool = False
) -> tuple[np.ndarray, list[str] | None, pd.DataFrame]:
    """Split any accepted feature table into features, their column names and metadata.

    Args:
        table: a Parquet/AnnData(.h5ad)/CSV path; a DataFrame of ``Metadata_*`` and feature columns; an
            AnnData object (``X``, ``obs``, ``var_names``); a DataFrame of metadata only together with
            ``features``; or an ``(N, F)`` array.
        features: ``(N, F)`` array when ``table`` holds metadata only.
        allow_missing: keep NaN features (the empty cells of a union table of mixed channel sets).

    Returns:
        float64 ``(N, F)`` features, F column names (None when unknown), metadata ``(N, ...)``.

    Raises:
        InputError: no feature columns, mismatched row counts, non-numeric or non-finite features; a path that
            does not exist or is not a feature table (:func:`dino_boc.outputs.read.read_features`).
        ImageReadError: a corrupt file.
    """
    if isinstance(table, (str, os.PathLike)):  # Metadata_* of a CSV as written (plate 000123 stays "000123")
        table = read_features(table, metadata_as_text=True).table
    names: list[str] | None = None
    if features is not None:
        x = np.asarray(features)
        meta = table if isinstance(table, pd.DataFrame) else pd.DataFrame(index=range(len(x)))
    elif isinstance(table, pd.DataFrame):
        names = [c for c in table.columns if not str(c).startswith(METADATA_PREFIX)]
        if not names:
            raise InputError(
                "the table has no feature columns (only Metadata_* columns); pass features=(N, F) array"
            )
        meta = table[[c for c in table.columns if str(c).startswith(METADATA_PREFIX)]]
        x = table[names].to_numpy()
        names = [str(c) for c in names]
    elif hasattr(table, "X") and hasattr(table, "obs") and hasattr(table, "var_names"):  # AnnData
        x = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
        meta, names = table.obs, [str(v) for v in table.var_names]
    elif isinstance(table, np.ndarray):
        x, meta = table, pd.DataFrame(index=range(len(table)))
    else:
        raise InputError(
            f"table of type {type(table).__name__} is not supported; pass a Parquet or .h5ad path, a DataFrame, "
            "an AnnData, or a metadata DataFrame with features=(N, F)"
        )
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"features have shape {x.shape}; expected (N, F) with N, F >= 1")
    if len(meta) != x.shape[0]:
        raise InputError(f"the metadata has {len(meta)} rows but the features {x.shape[0]}; they must match")
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"feature columns must be numeric, got dtype {x.dtype}; name metadata columns Metadata_*")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x).all(axis=1) if not allow_missing else np.isinf(x).any(axis=1)
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} rows have NaN or infinite features (first: row {int(np.argmax(bad))}); drop them"
        )
    return x, names, meta.reset_index(drop=True)


def select_channels(names: Sequence[str], channels: Sequence[int | str]) -> list[int]:
    """Indices of the per-channel feature columns (CLS and patch mean) of the chosen channels.

    Args:
        names: F column names following ``{channel}_cls{block}_{d}`` / ``{channel}_mean_{d}``.
        channels: channel labels as they appear in the column names, or indices into the channels in
            column order. Global (HA, Channel-ViT) columns are never selected.

    Returns:
        Column indices, in column order.

    Raises:
        ChannelError: a channel with no columns; the message lists the channels present.
    """
    parsed = [parse_feature_name(n) for n in names]
    present: list[str] = []
    for f in parsed:
        if f is not None and f.channel is not None and f.channel not in present:
            present.append(f.channel)
    if isinstance(channels, (str, int)):
        channels = [channels]
    wanted: list[str] = []
    for c in channels:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not -len(present) <= c < len(present):
                raise ChannelError(f"channel index {c} is out of range; the table has channels {present}")
            wanted.append(present[c])
        elif str(c) in present:
            wanted.append(str(c))
        else:
            raise ChannelError(f"no feature columns for channel {c!r}; the table has channels {present}")
    chosen = set(wanted)
    return [i for i, f in enumerate(parsed) if f is not None and f.channel in chosen]


def complete_rows_and_columns(
    x: np.ndarray, names: list[str] | None, meta: pd.DataFrame, channels: Sequence[int | str] | None
) -> tuple[np.ndarray, list[str] | None, pd.DataFrame]:
    """Features without empty cells, for a union table whose rows have different channel sets.

    ``dino-boc embed`` on images with different channels writes one table whose columns are the union:
    a row's columns of channels it lacks are empty (NaN). Without ``channels`` the columns every row has
    are kept (the common channels); with ``channels`` their columns are kept and the rows lacking any of
    them are dropped. Either way a warning says what was left out, by ``Metadata_channels``.

    Returns:
        ``(N', F')`` features, their F' names, the N' rows' metadata.

    Raises:
        InputError: no column (or no row) is left; the message lists the channel sets.
        ChannelError: a channel with no feature columns.
    """
    if channels is not None:
        if names is None:
            raise InputError("channels= needs named feature columns; pass a DataFrame or Parquet table, not an array")
        cols = select_channels(names, channels)
        logger.debug("channels %s: %d of %d feature columns", list(channels), len(cols), x.shape[1])
        x, names = x[:, cols], [names[i] for i in cols]
    missing = np.isnan(x)
    if not missing.any():
        return x, names, meta
    _check_whole_channels(missing, names)
    sets = _channel_sets(meta, missing.any(axis=1))
    if channels is None:
        keep = ~missing.any(axis=0)
        if not keep.any():
            raise InputError(
                f"no feature column is filled in every row: the table mixes channel sets ({sets}); plot one set "
                "with channels= (--channels), e.g. the channels of the rows you want"
            )
        logger.warning(
            "the table mixes channel sets (%s): plotting the %d of %d feature columns every row has; choose "
            "channels= (--channels) to plot other channels for the rows that have them", sets, int(keep.sum()),
            len(keep),
        )
        return x[:, keep], None if names is None else [n for n, k in zip(names, keep) if k], meta
    rows = ~missing.any(axis=1)
    if not rows.any():
        raise InputError(f"no row has every channel of {list(channels)}; the table's channel sets: {sets}")
    logger.warning("channels %s: leaving out %d of %d rows that lack them (%s)", list(channels),
                   int((~rows).sum()), len(rows), sets)
    return x[rows], names, meta[rows].reset_index(drop=True)


def _check_whole_channels(missing: np.ndarray, names: list[str] | None) -> None:
    """Empty cells are only allowed as whole channel blocks of a row (a channel the row's image lacked)."""
    groups: dict[Any, list[int]] = {}
    for i, n in enumerate(names or []):
        f = parse_feature_name(n)
        groups.setdefault(None if f is None else f.channel, []).append(i)
    partial = np.zeros(missing.shape[0], dtype=bool) if names else missing.any(axis=1)
    for channel, idx in groups.items():
        m = missing[:, idx]
        partial |= (m.any(axis=1) & ~m.all(axis=1)) if channel is not None else m.any(axis=1)
    if partial.any():
        raise InputError(
            f"{int(partial.sum())} rows have NaN features (first: row {int(np.argmax(partial))}) that are not whole "
            "channels missing from a union table; drop those rows"
        )


def _channel_sets(meta: pd.DataFrame, incomplete: np.ndarray) -> str:
    """``'DNA;ER': 10 rows, 'DNA': 5 rows (incomplete)`` from ``Metadata_channels``, or a row count."""
    if "Metadata_channels" not in meta.columns:
        return f"{int(incomplete.sum())} of {len(incomplete)} rows have empty feature cells"
    counts = meta["Metadata_channels"].astype(str).value_counts(sort=False)
    return ", ".join(f"Metadata_channels={k!r}: {v} rows" for k, v in counts.items())


def reduce(x: np.ndarray, method: ReduceMethod, *, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """2-D coordinates of ``(N, F)`` rows and the two axis labels."""
    n = x.shape[0]
    if method == "pca":
        coords, ratio = pca(x, 2, seed=seed)
        return coords, [f"PC{i + 1} ({100 * r:.1f}% variance)" for i, r in enumerate(ratio)]
    if method != "umap":
        raise InputError(f"method={method!r}; choose 'umap' or 'pca'")
    if n < 4:
        raise InputError(f"UMAP needs at least 4 rows, the table has {n}; use method='pca'")
    umap = require("umap", "plot")
    if x.shape[1] > _UMAP_PCS and n > _UMAP_PCS:
        logger.debug("reducing %d features to %d principal components before UMAP", x.shape[1], _UMAP_PCS)
        x, _ = pca(x, _UMAP_PCS, seed=seed)
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), min_dist=0.1, random_state=seed, n_jobs=1,
                        init="spectral" if n > 10 else "random")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)  # seeded = 1 thread
        coords = reducer.fit_transform(np.asarray(x, dtype=np.float32))
    return np.asarray(coords, dtype=np.float32), ["UMAP 1", "UMAP 2"]


def _colour_values(meta: pd.DataFrame, color: str | Sequence[Any] | None, n: int) -> tuple[pd.Series | None, str]:
    if color is None:
        return None, ""
    if isinstance(color, str):
        if color not in meta.columns:
            raise InputError(f"color={color!r} is not a metadata column; the table has {list(meta.columns)}")
        return meta[color].reset_index(drop=True), color
    values = pd.Series(list(color))
    if len(values) != n:
        raise InputError(f"color has {len(values)} values for {n} rows; pass one per row or a column name")
    return values, "colour"


def _palette(n: int) -> list[Any]:
    cm = require("matplotlib", "plot").colormaps
    if n <= 10:
        return [cm["tab10"](i) for i in range(n)]
    if n <= 20:
        return [cm["tab20"](i) for i in range(n)]
    return [cm["turbo"](v) for v in np.linspace(0.05, 0.95, n)]


def _scatter(ax, coords: np.ndarray, values: pd.Series | None, label: str, size: float) -> None:
    style = {"s": size, "linewidths": 0, "alpha": 0.85, "rasterized": len(coords) > 5000}
    if values is None:
        ax.scatter(coords[:, 0], coords[:, 1], color="#3060a0", **style)
        return
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        sc = ax.scatter(coords[:, 0], coords[:, 1], c=values.to_numpy(dtype=float), cmap="viridis",
                        plotnonfinite=True, **style)
        ax.figure.colorbar(sc, ax=ax, label=label, shrink=0.8)
        return
    cats = values.astype("object").where(values.notna(), _NA).astype(str)
    order = list(dict.fromkeys(sorted(c for c in cats.unique() if c != _NA)))
    if (cats == _NA).any():
        order.append(_NA)
    colours = _palette(len(order))
    for cat, col in zip(order, colours):
        mask = (cats == cat).to_numpy()
        ax.scatter(coords[mask, 0], coords[mask, 1], color="#b0b0b0" if cat == _NA else col,
                   label=f"{cat} ({int(mask.sum())})", **style)
    ncol = max(1, math.ceil(len(order) / 20))
    ax.legend(title=label, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=ncol, fontsize=8, title_fontsize=9,
              markerscale=max(1.0, math.sqrt(30 / max(size, 1))), frameon=False)


def embedding(
    table: Any,
    color: str | Sequence[Any] | None = None,
    *,
    method: ReduceMethod = "umap",
    features: Any = None,
    channels: Sequence[int | str] | None = None,
    standardize: bool = True,
    seed: int = 0,
    ax: Any = None,
    point_size: float | None = None,
    output: str | os.PathLike | None = None,
):
    """Map every row of a feature table to 2-D and colour it by a metadata column.

    Points that lie together have similar features. Colour by the condition you expect to separate
    (treatment, cell line) and also by nuisance columns (plate, well position, batch): if points group by
    plate more than by treatment, correct for batch before comparing conditions. UMAP keeps
    neighbourhoods, not distances between groups; PCA keeps global distances but shows only two axes.

    Args:
        table: the dataset pipeline's Parquet file, an ``.h5ad`` path or AnnData
            object, a DataFrame of ``Metadata_*`` and feature columns, a metadata-only DataFrame with
            ``features=``, or an ``(N, F)`` array.
        color: a metadata column (e.g. ``"Metadata_Plate"``), N values, or None (one colour). Numeric
            columns get a colour bar; anything else one legend entry per category (cast integer codes
            with ``.astype(str)`` to get categories). Missing values are grey ``"NA"``.
        method: ``"umap"`` (needs the ``plot`` extra; inputs wider than 50 are first reduced to 50
            principal components) or ``"pca"``.
        features: ``(N, F)`` array when ``table`` holds metadata only.
        channels: keep only these channels' feature blocks (labels as in the column names,
            ``{channel}_cls{block}_{d}``/``{channel}_mean_{d}``, or indices in column order). A union
            table of mixed channel sets (empty cells where a row lacks a channel) plots the columns every
            row has, or, with ``channels``, the rows that have them; a warning says which.
        standardize: z-score every feature column before the reduction (columns of zero variance
            become 0); recommended because feature scales differ between blocks.
        seed: random seed of UMAP and of the randomised PCA used for large tables.
        ax: draw into this matplotlib ``Axes`` instead of a new figure.
        point_size: marker area in points²; default shrinks with N.
        output: save the figure there (``.png``, ``.svg`` or ``.pdf``).

    Returns:
        The matplotlib ``Figure``; its axes hold one point per row.

    Raises:
        InputError: an unknown colour column, mismatched rows, non-finite features, ``channels=`` without
            column names, too few rows for UMAP. ChannelError: a channel with no feature columns.
        MissingExtraError: UMAP or matplotlib is not installed.
    """
    x, names, meta = load_table(table, features, allow_missing=True)
    x, names, meta = complete_rows_and_columns(x, names, meta, channels)
    n, f = x.shape
    values, label = _colour_values(meta, color, n)
    if standardize:
        std = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    coords, axis_labels = reduce(x, method, seed=seed)
    if ax is None:
        fig = matplotlib_figure(figsize=(6.4, 4.8), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    size = point_size if point_size is not None else float(np.clip(3000 / n, 2, 40))
    _scatter(ax, coords, values, label, size)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    if method == "umap":
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(f"{method.upper()} of {n} rows x {f} features" + (f", by {label}" if label else ""), fontsize=10)
    save_figure(fig, output)
    return fig
