"""The CHAMMI benchmark's 1-NN protocol (Chen et al., 2024), scored exactly as its own code does.

Rules, from broadinstitute/MorphEm ``morphem/evaluation.py`` (``evaluate``) and ``benchmark.py``:

- Sources never mix: each of Allen (WTC), HPA and CP is scored on its own rows and features.
- Reference set: the source's rows with ``train_test_split == "Train"``; labels from the ``Label`` column.
- Task ``T`` of a source queries the rows whose ``T`` flag column (``Task_one`` … ``Task_four``) is true.
- Leave-one-group-out for the tasks with novel classes (HPA ``Task_three`` grouped by ``cell_type``, CP
  ``Task_four`` grouped by ``Plate``): for each group ``g`` among the task's rows, the queries are the task
  rows of group ``g`` and the reference set is the Train rows plus the task rows of every other group
  (pandas ``==`` / ``!=`` semantics: a task row with a missing group value is never queried and always in
  the reference). Predictions of all groups are pooled, then scored once.
- Score: macro-F1 over the classes present in the task's ground truth
  (``f1_score(..., labels=np.unique(ground_truth), average="macro")``); accuracy alongside.
- 1-NN, exact; metric ``"l2"`` (the benchmark's default) or ``"cosine"`` (the released cell-DINO
  evaluation, whole vector L2-normalised), see :mod:`dino_boc.eval.knn`.

Summary columns, as the paper's Tables 4–6: ``WTC_OOD`` = WTC Task 2, ``HPA_OOD`` = mean of HPA Tasks 2–3,
``CP_OOD`` = mean of CP Tasks 2–4, ``Mean_OOD`` = mean of those three. Values are percentages.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from dino_boc.errors import ChannelError, ConfigError, InputError
from dino_boc.eval.chammi_data import SOURCES, ChammiSource, chammi_sources, load_chammi
from dino_boc.eval.knn import METRICS, Metric, knn
from dino_boc.eval.metrics import accuracy, macro_f1
from dino_boc.eval.presets import FeaturePreset, get_preset, preset_for
from dino_boc.models.base import EmbeddingModel
from dino_boc.outputs.provenance import state_dict_sha256
from dino_boc.weights.resolve import as_model

__all__ = ["TASK_COLUMNS", "SUMMARY_COLUMNS", "chammi_knn", "chammi_knn_tasks", "chammi_summary", "chammi"]

logger = logging.getLogger(__name__)

_TASK_NUMBER = {"Task_one": 1, "Task_two": 2, "Task_three": 3, "Task_four": 4}
#: One result column per task, in the paper's order.
TASK_COLUMNS: tuple[str, ...] = tuple(f"{s.name}_Task{_TASK_NUMBER[t]}" for s in SOURCES for t in s.tasks)
#: Summary columns, in the paper's order (first in the table).
SUMMARY_COLUMNS: tuple[str, ...] = ("Mean_OOD", "WTC_OOD", "HPA_OOD", "CP_OOD")
_OOD_TASKS = {"WTC": ("WTC_Task2",), "HPA": ("HPA_Task2", "HPA_Task3"), "CP": ("CP_Task2", "CP_Task3", "CP_Task4")}


# ---------------------------------------------------------------------------------------------- scoring
def _column(meta: pd.DataFrame, name: str) -> pd.Series:
    """A metadata column by its CHAMMI name, or with the dataset pipeline's ``Metadata_`` prefix."""
    for col in (name, "Metadata_" + name):
        if col in meta.columns:
            return meta[col]
    raise InputError(
        f"metadata has no {name!r} column; expected the CHAMMI enriched_meta.csv columns "
        "(load them with dino_boc.eval.load_chammi)"
    )


def _flag(meta: pd.DataFrame, task: str, source: str) -> np.ndarray:
    """A ``Task_*`` column as booleans (True/False, "True"/"False" or 1/0)."""
    col = _column(meta, task)
    if col.dtype == bool:
        return col.to_numpy()
    mapping = {True: True, False: False, "True": True, "False": False, "true": True, "false": False, 1: True, 0: False}
    out = col.map(lambda v: mapping.get(v.strip() if isinstance(v, str) else v))
    if out.isna().any():
        bad = col[out.isna()].iloc[0]
        raise InputError(
            f"{source} column {task!r} holds {bad!r}; expected True/False for every row of the source"
        )
    return out.to_numpy(dtype=bool)


