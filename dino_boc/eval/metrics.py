"""Classification scores used by the benchmarks: macro-F1 and accuracy.

``macro_f1`` follows scikit-learn's ``f1_score(y_true, y_pred, labels=np.unique(y_true),
average="macro")``, which is what the CHAMMI benchmark (broadinstitute/MorphEm,
``morphem/evaluation.py``) reports: the F1 of each class present in the ground truth, averaged with equal
weights. A prediction of a class absent from the ground truth is a false positive of no scored class, so it
only lowers the recall of the true class. A class that is never predicted scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dino_boc.errors import InputError

__all__ = ["macro_f1", "accuracy", "per_class_f1"]


def _as_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Return both label vectors as 1-D numpy arrays of the same, non-zero length."""
    t = np.asarray(y_true).reshape(-1) if np.ndim(y_true) else np.asarray([y_true])
    p = np.asarray(y_pred).reshape(-1) if np.ndim(y_pred) else np.asarray([y_pred])
    if t.shape != p.shape:
        raise InputError(
            f"y_true has {t.size} labels but y_pred has {p.size}; expected one prediction per ground-truth "
            "label — pass the predictions of exactly the rows you score"
        )
    if t.size == 0:
        raise InputError("no labels to score (empty y_true); expected at least one row — check the split or task")
    return t, p


def per_class_f1(y_true, y_pred, *, labels: Sequence | np.ndarray | None = None) -> dict:
    """F1 score of each class: ``2·TP / (2·TP + FP + FN)``, 0 where that is 0 / 0.

    Args:
        y_true: ground-truth labels, shape (M,), any hashable comparable dtype (ints, strings).
        y_pred: predicted labels, shape (M,).
        labels: classes to score; default: the classes present in ``y_true`` (sorted).

    Returns:
        ``{label: f1}`` in the order of ``labels``.

    Raises:
        InputError: lengths differ or nothing to score.
    """
    t, p = _as_pair(y_true, y_pred)
    classes = np.unique(t) if labels is None else np.asarray(labels).reshape(-1)
    scores = {}
    for c in classes:
        is_t, is_p = t == c, p == c
        tp = int(np.count_nonzero(is_t & is_p))
        fp = int(np.count_nonzero(~is_t & is_p))
        fn = int(np.count_nonzero(is_t & ~is_p))
        denom = 2 * tp + fp + fn
        scores[c.item() if hasattr(c, "item") else c] = 0.0 if denom == 0 else 2.0 * tp / denom
    return scores


def macro_f1(y_true, y_pred, *, labels: Sequence | np.ndarray | None = None) -> float:
    """Unweighted mean of the per-class F1 over the classes present in the ground truth.

    Equal to ``sklearn.metrics.f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro")``
    (the CHAMMI benchmark's score) when ``labels`` is None.

    Args:
        y_true: ground-truth labels, shape (M,).
        y_pred: predicted labels, shape (M,).
        labels: classes to average over instead of those present in ``y_true``; a listed class that is
            neither true nor predicted anywhere scores 0, as in scikit-learn.

    Returns:
        Macro-F1 in [0, 1].

    Raises:
        InputError: lengths differ, nothing to score, or ``labels`` is empty.
    """
    scores = per_class_f1(y_true, y_pred, labels=labels)
    if not scores:
        raise InputError("labels is empty; expected at least one class to average over — pass labels=None")
    return float(np.mean(list(scores.values())))


def accuracy(y_true, y_pred) -> float:
    """Fraction of rows whose prediction equals the ground truth.

    Args:
        y_true: ground-truth labels, shape (M,).
        y_pred: predicted labels, shape (M,).

    Returns:
        Accuracy in [0, 1].

    Raises:
        InputError: lengths differ or nothing to score.
    """
    t, p = _as_pair(y_true, y_pred)
    return float(np.mean(t == p))
