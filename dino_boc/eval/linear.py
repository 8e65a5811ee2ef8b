"""Linear probe on pre-computed features: a learning-rate × weight-decay sweep trained in one pass.

As in the paper (App. D.2) and the released cell-DINO linear evaluation: one linear classifier per sweep
member (14 learning rates between 1e-4 and 1 by default, times a few weight decays), AdamW, a cosine
learning-rate schedule to 0, softmax cross-entropy, the same mini-batches for every member; the best
member on the validation split is chosen, and only that member is scored on the test split.

All S members are trained together: their weights are one tensor (S, F, C) and each step is one batched
matrix product ``einsum("bf,sfc->sbc")``. Gradients are written out (softmax cross-entropy) and the AdamW
update is applied per member with its own learning rate and weight decay, so members never interact.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from dino_boc.errors import ConfigError, InputError
from dino_boc.eval.metrics import accuracy, macro_f1
from dino_boc.outputs.read import read_features
from dino_boc.precision import resolve_device

__all__ = ["DEFAULT_LRS", "DEFAULT_WEIGHT_DECAYS", "DEFAULT_PROBE_BATCH_SIZE", "MAX_SWEEP_BYTES", "LinearProbeResult", "LinearSweep",
           "FeatureSplits", "check_sweep_options", "feature_splits", "fit_linear_sweep", "linear_probe",
           "read_feature_table"]

logger = logging.getLogger(__name__)

#: 14 log-spaced learning rates from 1e-4 to 1 (the paper's "14 classifiers between 1e-4 and 1").
DEFAULT_LRS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-4, 0, 14))
DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (0.0, 1e-4, 1e-2)
#: Training rows per step of the linear probe.
DEFAULT_PROBE_BATCH_SIZE = 256
_BETAS, _EPS, _INIT_STD = (0.9, 0.999), 1e-8, 0.01
#: Default ceiling on the memory of a sweep's state (weights, two AdamW moments, gradients, batch logits).
MAX_SWEEP_BYTES = 16 * 2**30
#: From this many training rows on, more classes than half the rows means a label column of identifiers.
_MIN_ROWS_FOR_RATIO = 20


def check_sweep_options(*, epochs: int, batch_size: int, lrs: Sequence[float] = DEFAULT_LRS,
                        weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS, min_epochs: int = 1) -> None:
    """Refuse sweep options that cannot train, before any data is read.

    Args:
        epochs, batch_size, lrs, weight_decays: as :func:`linear_probe` takes them.
        min_epochs: 1 for a probe (untrained classifiers are never scored); 0 lets :func:`fit_linear_sweep`
            return the initial weights.

    Raises:
        ConfigError: ``epochs`` below ``min_epochs`` or ``batch_size`` below 1 (or not integers); a learning
            rate not finite and > 0; a weight decay not finite and >= 0; an empty sweep.
    """
    for name, v, low in (("epochs", epochs, min_epochs), ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ConfigError(f"{name}={v!r} must be an integer >= {low}; e.g. --epochs 30 --batch-size 256")
    lrs, wds = list(lrs), list(weight_decays)
    if not lrs or not wds:
        raise ConfigError("the sweep is empty; expected at least one learning rate and one weight decay")
    for name, values, low_ok in (("learning rate", lrs, False), ("weight decay", wds, True)):
        for v in values:
            if not isinstance(v, (int, float, np.number)) or not math.isfinite(v) or v < 0 or (v == 0 and not low_ok):
                raise ConfigError(f"{name} {v!r} must be a finite number {'>= 0' if low_ok else '> 0'}")


def _check_sweep_size(n: int, f: int, c: int, s: int, batch_size: int, max_bytes: int | None) -> None:
    """Refuse label columns of identifiers and sweeps whose state would not fit, before allocating it."""
    if n >= _MIN_ROWS_FOR_RATIO and 2 * c > n:
        raise InputError(
            f"train_y has {c} classes for {n} training rows; expected several rows per class — is the label "
            "column an identifier (one value per row)? Pass the column holding the class, e.g. Metadata_moa"
        )
    need = 4 * s * c * (4 * f + 3 * min(batch_size, n))  # float32 weight, 2 moments, gradient; 3 (S, B, C) buffers
    if max_bytes is not None and need > max_bytes:
        raise InputError(
            f"a sweep of {s} classifiers over {f} features and {c} classes needs about {need / 2**30:.1f} GiB, "
            f"above the {max_bytes / 2**30:.1f} GiB allowed; sweep fewer learning rates / weight decays, reduce "
            "the features, or pass max_bytes=None (Python API) if the memory is there"
        )


@dataclass(frozen=True)
class LinearSweep:
    """Trained sweep members: ``logits = x @ weight[s] + bias[s]`` on standardised features.

    Attributes:
        weight: (S, F, C) tensor.
        bias: (S, C) tensor.
        lrs: (S,) peak learning rate of each member.
        weight_decays: (S,) weight decay of each member.
        classes: (C,) class labels; logit c scores ``classes[c]``.
        mean, std: (F,) train statistics used to standardise features.
        train_loss: (S,) mean cross-entropy of each member over the last epoch.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    lrs: np.ndarray
    weight_decays: np.ndarray
    classes: np.ndarray
    mean: torch.Tensor
    std: torch.Tensor
    train_loss: np.ndarray

    def predict(self, x, member: int | None = None, *, batch_size: int = 65536) -> np.ndarray:
        """Predicted labels: (S, M) for all members, or (M,) for one member."""
        z = (_as_features(x, "x", self.weight.device) - self.mean) / self.std
        w = self.weight if member is None else self.weight[member : member + 1]
        b = self.bias if member is None else self.bias[member : member + 1]
        out = []
        # at most ~256 MiB of (S, rows, C) logits at a time, whatever the number of classes
        batch_size = max(1, min(batch_size, (1 << 28) // (4 * w.shape[0] * w.shape[2])))
        for start in range(0, z.shape[0], batch_size):
            logits = torch.einsum("bf,sfc->sbc", z[start : start + batch_size], w) + b[:, None, :]
            out.append(torch.argmax(logits, dim=2).cpu())
        codes = torch.cat(out, dim=1).numpy() if out else np.zeros((w.shape[0], 0), dtype=np.int64)
        pred = self.classes[codes]
        return pred if member is None else pred[0]


@dataclass(frozen=True)
class LinearProbeResult:
    """The chosen member and its scores, plus the whole sweep's validation scores.

    Attributes:
        lr, weight_decay: hyper-parameters of the member chosen on validation.
        val_macro_f1, val_accuracy: its validation scores.
        test_macro_f1, test_accuracy: its test scores (no other member is scored on test).
        sweep: one row per member: lr, weight_decay, train_loss, val_macro_f1, val_accuracy.
        model: the trained sweep (to predict new data with ``model.predict(x, member)``).
        member: index of the chosen member in ``sweep`` / ``model``.
    """

    lr: float
    weight_decay: float
    val_macro_f1: float
    val_accuracy: float
    test_macro_f1: float
    test_accuracy: float
    sweep: pd.DataFrame = field(repr=False)
    model: LinearSweep = field(repr=False)
    member: int = 0

    def to_frame(self) -> pd.DataFrame:
        """The chosen member's hyper-parameters and scores as a one-row DataFrame."""
        keys = ("lr", "weight_decay", "val_macro_f1", "val_accuracy", "test_macro_f1", "test_accuracy")
        return pd.DataFrame([{k: getattr(self, k) for k in keys}])


def _as_features(x, name: str, device: torch.device) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))
    if t.ndim != 2:
        raise InputError(f"{name} has shape {tuple(t.shape)}; expected (rows, F)")
    t = t.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{name} contains NaN or inf; expected finite features — drop or re-embed those rows")
    return t