def _source_features(x: np.ndarray, source: str) -> np.ndarray:
    """Drop the columns that are NaN for every row of the source (padding); zero padding is kept."""
    keep = ~np.isnan(x).all(axis=0)
    x = x[:, keep]
    if np.isnan(x).any():
        raise InputError(
            f"{source} features contain NaN outside whole padded columns; expected finite features — "
            "re-embed the failed images"
        )
    return x


def _score_task(x, codes, train_idx, meta, task, src: ChammiSource, *, metric, k):
    """Predictions and ground truth (label codes) of one task, with leave-one-group-out where it applies."""
    in_task = _flag(meta, task, src.folder)
    if src.leave_out is None or src.leave_out[0] != task:
        test_idx = np.flatnonzero(in_task)
        if test_idx.size == 0:
            return None, None, 0
        pred = knn(x[train_idx], codes[train_idx], x[test_idx], k=k, metric=metric)
        return pred, codes[test_idx], 1
    takeout = meta[in_task]
    group = _column(takeout, src.leave_out[1])
    preds, truth = [], []
    groups = list(group.unique())
    for g in groups:  # exactly as MorphEm: queries == g, references Train + (!= g) rows of the task
        query_idx = takeout.index[(group == g).to_numpy()].to_numpy()
        other_idx = takeout.index[(group != g).to_numpy()].to_numpy()
        if query_idx.size == 0:
            continue
        ref_idx = np.concatenate([train_idx, other_idx])
        preds.append(knn(x[ref_idx], codes[ref_idx], x[query_idx], k=k, metric=metric))
        truth.append(codes[query_idx])
    if not preds:
        return None, None, 0
    return np.concatenate(preds), np.concatenate(truth), len(groups)


def _score_source(x: np.ndarray, meta: pd.DataFrame, src: ChammiSource, *, metric: Metric, k: int) -> list[dict]:
    """Long-form rows (one per task) for one source; ``meta`` has index 0..n-1 aligned with ``x``."""
    labels = _column(meta, "Label").to_numpy()
    codes = pd.factorize(labels)[0]  # first-appearance order, as MorphEm's encoded_target
    train_idx = np.flatnonzero((_column(meta, "train_test_split") == "Train").to_numpy())
    if train_idx.size == 0:
        raise InputError(f"{src.folder} has no rows with train_test_split == 'Train'; expected a reference set")
    rows = []
    for task in src.tasks:
        pred, truth, n_groups = _score_task(x, codes, train_idx, meta, task, src, metric=metric, k=k)
        column = f"{src.name}_Task{_TASK_NUMBER[task]}"
        if pred is None:
            logger.warning("CHAMMI %s %s has no query rows; its score is NaN", src.folder, task)
            rows.append({"column": column, "source": src.name, "task": task, "macro_f1": np.nan,
                         "accuracy": np.nan, "n_queries": 0, "n_classes": 0, "n_groups": n_groups})
            continue
        rows.append({"column": column, "source": src.name, "task": task,
                     "macro_f1": macro_f1(truth, pred), "accuracy": accuracy(truth, pred),
                     "n_queries": int(truth.size), "n_classes": int(np.unique(truth).size), "n_groups": n_groups})
    return rows


def _as_features(features) -> np.ndarray:
    if isinstance(features, pd.DataFrame):
        cols = [c for c in features.columns if not str(c).startswith("Metadata_")]
        features = features[cols]
    x = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features)
    if x.ndim != 2:
        raise InputError(f"features have shape {x.shape}; expected (N, F), one row per metadata row")
    return x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)


