"""``channels()``: a montage of an image's channels and a pseudo-colour composite."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from dino_boc.errors import InputError, require
from dino_boc.plot._common import display_scale, matplotlib_figure, read_any_image, save_figure

__all__ = ["channels", "composite", "DEFAULT_COLORS"]

#: additive pseudo-colours, bright on black; the first two (green, magenta) stay distinct for colour-blind readers
DEFAULT_COLORS: tuple[str, ...] = (
    "#00ff00", "#ff00ff", "#00ffff", "#ffff00", "#ff3030", "#4080ff", "#ff9900", "#ffffff",
)


def _rgb_colors(colors: Sequence[Any] | None, k: int) -> np.ndarray:
    mcolors = require("matplotlib.colors", "plot")
    if colors is None:
        colors = [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(k)]
    if isinstance(colors, str) or len(colors) < k:
        raise InputError(f"colors={colors!r} gives fewer colours than the image's {k} channels; pass one per channel")
    try:
        return np.array([mcolors.to_rgb(c) for c in list(colors)[:k]], dtype=np.float32)
    except ValueError as exc:
        raise InputError(f"colors={colors!r}: {exc}; use matplotlib colours such as 'green' or '#00ff00'") from exc


def composite(image: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Additive pseudo-colour composite of percentile-scaled channels.

    Args:
        image: ``(K, H, W)``.
        colors: ``(K, 3)`` RGB in [0, 1].

    Returns:
        ``(H, W, 3)`` float32 in [0, 1].
    """
    scaled = np.stack([display_scale(p) for p in image])  # (K, H, W)
    rgb = np.einsum("khw,kc->hwc", scaled, colors)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def channels(
    image: Any,
    *,
    names: Sequence[str] | None = None,
    colors: Sequence[Any] | None = None,
    output: str | os.PathLike | None = None,
):
    """Show each channel in its pseudo-colour, with its name, and the composite of all of them.

    Every channel is scaled for display on its own (its 1st and 99.8th percentiles become black and
    full colour), so a dim channel is as visible as a bright one: compare shapes, not intensities.

    Args:
        image: ``(K, H, W)`` array or tensor of any numeric dtype, or an image path (read with
            :func:`dino_boc.io.read_image`; its channel names are used).
        names: K channel names for the titles (default: the file's names, else ``ch0..``).
        colors: K matplotlib colours (default: green, magenta, cyan, yellow, red, blue, orange, white).
        output: save the figure there (``.png``, ``.svg`` or ``.pdf``).

    Returns:
        A matplotlib ``Figure`` with K + 1 image panels: channels in order, then ``"composite"``.

    Raises:
        InputError: not ``(K, H, W)``, wrong number of names or colours, an unsupported output suffix.
    """
    arr, labels = read_any_image(image, None if names is None else list(names))
    k, h, w = arr.shape
    rgb = _rgb_colors(colors, k)
    n_panels = k + 1
    ncols = n_panels if n_panels <= 5 else math.ceil(math.sqrt(n_panels))
    nrows = math.ceil(n_panels / ncols)
    side = 2.6
    fig = matplotlib_figure(figsize=(side * ncols, side * nrows * h / w + 0.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i in range(k):
        ax = axes[i]
        ax.imshow(display_scale(arr[i])[..., None] * rgb[i], interpolation="nearest")
        ax.set_title(labels[i], fontsize=10)
        ax.set_label(f"channel:{labels[i]}")
    ax = axes[k]
    ax.imshow(composite(arr, rgb), interpolation="nearest")
    ax.set_title("composite", fontsize=10)
    ax.set_label("composite")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n_panels:]:
        ax.remove()
    save_figure(fig, output)
    return fig
