"""Helpers shared by the figures: matplotlib access, saving, PCA, display scaling, reading images."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dino_boc.errors import InputError, require

__all__ = ["matplotlib_figure", "save_figure", "pca", "display_scale", "read_any_image", "SAVE_FORMATS"]

logger = logging.getLogger(__name__)

SAVE_FORMATS = (".png", ".svg", ".pdf")
#: above this many rows AND columns the exact SVD would be costly; a seeded randomised SVD is used
_EXACT_SVD_MAX = 2048


def matplotlib_figure(**kwargs: Any):
    """A new :class:`matplotlib.figure.Figure` (not registered with pyplot, so no GUI backend is needed
    and nothing leaks in loops). Notebooks display it as the last expression of a cell
    (``%matplotlib inline``) or with ``display(fig)``; scripts pass ``output=``."""
    require("matplotlib", "plot")
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig, output: str | os.PathLike | None, *, dpi: int = 150) -> None:
    """Write ``fig`` to ``output`` (PNG, SVG or PDF by suffix); nothing when ``output`` is None.

    Raises:
        InputError: an unsupported suffix.
    """
    if output is None:
        return
    path = Path(output)
    if path.suffix.lower() not in SAVE_FORMATS:
        raise InputError(f"output={str(output)!r}: unsupported suffix {path.suffix!r}; use one of {SAVE_FORMATS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    logger.info("wrote %s", path)


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """Deterministic signs: the entry of largest magnitude of each component is positive."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), idx])
    signs[signs == 0] = 1
    return signs


def pca(x: np.ndarray | torch.Tensor, n_components: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Project rows on their first principal components (centred, no scaling), without scikit-learn.

    Exact SVD (float64) when the matrix is small; otherwise torch's randomised ``svd_lowrank`` with a
    fixed seed. Signs are fixed so the largest loading of each component is positive.

    Args:
        x: ``(N, F)`` data.
        n_components: how many components; when ``min(N, F)`` is smaller, the missing columns are 0.
        seed: seed of the randomised SVD.

    Returns:
        scores ``(N, n_components)`` float32 and the explained-variance ratio of each component
        ``(n_components,)``.
    """
    a = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu().double()
    n, f = a.shape
    a = a - a.mean(dim=0, keepdim=True)
    total = float((a ** 2).sum())
    k = min(n_components, n, f)
    if min(n, f) <= _EXACT_SVD_MAX:
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        u, s, vh = u[:, :k], s[:k], vh[:k]
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            u, s, v = torch.svd_lowrank(a.float(), q=min(k + 10, n, f), niter=6)
        u, s, vh = u[:, :k].double(), s[:k].double(), v[:, :k].T.double()
    signs = torch.as_tensor(_flip_signs(vh.numpy()))
    scores = np.zeros((n, n_components), dtype=np.float32)
    scores[:, :k] = (u * s * signs).numpy()
    ratio = np.zeros(n_components, dtype=np.float64)
    if total > 0:
        ratio[:k] = (s ** 2).numpy() / total
    return scores, ratio


def display_scale(plane: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of a 2-D plane to 0/1 and clip (for display only)."""
    plane = np.asarray(plane, dtype=np.float32)
    lo, hi = np.percentile(plane, [low, high])
    if hi <= lo:
        hi = lo + 1e-12
    return np.clip((plane - lo) / (hi - lo), 0.0, 1.0)


def read_any_image(image: Any, names: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """A path, numpy array or tensor ``(K, H, W)`` -> float32 numpy ``(K, H, W)`` and K channel names.

    Names come from ``names`` when given, else from the file's metadata, else ``ch0..ch{K-1}``.

    Raises:
        InputError: not ``(K, H, W)``, or ``names`` of the wrong length.
        ImageReadError: an unreadable file.
    """
    from dino_boc.preprocess import to_float_tensor

    file_names = None
    if isinstance(image, (str, os.PathLike)):
        from dino_boc.io.read import read_image

        image, file_names = read_image(image)
    arr = to_float_tensor(image).numpy()
    k = arr.shape[0]
    chosen = names if names is not None else file_names
    if chosen is None:
        chosen = [f"ch{i}" for i in range(k)]
    chosen = [str(n) for n in chosen]
    if len(chosen) != k:
        raise InputError(f"{len(chosen)} channel names {chosen} for an image with {k} channels; pass K names")
    return arr, chosen