def chammi_knn_tasks(features, metadata: pd.DataFrame, *, metric: Metric = "cosine", k: int = 1) -> pd.DataFrame:
    """Score every CHAMMI task; one row per task (long form of :func:`chammi_knn`).

    Args:
        features: (N, F) array, tensor or DataFrame (``Metadata_*`` columns are ignored) aligned with
            ``metadata``. Sources may have different widths padded to one F: columns that are NaN for every
            row of a source are dropped for that source; zero padding is kept, since zero columns change
            neither Euclidean distances nor cosine similarities.
        metadata: the Allen, HPA and CP ``enriched_meta.csv`` rows concatenated in that order (any subset of
            sources), e.g. from :func:`load_chammi`. Needs ``file_path`` (or ``chammi_source``),
            ``train_test_split``, ``Label``, the source's ``Task_*`` flags and ``cell_type`` (HPA) /
            ``Plate`` (CP); ``Metadata_``-prefixed names are accepted.
        metric: ``"cosine"`` (the released evaluation) or ``"l2"`` (the benchmark's default).
        k: neighbours (the benchmark uses 1).

    Returns:
        DataFrame with columns column, source, task, macro_f1, accuracy (fractions in [0, 1]), n_queries,
        n_classes (classes in the ground truth), n_groups (1, or the number of left-out groups).

    Raises:
        InputError: lengths disagree, columns are missing, or features are not finite.
    """
    x = _as_features(features)
    if x.shape[0] != len(metadata):
        raise InputError(
            f"features have {x.shape[0]} rows but metadata has {len(metadata)}; expected one feature row per "
            "metadata row, in the same order"
        )
    meta = metadata.reset_index(drop=True)
    sources = chammi_sources(meta)
    rows = []
    for src in SOURCES:
        idx = np.flatnonzero(sources == src.folder)
        if idx.size == 0:
            logger.warning("CHAMMI source %s is absent from the metadata; its tasks are NaN", src.folder)
            continue
        xs = _source_features(x[idx], src.folder)
        rows += _score_source(xs, meta.iloc[idx].reset_index(drop=True), src, metric=metric, k=k)
    return pd.DataFrame(rows, columns=["column", "source", "task", "macro_f1", "accuracy", "n_queries",
                                       "n_classes", "n_groups"])


def chammi_summary(task_scores) -> dict[str, float]:
    """The paper's summary columns from per-task scores (any scale; percentages in the paper).

    Args:
        task_scores: mapping (or one-row Series) from task columns (``WTC_Task2`` …) to scores.

    Returns:
        ``{"Mean_OOD", "WTC_OOD", "HPA_OOD", "CP_OOD"}`` — NaN where a needed task is missing.
    """
    per_source = {
        f"{name}_OOD": float(np.mean([task_scores.get(c, np.nan) for c in cols])) for name, cols in _OOD_TASKS.items()
    }
    mean = float(np.mean(list(per_source.values())))
    return {"Mean_OOD": mean, **per_source}


def _wide(long: pd.DataFrame, index: str | None = None) -> pd.DataFrame:
    scores = {c: np.nan for c in TASK_COLUMNS}
    scores.update({r.column: 100.0 * r.macro_f1 for r in long.itertuples()})
    row = {**chammi_summary(scores), **scores}
    return pd.DataFrame([row], columns=[*SUMMARY_COLUMNS, *TASK_COLUMNS], index=[index] if index else None)


def chammi_knn(features, metadata: pd.DataFrame, metric: Metric = "cosine", *, k: int = 1) -> pd.DataFrame:
    """The CHAMMI 1-NN benchmark table: one row, macro-F1 in percent, as the paper's Tables 4 and 5.

    Args:
        features: (N, F) features aligned with ``metadata`` (see :func:`chammi_knn_tasks` for padding).
        metadata: the Allen, HPA and CP ``enriched_meta.csv`` rows concatenated in that order.
        metric: ``"cosine"`` (the released evaluation, default) or ``"l2"`` (the benchmark's default).
        k: neighbours (the benchmark uses 1).

    Returns:
        One-row DataFrame: Mean_OOD, WTC_OOD, HPA_OOD, CP_OOD, WTC_Task1, WTC_Task2, HPA_Task1..3,
        CP_Task1..4 (percent). Per-task accuracy and counts are in :func:`chammi_knn_tasks`.

    Raises:
        InputError: see :func:`chammi_knn_tasks`.
    """
    return _wide(chammi_knn_tasks(features, metadata, metric=metric, k=k))


# ------------------------------------------------------------------------------- embedding and cache
def default_cache_dir() -> Path:
    """``$DINO_BOC_CACHE/chammi``, else ``$XDG_CACHE_HOME/dino_boc/chammi``, else ``~/.cache/dino_boc/chammi``."""
    base = os.environ.get("DINO_BOC_CACHE")
    if base:
        return Path(base) / "chammi"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "dino_boc" / "chammi"


def cache_digest(model: EmbeddingModel) -> str:
    """SHA-256 of everything that decides a model's features: the
    :func:`~dino_boc.outputs.provenance.state_dict_sha256` of its tensors, its architecture and its
    preprocessing settings (the hash part of :func:`cache_key`).

    Args:
        model: a loaded model.

    Returns:
        64 lowercase hex digits.
    """
    import json

    h = hashlib.sha256(state_dict_sha256(model).encode())
    for part in ("config", "preprocess"):
        value = getattr(model, part, None)
        if hasattr(value, "to_dict"):
            h.update(json.dumps(value.to_dict(), sort_keys=True).encode())
    return h.hexdigest()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "model"


