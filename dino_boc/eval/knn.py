"""Exact k-nearest-neighbour classification on pre-computed features, in torch.

Two metrics, both brute force (every query against every reference row, nothing approximate):

- ``"l2"``: Euclidean distance, the CHAMMI benchmark's default (MorphEm ``FaissKNeighbors`` with
  ``faiss.IndexFlatL2``).
- ``"cosine"``: each whole feature vector is L2-normalised, then the largest dot product wins — what the
  released cell-DINO evaluation does (``nn.functional.normalize(features, dim=1)`` then a matrix product)
  and MorphEm's ``metric="cosine"`` (``IndexFlatIP`` on normalised vectors).

Queries are processed in chunks so that the (chunk, reference) score matrix stays under a memory budget;
the result does not depend on the chunk size.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from dino_boc.errors import InputError
from dino_boc.precision import resolve_device

__all__ = ["knn", "nearest_neighbors", "Metric", "METRICS"]

logger = logging.getLogger(__name__)

Metric = Literal["cosine", "l2"]
METRICS: tuple[str, ...] = ("cosine", "l2")

#: Bytes allowed for one chunk's (queries x references) score matrix when ``chunk_size`` is None.
SCORE_BUDGET_BYTES = 256 * 2**20


def _as_matrix(x, name: str, device: torch.device) -> torch.Tensor:
    """A finite (M, F) float tensor on ``device``; float64 stays float64, anything else becomes float32."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        raise InputError(f"{name} has shape {tuple(t.shape)}; expected (rows, F) features — reshape to 2-D")
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise InputError(f"{name} has dtype {t.dtype}; expected real numbers")
    t = t.to(device=device, dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{name} contains NaN or inf; expected finite features — drop or re-embed those rows")
    return t


def nearest_neighbors(
    train_features,
    test_features,
    *,
    k: int = 1,
    metric: Metric = "cosine",
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Indices of the ``k`` nearest reference rows of each query, nearest first.

    Args:
        train_features: reference features, shape (R, F), numpy or torch.
        test_features: query features, shape (M, F).
        k: neighbours per query, 1 <= k <= R.
        metric: ``"cosine"`` (whole vectors L2-normalised, largest dot product) or ``"l2"`` (Euclidean).
        chunk_size: queries per chunk; default fits a (chunk, R) score matrix in 256 MiB.
        device: torch device; default CUDA when available, else CPU.

    Returns:
        int64 array (M, k) of row indices into ``train_features``. For ``k=1`` an exact tie goes to the
        lower index (as faiss's flat index does); for ``k > 1`` the order within exact ties is unspecified.

    Raises:
        InputError: shapes or widths disagree, non-finite values, bad ``k``, ``metric`` or ``chunk_size``.
    """
    if metric not in METRICS:
        raise InputError(f"metric={metric!r}; expected one of {METRICS}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise InputError(f"chunk_size={chunk_size!r}; expected a positive integer or None (fits 256 MiB)")
    dev = resolve_device(device)
    ref = _as_matrix(train_features, "train_features", dev)
    qry = _as_matrix(test_features, "test_features", dev)
    if ref.shape[1] != qry.shape[1]:
        raise InputError(
            f"train_features have {ref.shape[1]} columns but test_features have {qry.shape[1]}; expected the "
            "same feature width — embed both with the same model and options"
        )
    if ref.shape[0] == 0:
        raise InputError("train_features has no rows; expected at least one reference row")
    if not 1 <= int(k) <= ref.shape[0]:
        raise InputError(f"k={k}; expected 1 <= k <= {ref.shape[0]} (the number of reference rows)")
    dtype = torch.promote_types(ref.dtype, qry.dtype)
    ref, qry = ref.to(dtype), qry.to(dtype)
    if metric == "cosine":
        ref, qry = F.normalize(ref, dim=1), F.normalize(qry, dim=1)
        ref_sq = None
    else:
        ref_sq = (ref * ref).sum(dim=1)
    if chunk_size is None:
        chunk_size = max(1, SCORE_BUDGET_BYTES // (ref.shape[0] * ref.element_size()))
    out = torch.empty((qry.shape[0], int(k)), dtype=torch.int64)
    for start in range(0, qry.shape[0], int(chunk_size)):
        q = qry[start : start + int(chunk_size)]
        dots = q @ ref.T  # (chunk, R)
        # Ranking score, smaller is nearer. For l2 the query's own squared norm is the same for every
        # reference row, so ||r||^2 - 2 q.r orders the rows exactly as ||q - r||^2 does.
        score = -dots if ref_sq is None else ref_sq[None, :] - 2.0 * dots
        if k == 1:
            idx = torch.argmin(score, dim=1, keepdim=True)
        else:
            idx = torch.topk(score, int(k), dim=1, largest=False, sorted=True).indices
        out[start : start + q.shape[0]] = idx.cpu()
    return out.numpy()


def knn(
    train_features,
    train_labels,
    test_features,
    *,
    k: int = 1,
    metric: Metric = "cosine",
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Predict each query's label by majority vote of its ``k`` nearest reference rows (exact search).

    Args:
        train_features: reference features, shape (R, F).
        train_labels: reference labels, shape (R,), any comparable dtype (ints, strings).
        test_features: query features, shape (M, F).
        k: neighbours that vote; 1 is the CHAMMI protocol.
        metric: ``"cosine"`` (the released evaluation) or ``"l2"`` (the CHAMMI benchmark's default).
        chunk_size: queries per chunk (memory bound only; results do not depend on it).
        device: torch device; default CUDA when available, else CPU.

    Returns:
        Predicted labels, shape (M,), with the dtype of ``train_labels``. With ``k > 1`` a tied vote goes
        to the smallest label (sorted order), as ``argmax(bincount)`` does in the benchmark.

    Raises:
        InputError: ``train_labels`` does not have one label per reference row, or see
            :func:`nearest_neighbors`.
    """
    labels = np.asarray(train_labels).reshape(-1)
    n_ref = train_features.shape[0]
    if labels.shape[0] != n_ref:
        raise InputError(
            f"train_labels has {labels.shape[0]} labels but train_features has {n_ref} rows; expected one "
            "label per reference row"
        )
    idx = nearest_neighbors(train_features, test_features, k=k, metric=metric, chunk_size=chunk_size, device=device)
    if k == 1:
        return labels[idx[:, 0]]
    classes, codes = np.unique(labels, return_inverse=True)
    votes = torch.zeros((idx.shape[0], classes.size), dtype=torch.int64)
    votes.scatter_add_(1, torch.from_numpy(codes[idx]), torch.ones(idx.shape, dtype=torch.int64))
    return classes[torch.argmax(votes, dim=1).numpy()]