def _adamw_step(p, g, m, v, step: int, lr: torch.Tensor, wd: torch.Tensor) -> None:
    """In-place AdamW (decoupled weight decay, bias-corrected moments) with per-member lr and wd."""
    m.mul_(_BETAS[0]).add_(g, alpha=1 - _BETAS[0])
    v.mul_(_BETAS[1]).addcmul_(g, g, value=1 - _BETAS[1])
    p.mul_(1 - lr * wd)
    denom = (v / (1 - _BETAS[1] ** step)).sqrt_().add_(_EPS)
    p.sub_(lr / (1 - _BETAS[0] ** step) * m / denom)


def fit_linear_sweep(
    x,
    y,
    *,
    lrs: Sequence[float] = DEFAULT_LRS,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    epochs: int = 30,
    batch_size: int = DEFAULT_PROBE_BATCH_SIZE,
    device: str | torch.device | None = None,
    seed: int = 0,
    max_bytes: int | None = MAX_SWEEP_BYTES,
) -> LinearSweep:
    """Train one linear classifier per (lr, weight decay) pair, all in one pass over the data.

    Features are standardised with the statistics of ``x``. Every member starts from the same weights
    (normal, std 0.01; bias 0, as released) and sees the same shuffled mini-batches; weight decay applies to
    the weights, not the bias. The learning rate of step t (of T) is ``lr · (1 + cos(π t / T)) / 2``.

    Args:
        x: training features (N, F).
        y: training labels (N,), any comparable dtype.
        lrs: peak learning rates.
        weight_decays: AdamW weight decays; members are the product lrs × weight_decays (lr-major).
        epochs: passes over the training data (0 returns the initial weights).
        batch_size: rows per step (the last, smaller batch of an epoch is kept).
        device: torch device; default CUDA when available, else CPU.
        seed: seeds the initial weights and the shuffling.
        max_bytes: ceiling on the sweep's memory (:data:`MAX_SWEEP_BYTES`); None for none.

    Returns:
        The trained :class:`LinearSweep`.

    Raises:
        ConfigError: see :func:`check_sweep_options`.
        InputError: shapes disagree, fewer than two classes, more classes than half the rows (an identifier
            column), a sweep above ``max_bytes``, or non-finite features.
    """
    check_sweep_options(epochs=epochs, batch_size=batch_size, lrs=lrs, weight_decays=weight_decays, min_epochs=0)
    dev = resolve_device(device)
    xt = _as_features(x, "train_x", dev)
    labels = np.asarray(y).reshape(-1)
    if labels.shape[0] != xt.shape[0]:
        raise InputError(f"train_y has {labels.shape[0]} labels for {xt.shape[0]} rows; expected one per row")
    classes, codes = np.unique(labels, return_inverse=True)
    if classes.size < 2:
        raise InputError(f"train_y has {classes.size} class; expected at least 2 to train a classifier")
    grid = [(float(lr), float(wd)) for lr in lrs for wd in weight_decays]
    _check_sweep_size(xt.shape[0], xt.shape[1], classes.size, len(grid), batch_size, max_bytes)
    mean, std = xt.mean(dim=0), xt.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    z = (xt - mean) / std
    yt = torch.as_tensor(codes, dtype=torch.int64, device=dev)
    n, f, c, s = z.shape[0], z.shape[1], classes.size, len(grid)
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(f, c, generator=gen) * _INIT_STD).to(dev).expand(s, f, c).contiguous()
    b = torch.zeros(s, c, device=dev)
    mw, vw, mb, vb = (torch.zeros_like(t) for t in (w, w, b, b))
    lr_s = torch.tensor([g[0] for g in grid], device=dev)
    wd_s = torch.tensor([g[1] for g in grid], device=dev)
    steps_per_epoch = math.ceil(n / batch_size)
    total, step = epochs * steps_per_epoch, 0
    last_loss = torch.zeros(s, device=dev)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(dev)
        last_loss.zero_()
        for start in range(0, n, batch_size):
            rows = perm[start : start + batch_size]
            zb, yb = z[rows], yt[rows]
            logits = torch.einsum("bf,sfc->sbc", zb, w) + b[:, None, :]  # (S, B, C)
            logp = torch.log_softmax(logits, dim=2)
            last_loss += -logp.gather(2, yb.expand(s, -1)[..., None]).squeeze(2).sum(dim=1)
            dlogits = logp.exp()
            dlogits[:, torch.arange(yb.shape[0], device=dev), yb] -= 1.0
            dlogits /= yb.shape[0]  # gradient of the batch-mean cross-entropy of each member
            gw = torch.einsum("bf,sbc->sfc", zb, dlogits)
            gb = dlogits.sum(dim=1)
            lr_t = lr_s * (0.5 * (1.0 + math.cos(math.pi * step / total)))
            step += 1
            _adamw_step(w, gw, mw, vw, step, lr_t[:, None, None], wd_s[:, None, None])
            _adamw_step(b, gb, mb, vb, step, lr_t[:, None], torch.zeros_like(lr_t)[:, None])
    return LinearSweep(weight=w, bias=b, lrs=lr_s.cpu().numpy(), weight_decays=wd_s.cpu().numpy(), classes=classes,
                       mean=mean, std=std, train_loss=(last_loss / n).cpu().numpy())