def cache_key(model: EmbeddingModel | str | os.PathLike | None, preset: FeaturePreset, cache_name: str | None = None,
              *, label: str | None = None) -> str:
    """Folder name of a model's cached CHAMMI features: ``<label>-<weights hash>__<preset>``.

    The hash (:func:`cache_digest`, 16 hex digits) covers the weights, the architecture and the preprocessing,
    so replacing a model folder's weights (or its ``config.json`` preprocessing) never reuses old features.

    Args:
        model: a loaded model (a name or path is loaded to hash its weights); ignored with ``cache_name``.
        preset: the feature preset.
        cache_name: a folder name chosen by the caller instead (e.g. features computed elsewhere): used as
            given, without a hash — the caller vouches that it matches the model.
        label: readable part of the name; default the model's ``name``.

    Raises:
        InputError: ``model`` is neither a model nor a name/path, and no ``cache_name`` is given
            (:func:`~dino_boc.weights.resolve.as_model`).
        ModelNotFoundError, WeightsError: a name or path that does not load.
    """
    if cache_name is not None:
        return f"{_slug(str(cache_name))}__{preset.name}"
    if isinstance(model, (str, os.PathLike)):
        label = label or _label(model)
    model = as_model(model)
    label = label or model.name or type(model).__name__
    return f"{_slug(str(label))}-{cache_digest(model)[:16]}__{preset.name}"


def _label(model: str | os.PathLike) -> str:
    """The readable part of a cache name for a model given by name or path: a path's last component."""
    return Path(model).name if Path(model).exists() else os.fspath(model)


def _embed_rows(paths: list[str], widths: list[int], file_paths: list[str], *, get_model, preset: FeaturePreset,
                batch_size: int, num_workers: int, source: ChammiSource) -> pd.DataFrame:
    """Embed the images of one source through the dataset pipeline (the one place that calls it).

    Each image is an ``ImageRecord`` carrying its own ``channel_width`` (the tape is unfolded on reading)
    and its ``file_path`` as metadata; the pipeline skips unreadable images and lists them in
    ``table.attrs["errors"]``.

    Returns the pipeline's table: ``Metadata_*`` columns (``Metadata_file_path`` among them), then feature
    columns, one row per embedded image, in input order.
    """
    from dino_boc.io import ImageRecord
    from dino_boc.pipeline import embed_dataset

    records = [ImageRecord(id=fp, paths=(p,), metadata={"file_path": fp}, channel_width=int(w))
               for p, w, fp in zip(paths, widths, file_paths)]
    model = get_model()
    channels = None
    if model.config.arch == "fixed":  # its own channels, in its order, or a clear error
        try:
            channels = model.select_channels(source.channels, source.n_channels)
        except ChannelError as exc:
            raise ChannelError(f"CHAMMI source {source.folder}: {exc}") from None
    return embed_dataset(records, None, model=model, batch_size=batch_size, num_workers=num_workers,
                         channels=channels, **preset_for(preset, model).embed_kwargs())