def linear_probe(
    train_x,
    train_y,
    val_x,
    val_y,
    test_x,
    test_y,
    *,
    lrs: Sequence[float] = DEFAULT_LRS,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    epochs: int = 30,
    batch_size: int = DEFAULT_PROBE_BATCH_SIZE,
    device: str | torch.device | None = None,
    seed: int = 0,
    max_bytes: int | None = MAX_SWEEP_BYTES,
) -> LinearProbeResult:
    """Linear probe: train the sweep on train, choose on validation macro-F1, report test of that member.

    Ties on validation macro-F1 go to the higher validation accuracy, then to the earlier member. Members
    whose weights became non-finite are never chosen. Test labels are looked at once, for the chosen member.

    Args:
        train_x, train_y: training features (N, F) and labels (N,).
        val_x, val_y: validation features (Nv, F) and labels (Nv,) — e.g. a split of the training data.
        test_x, test_y: test features (Nt, F) and labels (Nt,). Classes absent from training count as errors.
        lrs: peak learning rates (default 14 log-spaced in [1e-4, 1]). The released code multiplies its
            rates by batch_size / 256; with the default batch size of 256 the two coincide.
        weight_decays: AdamW weight decays swept for every learning rate.
        epochs: passes over the training data.
        batch_size: rows per step.
        device: torch device; default CUDA when available, else CPU.
        seed: seeds initial weights and shuffling.
        max_bytes: ceiling on the sweep's memory; None for none.

    Returns:
        :class:`LinearProbeResult` (macro-F1 over the classes present in each split's ground truth).

    Raises:
        ConfigError: see :func:`check_sweep_options`.
        InputError: shapes or widths disagree, or non-finite features; see :func:`fit_linear_sweep`.
    """
    check_sweep_options(epochs=epochs, batch_size=batch_size, lrs=lrs, weight_decays=weight_decays)
    if np.ndim(train_x) != 2:
        raise InputError(f"train_x has shape {tuple(np.shape(train_x))}; expected (rows, F)")
    f = np.shape(train_x)[1]
    for name, xs, ys in (("val", val_x, val_y), ("test", test_x, test_y)):  # before training, not after
        if np.shape(xs)[1:] != (f,) or len(ys) != np.shape(xs)[0]:
            raise InputError(
                f"{name}_x has shape {tuple(np.shape(xs))} with {len(ys)} labels; expected ({len(ys)}, {f}) "
                "like train_x, one label per row"
            )
        _as_features(xs, f"{name}_x", torch.device("cpu"))  # non-finite values refused before training
    sweep = fit_linear_sweep(train_x, train_y, lrs=lrs, weight_decays=weight_decays, epochs=epochs,
                             batch_size=batch_size, device=device, seed=seed, max_bytes=max_bytes)
    val_true = np.asarray(val_y).reshape(-1)
    val_pred = sweep.predict(val_x)
    finite = torch.isfinite(sweep.weight).flatten(1).all(1) & torch.isfinite(sweep.bias).all(1)
    table = pd.DataFrame({
        "lr": sweep.lrs, "weight_decay": sweep.weight_decays, "train_loss": sweep.train_loss,
        "val_macro_f1": [macro_f1(val_true, p) if ok else np.nan for p, ok in zip(val_pred, finite.tolist())],
        "val_accuracy": [accuracy(val_true, p) if ok else np.nan for p, ok in zip(val_pred, finite.tolist())],
    })
    if table["val_macro_f1"].isna().all():
        raise InputError("every sweep member diverged (non-finite weights); expected at least one usable member "
                         "— lower the learning rates")
    order = table.sort_values(["val_macro_f1", "val_accuracy"], ascending=False, kind="stable").index
    best = int(order[0])
    test_true = np.asarray(test_y).reshape(-1)
    test_pred = sweep.predict(test_x, best)
    chosen = table.loc[best]
    logger.info("linear probe: chose lr=%.3g wd=%.3g (val macro-F1 %.4f) of %d members",
                chosen.lr, chosen.weight_decay, chosen.val_macro_f1, len(table))
    return LinearProbeResult(
        lr=float(chosen.lr), weight_decay=float(chosen.weight_decay),
        val_macro_f1=float(chosen.val_macro_f1), val_accuracy=float(chosen.val_accuracy),
        test_macro_f1=macro_f1(test_true, test_pred), test_accuracy=accuracy(test_true, test_pred),
        sweep=table, model=sweep, member=best,
    )


@dataclass(frozen=True)
class FeatureSplits:
    """Features and labels of the train, validation and test rows of one table (see :func:`feature_splits`).

    Attributes:
        train_x, val_x, test_x: float32 (N, F), (Nv, F), (Nt, F).
        train_y, val_y, test_y: labels (N,), (Nv,), (Nt,).
        feature_columns: the F column names.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    feature_columns: list[str]

    def probe_args(self) -> tuple:
        """``(train_x, train_y, val_x, val_y, test_x, test_y)``, the positional arguments of :func:`linear_probe`."""
        return self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y


def read_feature_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a feature table for :func:`feature_splits` (:func:`dino_boc.outputs.read.read_features`: ``.parquet``
    file or folder, ``.h5ad``, ``.npy``, ``.csv``, ``.tsv``).

    Raises:
        InputError: missing, of another suffix, or without rows.
        ImageReadError: the file is corrupt or truncated, or this user may not read it (the message says which).
    """
    table = read_features(path).table
    if table.empty:
        raise InputError(f"feature table {str(path)!r} has no rows; expected Metadata_* columns and one row per image")
    return table


def _table_column(table: pd.DataFrame, name: str, what: str) -> str:
    """The column called ``name``, or ``Metadata_<name>`` (dino_boc output tables prefix metadata)."""
    for col in (name, "Metadata_" + name):
        if col in table.columns:
            return col
    meta = [c for c in table.columns if str(c).startswith("Metadata_")]
    raise InputError(f"the table has no {what} column {name!r} (nor 'Metadata_{name}'); its metadata columns are "
                     f"{meta[:20]} — pass one of those")