def _model_loader(model):
    """A function giving the loaded model, loading a name/path on first use only (cached features need none)."""
    loaded = []

    def get():
        if not loaded:
            loaded.append(as_model(model))
        return loaded[0]

    return get


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_cache(path: Path, file_paths: list[str]) -> np.ndarray | None:
    """Cached features of ``file_paths`` from ``path``, or None when absent, stale, truncated or corrupt."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb"):
            pass
    except PermissionError as exc:  # not a corrupt file: embedding again would not help
        raise InputError(f"cannot open cached features {path}: permission denied; fix its permissions or pass "
                         "another --cache-dir") from exc
    try:
        table = pd.read_parquet(path)
        cached = table["Metadata_file_path"].astype(str).tolist() if "Metadata_file_path" in table else None
        if cached != file_paths:
            logger.warning("cached features %s do not match the metadata rows; embedding again", path)
            return None
        x = _as_features(table)
    except (OSError, ValueError, TypeError, KeyError, InputError) as exc:  # pyarrow's errors subclass these
        logger.warning("cached features %s are unreadable (%s: %s); embedding again", path, type(exc).__name__, exc)
        return None
    logger.info("using cached CHAMMI features %s", path)
    return x


def _cached_source(root: Path, rows: pd.DataFrame, path: Path, **embed_opts) -> np.ndarray:
    """Features (n, F) of one source's rows, from ``path`` when it matches the rows, else embedded and saved."""
    file_paths = rows["file_path"].astype(str).tolist()
    cached = _read_cache(path, file_paths)
    if cached is not None:
        return cached
    paths = [str(root / p) for p in file_paths]
    table = _embed_rows(paths, rows["channel_width"].astype(int).tolist(), file_paths, **embed_opts)
    if "Metadata_file_path" in table.columns:
        got = table["Metadata_file_path"].astype(str).tolist()
        if got != file_paths:
            missing = sorted(set(file_paths) - set(got))
            errors = [f"{e.get('path')}: {e.get('reason')}" for e in table.attrs.get("errors", [])[:3]]
            raise InputError(
                f"the pipeline returned {len(got)} rows for {len(file_paths)} images (missing e.g. {missing[:3]}; "
                f"errors: {errors}); expected every CHAMMI image embedded in order — fix or re-download those files"
            )
    elif len(table) != len(file_paths):
        raise InputError(f"the pipeline returned {len(table)} rows for {len(file_paths)} images")
    else:
        table.insert(0, "Metadata_file_path", file_paths)
    _write_parquet(table, path)
    return _as_features(table)


def chammi(
    root: str | Path,
    *,
    model,
    cache_dir: str | Path | None = None,
    metric: Metric = "cosine",
    preset: str | FeaturePreset = "chammi",
    batch_size: int = 64,
    num_workers: int = 4,
    cache_name: str | None = None,
) -> pd.DataFrame:
    """Run the CHAMMI 1-NN benchmark for a model: load, embed once (cached), score.

    Features of each source are cached as ``<cache_dir>/<model>-<weights hash>__<preset>/{Allen,HPA,CP}.parquet``
    (``Metadata_file_path`` then the feature columns, rows in ``enriched_meta.csv`` order); a later call
    with the same weights, preprocessing and preset reads them instead of embedding again. A cache file that
    is truncated, corrupt or does not match the metadata rows is embedded again.

    Args:
        root: folder of the unpacked CHAMMI release.
        model: a model name / path / Hub id accepted by ``load_model``, or a loaded model.
        cache_dir: where features are cached; default :func:`default_cache_dir`.
        metric: ``"cosine"`` (the released evaluation) or ``"l2"`` (the benchmark's default).
        preset: feature preset; ``"chammi"`` is the paper's (last-block CLS, resize 256, crop 224); zoo models
            with their own square resize keep it (:func:`~dino_boc.eval.presets.preset_for`).
        batch_size: images per forward pass while embedding.
        num_workers: image-reading worker processes while embedding.
        cache_name: name of the cache folder instead of the model's name and weights hash (see
            :func:`cache_key`); the model is then loaded only if something must be embedded.

    Returns:
        The one-row table of :func:`chammi_knn`, indexed by the cache key.

    Raises:
        ConfigError: ``batch_size`` < 1, ``num_workers`` < 0 or an unknown metric (before any work).
        InputError: the release is incomplete, or the pipeline failed on some images.
    """
    for name, v, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"{name}={v!r} must be an integer >= {low}")
    if metric not in METRICS:
        raise ConfigError(f"metric={metric!r} is unknown; choose one of {METRICS}")
    root = Path(root)
    preset = get_preset(preset)
    meta = load_chammi(root)  # the release is checked before a model is loaded
    label = None
    if isinstance(model, (str, os.PathLike)):  # a path is named by its last component; the hash tells them apart
        label = _label(model)
    if cache_name is None and label is not None:  # loaded once: its weights name the cache and embed the images
        model = as_model(model)
    key = cache_key(model, preset, cache_name, label=label)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    sources = chammi_sources(meta)
    opts = {"get_model": _model_loader(model), "preset": preset, "batch_size": batch_size, "num_workers": num_workers}
    rows = []
    for src in SOURCES:
        part = meta[sources == src.folder].reset_index(drop=True)
        x = _cached_source(root, part, folder / key / f"{src.folder}.parquet", source=src, **opts)
        if x.shape[0] != len(part):
            raise InputError(f"{src.folder}: {x.shape[0]} feature rows for {len(part)} images")
        rows += _score_source(_source_features(x, src.folder), part, src, metric=metric, k=1)
    return _wide(pd.DataFrame(rows), index=key)