def feature_splits(table: pd.DataFrame, *, label: str, split: str, train: str = "train", val: str = "val",
                   test: str = "test") -> FeatureSplits:
    """Cut a feature table (``Metadata_*`` columns, then feature columns) into train / validation / test.

    Feature columns are every column except those starting with ``Metadata_`` and the ``label`` and ``split``
    columns. Rows whose split is none of the three values are left out; rows without a label are dropped
    (with a warning).

    Args:
        table: e.g. ``pandas.read_parquet`` of a table written by ``dino-boc embed`` plus your own columns.
        label: column of class labels (``name`` or ``Metadata_name``).
        split: column saying which split each row belongs to.
        train, val, test: the values of ``split`` marking each split (compared as text).

    Returns:
        :class:`FeatureSplits`; pass ``splits.probe_args()`` to :func:`linear_probe`.

    Raises:
        InputError: a missing column, a non-numeric feature column, no feature columns, or an empty split.
    """
    label_col, split_col = _table_column(table, label, "label"), _table_column(table, split, "split")
    features = [c for c in table.columns if not str(c).startswith("Metadata_") and c not in (label_col, split_col)]
    if not features:
        raise InputError("the table has no feature columns; expected Metadata_* columns followed by numeric features")
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise InputError(f"columns {bad[:5]} are not numeric, so they cannot be features; rename metadata columns "
                         "with the 'Metadata_' prefix (e.g. Metadata_treatment)")
    missing = table[label_col].isna()
    if missing.any():
        logger.warning("dropping %d rows without a label in %r", int(missing.sum()), label_col)
        table = table[~missing]
    which = table[split_col].astype(str)
    parts = {}
    for name, value in (("train", train), ("val", val), ("test", test)):
        rows = table[(which == str(value)).to_numpy()]
        if rows.empty:
            raise InputError(
                f"no rows have {split_col} == {value!r} (the {name} split); the column holds "
                f"{sorted(which.unique().tolist())[:10]} — pass the right value, or set aside a validation split "
                "(e.g. 10 % of each class of the training rows)"
            )
        parts[name] = (rows[features].to_numpy(dtype=np.float32), rows[label_col].to_numpy())
    return FeatureSplits(*parts["train"], *parts["val"], *parts["test"], feature_columns=[str(c) for c in features])
