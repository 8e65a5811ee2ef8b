"""Feature table → well profiles: aggregate, normalise per plate against controls, select features,
sphere, Harmony; the JUMP Cell Painting recipe as glue over pycytominer and harmonypy.

Every step is delegated: aggregation, normalisation (``mad_robustize`` / ``standardize`` / ``robustize``,
inverse normal transform, sphering) and feature selection are ``pycytominer.aggregate`` /
``normalize`` / ``feature_select`` called on the same table; batch correction is
``harmonypy.run_harmony``. Each step is recorded (what ran, its settings, rows and features in and out,
library versions) and written into the output next to the input's own provenance.

>>> from dino_boc.eval.profiles import ProfileConfig, make_profiles
>>> out = make_profiles(table, config=ProfileConfig(control="Metadata_pert_type == 'negcon'"))
>>> out.table  # (N wells, Metadata_* + F selected features); out.steps: one dict per step

Needs the ``profiles`` extra: ``pip install "dino-boc[profiles]"``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from dino_boc.errors import ConfigError, InputError, require
from dino_boc.outputs.columns import METADATA_PREFIX

__all__ = [
    "Aggregate",
    "Normalize",
    "NormalizeBy",
    "Sphere",
    "SelectOp",
    "ChannelSets",
    "DEFAULT_SELECT",
    "ProfileConfig",
    "Profiles",
    "make_profiles",
    "feature_columns",
    "control_rows",
    "channel_presence",
    "common_features",
    "aggregate",
    "as_float",
    "finish_profiles",
    "library_versions",
]

logger = logging.getLogger(__name__)

Aggregate = Literal["median", "mean", "none"]
Normalize = Literal["mad_robustize", "standardize", "robustize", "none"]
NormalizeBy = Literal["plate", "all"]
Sphere = Literal["none", "ZCA", "ZCA-cor", "PCA", "PCA-cor"]
SelectOp = Literal["variance_threshold", "correlation_threshold", "drop_na_columns", "drop_outliers", "blocklist"]
ChannelSets = Literal["common", "error"]
#: the JUMP recipe's selection (variance, correlation, missing values, outliers); "blocklist" is
#: CellProfiler-specific and not in the default
DEFAULT_SELECT: tuple[SelectOp, ...] = ("variance_threshold", "correlation_threshold", "drop_na_columns",
                                        "drop_outliers")
CHANNELS_COLUMN = "Metadata_channels"
ROW_COUNT_COLUMN = "Metadata_n_rows"
#: CellProfiler row indices without the Metadata_ prefix: never features
CELLPROFILER_INDEX = ("ImageNumber", "ObjectNumber", "TableNumber")


@dataclass(frozen=True)
class ProfileConfig:
    """How a feature table becomes profiles (defaults: the JUMP recipe's order and choices).

    Attributes:
        strata: columns naming one well (or any group) to aggregate rows to.
        aggregate: ``"median"`` (JUMP default for single cells), ``"mean"``, or ``"none"`` for a
            table that already has one row per well.
        plate_col: column naming the plate; normalisation is fitted per plate.
        control: pandas query selecting negative-control rows, e.g. ``"Metadata_pert_type == 'negcon'"``;
            normalisation and sphering are fitted on them. None fits on all rows (not recommended).
        normalize: ``"mad_robustize"`` ((x - median) / (1.4826 MAD), JUMP), ``"standardize"``,
            ``"robustize"`` (median / IQR) or ``"none"``.
        normalize_by: ``"plate"`` (one fit per plate, as JUMP) or ``"all"`` (one fit on the whole table).
        mad_epsilon: added to the MAD (pycytominer's ``mad_robustize_epsilon``).
        inverse_normal: apply the rank-based inverse normal transform after normalising.
        select: pycytominer ``feature_select`` operations, in order; empty to keep every feature.
        na_cutoff: ``drop_na_columns``: largest fraction of missing values a feature may have.
        corr_threshold: ``correlation_threshold``: drop one of each pair correlated above this.
        outlier_cutoff: ``drop_outliers``: drop features whose largest |value| exceeds this.
        sphere: whitening fitted on the control rows of the whole table (``"ZCA-cor"`` as the CPJUMP1
            evaluation), or ``"none"``.
        sphere_epsilon: eigenvalue regulariser of sphering (1e-3 in the CPJUMP1 evaluation).
        harmony: column with the batch of each row to correct with Harmony (e.g. ``Metadata_Plate``).
        harmony_nclust: Harmony's number of clusters (None: harmonypy's default, min(N/30, 100)).
        channel_sets: for tables mixing channel sets (``Metadata_channels`` differs and each set lacks
            the others' columns): ``"common"`` keeps the features every set has, ``"error"`` refuses.
        features: feature columns; None takes every numeric column not starting with ``Metadata_``.
    """

    strata: tuple[str, ...] = ("Metadata_Plate", "Metadata_Well")
    aggregate: Aggregate = "median"
    plate_col: str = "Metadata_Plate"
    control: str | None = None
    normalize: Normalize = "mad_robustize"
    normalize_by: NormalizeBy = "plate"
    mad_epsilon: float = 0.0
    inverse_normal: bool = False
    select: tuple[SelectOp, ...] = DEFAULT_SELECT
    na_cutoff: float = 0.05
    corr_threshold: float = 0.9
    outlier_cutoff: float = 500.0
    sphere: Sphere = "none"
    sphere_epsilon: float = 1e-3
    harmony: str | None = None
    harmony_nclust: int | None = None
    channel_sets: ChannelSets = "common"
    features: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name, kind in (("aggregate", Aggregate), ("normalize", Normalize), ("normalize_by", NormalizeBy),
                           ("sphere", Sphere), ("channel_sets", ChannelSets)):
            if getattr(self, name) not in get_args(kind):
                raise ConfigError(f"{name}={getattr(self, name)!r}; expected one of {get_args(kind)}")
        bad = [op for op in self.select if op not in get_args(SelectOp)]
        if bad:
            raise ConfigError(f"select: unknown operation(s) {bad}; expected some of {get_args(SelectOp)}")
        if not 0.0 <= self.na_cutoff <= 1.0 or not 0.0 < self.corr_threshold <= 1.0:
            raise ConfigError(f"na_cutoff={self.na_cutoff}, corr_threshold={self.corr_threshold}; "
                              "expected na_cutoff in [0, 1] and corr_threshold in (0, 1]")
        if self.mad_epsilon < 0 or self.sphere_epsilon < 0 or self.outlier_cutoff <= 0:
            raise ConfigError("mad_epsilon and sphere_epsilon must be >= 0 and outlier_cutoff > 0")
        if self.aggregate != "none" and not self.strata:
            raise ConfigError("aggregate needs strata (e.g. Metadata_Plate, Metadata_Well); or pass aggregate='none'")


@dataclass
class Profiles:
    """Result of :func:`make_profiles`.

    Attributes:
        table: (N rows, metadata columns + F features) the profiles.
        features: the F feature column names, in table order.
        steps: one JSON-ready dict per step that ran (name, settings, rows/features in and out).
        source: provenance carried over from the input (its ``dino_boc`` metadata), if any.
    """

    table: pd.DataFrame
    features: list[str]
    steps: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] | None = None

    def provenance(self) -> dict[str, Any]:
        """The JSON written into the output (``dino_boc.eval.profile_files.PROFILES_KEY``)."""
        return {"format_version": 1, "steps": self.steps, "n_rows": len(self.table), "n_features": len(self.features),
                "libraries": library_versions("pycytominer", "harmonypy", "dino-boc")}


def library_versions(*names: str) -> dict[str, str]:
    """Installed version of each named distribution (``"not installed"`` when absent), for provenance."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def feature_columns(table: pd.DataFrame, features: Any = None) -> list[str]:
    """The feature columns: ``features`` if given (all must exist and be numeric), else every numeric
    column not starting with ``Metadata_`` (CellProfiler's ``ImageNumber`` / ``ObjectNumber`` /
    ``TableNumber`` row indices excepted).

    Raises:
        InputError: a named column is missing or not numeric, or the table has no feature column.
    """
    if features is not None:
        names = [str(c) for c in features]
        missing = [c for c in names if c not in table.columns]
        if missing:
            raise InputError(f"feature columns {missing[:5]} are not in the table; expected some of "
                             f"{[c for c in table.columns if not str(c).startswith(METADATA_PREFIX)][:5]}...")
    else:
        names = [str(c) for c in table.columns if not str(c).startswith(METADATA_PREFIX)]
        index = [c for c in names if c in CELLPROFILER_INDEX]
        if index:
            logger.info("CellProfiler index columns %s are not features", index)
            names = [c for c in names if c not in CELLPROFILER_INDEX]
    numeric = [c for c in names if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])]
    skipped = [c for c in names if c not in numeric]
    if skipped and features is not None:
        raise InputError(f"feature columns {skipped[:5]} are not numeric; pass numeric columns only")
    if skipped:
        logger.warning("%d non-numeric column(s) without the Metadata_ prefix are not features: %s", len(skipped),
                       skipped[:5])
    if not numeric:
        raise InputError(f"the table has no numeric feature column (columns: {list(table.columns)[:8]}...); "
                         "features are the numeric columns not starting with 'Metadata_'")
    return numeric


def _step(steps: list[dict[str, Any]], name: str, before: pd.DataFrame, after: pd.DataFrame, n_in: int, n_out: int,
          **settings: Any) -> None:
    steps.append({"step": name, **settings, "rows_in": int(len(before)), "rows_out": int(len(after)),
                  "features_in": int(n_in), "features_out": int(n_out)})
    logger.info("%s: %d rows x %d features -> %d x %d", name, len(before), n_in, len(after), n_out)


def channel_presence(table: pd.DataFrame, feats: list[str]) -> tuple[pd.DataFrame, pd.Series] | None:
    """Which features each channel set has: (sets x F) bool frame and the rows per set; None for a table
    without ``Metadata_channels``. Frames of several parts of a table combine with ``|`` and ``+``."""
    if CHANNELS_COLUMN not in table.columns:
        return None
    sets = table[CHANNELS_COLUMN].astype(str)
    return table[feats].notna().groupby(sets, sort=True).any(), sets.value_counts()


def common_features(presence: tuple[pd.DataFrame, pd.Series] | None, feats: list[str], policy: ChannelSets,
                    steps: list[dict[str, Any]]) -> list[str]:
    """Features present in every channel set; records a ``channel_sets`` step when some are dropped.

    Raises:
        InputError: sets lack each other's features and ``policy`` is ``"error"``, or they share none.
    """
    if presence is None or len(presence[0]) < 2:
        return feats
    present, counts = presence
    common = [c for c in feats if bool(present[c].all())]
    if len(common) == len(feats):
        return feats
    sets = {str(k): int(v) for k, v in counts.sort_values(ascending=False, kind="stable").items()}
    if policy == "error":
        raise InputError(f"the table mixes {len(sets)} channel sets {list(sets)[:4]}; {len(feats) - len(common)} "
                         f"features are missing in some of them. Pass channel_sets='common' (--channel-sets common) "
                         "to keep the features all sets have, or embed each set separately")
    if not common:
        raise InputError(f"the table mixes channel sets {list(sets)[:4]} that share no feature column; profiles "
                         "need one feature space: embed with a channel-pooled layout or profile each set separately")
    logger.warning("mixed channel sets %s: keeping the %d features all sets share, dropping %d", list(sets)[:4],
                   len(common), len(feats) - len(common))
    n = int(counts.sum())
    steps.append({"step": "channel_sets", "policy": policy, "channel_sets": sets, "rows_in": n, "rows_out": n,
                  "features_in": len(feats), "features_out": len(common)})
    return common


def aggregate(table: pd.DataFrame, feats: list[str], cfg: ProfileConfig, steps: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> one row per ``cfg.strata`` group (``pycytominer.aggregate``), keeping the metadata that is constant
    within each group and adding ``Metadata_n_rows``; records an ``aggregate`` step."""
    pycytominer = require("pycytominer", "profiles")
    missing = [c for c in cfg.strata if c not in table.columns]
    if missing:
        raise InputError(f"strata columns {missing} are not in the table; pass strata naming a well (e.g. "
                         "--strata Metadata_Plate Metadata_Well), or --aggregate none for a table of well profiles")
    agg = pycytominer.aggregate(table, strata=list(cfg.strata), features=feats, operation=cfg.aggregate)
    # metadata constant within each stratum (perturbation, plate map columns) is kept; the rest is dropped
    meta = [c for c in table.columns if str(c).startswith(METADATA_PREFIX) and c not in cfg.strata]
    groups = table.groupby(list(cfg.strata), dropna=False, sort=True)
    constant = [c for c in meta if int(groups[c].nunique(dropna=False).max()) <= 1]
    first = groups[constant].first().reset_index() if constant else groups.size().reset_index()[list(cfg.strata)]
    first[ROW_COUNT_COLUMN] = groups.size().to_numpy()
    out = first.merge(agg, on=list(cfg.strata), how="inner", validate="one_to_one")
    _step(steps, "aggregate", table, out, len(feats), len(feats), function="pycytominer.aggregate",
          operation=cfg.aggregate, strata=list(cfg.strata), metadata_dropped=[c for c in meta if c not in constant])
    return out


def control_rows(table: pd.DataFrame, control: str | None) -> np.ndarray:
    """(N,) bool mask of the rows a pandas query selects (all rows when ``control`` is None).

    Raises:
        InputError: the query cannot be evaluated on the table.
    """
    if control is None:
        return np.ones(len(table), dtype=bool)
    try:
        idx = table.reset_index(drop=True).query(control).index
    except Exception as exc:  # pandas raises many kinds for a bad query
        raise InputError(f"control query {control!r} failed on the table ({type(exc).__name__}: {exc}); expected a "
                         "pandas query over its columns, e.g. \"Metadata_pert_type == 'negcon'\"") from exc
    mask = np.zeros(len(table), dtype=bool)
    mask[np.asarray(idx)] = True
    return mask


def _normalize(table: pd.DataFrame, feats: list[str], cfg: ProfileConfig, steps: list[dict[str, Any]]) -> pd.DataFrame:
    pycytominer = require("pycytominer", "profiles")
    table = table.reset_index(drop=True)
    controls = control_rows(table, cfg.control)
    if not controls.any():
        raise InputError(f"control query {cfg.control!r} selects no row; check the column and value (e.g. "
                         f"{table.filter(like='control').columns.tolist()[:3] or 'Metadata_pert_type'})")
    meta = [c for c in table.columns if c not in feats]
    samples = "all" if cfg.control is None else cfg.control
    if cfg.normalize_by == "plate":
        if cfg.plate_col not in table.columns:
            raise InputError(f"plate column {cfg.plate_col!r} is not in the table; pass plate_col (--plate-col) or "
                             "normalize_by='all' (--normalize-by all)")
        plates = table[cfg.plate_col].astype(str)
        no_controls = sorted(set(plates) - set(plates[controls]))
        if no_controls:
            raise InputError(f"plates {no_controls[:5]} have no control row for {cfg.control!r}; every plate needs "
                             "negative controls to be normalised against, or pass normalize_by='all'")
        parts = [pycytominer.normalize(table[plates == p], features=feats, meta_features=meta, samples=samples,
                                       method=cfg.normalize, mad_robustize_epsilon=cfg.mad_epsilon)
                 for p in sorted(set(plates))]
        out = pd.concat(parts).loc[table.index]
    else:
        out = pycytominer.normalize(table, features=feats, meta_features=meta, samples=samples, method=cfg.normalize,
                                    mad_robustize_epsilon=cfg.mad_epsilon)
    out = out[list(table.columns)]
    _step(steps, "normalize", table, out, len(feats), len(feats), function="pycytominer.normalize",
          method=cfg.normalize, by=cfg.normalize_by, plate_col=cfg.plate_col if cfg.normalize_by == "plate" else None,
          samples=samples, n_control_rows=int(controls.sum()), mad_robustize_epsilon=cfg.mad_epsilon)
    return out


def _inverse_normal(table: pd.DataFrame, feats: list[str], steps: list[dict[str, Any]]) -> pd.DataFrame:
    pycytominer = require("pycytominer", "profiles")
    meta = [c for c in table.columns if c not in feats]
    out = pycytominer.normalize(table, features=feats, meta_features=meta, samples="all", method="inverse_normal")
    out = out[list(table.columns)]
    _step(steps, "inverse_normal", table, out, len(feats), len(feats), function="pycytominer.normalize",
          method="inverse_normal", samples="all")
    return out


def _select(table: pd.DataFrame, feats: list[str], cfg: ProfileConfig, steps: list[dict[str, Any]]) -> list[str]:
    pycytominer = require("pycytominer", "profiles")
    out = pycytominer.feature_select(table, features=feats, operation=list(cfg.select), na_cutoff=cfg.na_cutoff,
                                     corr_threshold=cfg.corr_threshold, outlier_cutoff=cfg.outlier_cutoff)
    kept = [c for c in feats if c in out.columns]
    if not kept:
        raise InputError(f"feature selection {list(cfg.select)} dropped all {len(feats)} features; relax it "
                         "(--select with fewer operations, a higher --corr-threshold or --na-cutoff)")
    _step(steps, "feature_select", table, out, len(feats), len(kept), function="pycytominer.feature_select",
          operation=list(cfg.select), na_cutoff=cfg.na_cutoff, corr_threshold=cfg.corr_threshold,
          outlier_cutoff=cfg.outlier_cutoff)
    return kept


def _sphere(table: pd.DataFrame, feats: list[str], cfg: ProfileConfig, steps: list[dict[str, Any]]) -> pd.DataFrame:
    pycytominer = require("pycytominer", "profiles")
    meta = [c for c in table.columns if c not in feats]
    samples = "all" if cfg.control is None else cfg.control
    try:
        out = pycytominer.normalize(table, features=feats, meta_features=meta, samples=samples, method="spherize",
                                    spherize_method=cfg.sphere, spherize_epsilon=cfg.sphere_epsilon)
    except ValueError as exc:
        raise InputError(f"sphering ({cfg.sphere}) failed on {int(control_rows(table, cfg.control).sum())} control "
                         f"rows x {len(feats)} features: {exc}. Keep feature selection on (it drops constant and "
                         "collinear features) or pass sphere='none'") from exc
    out = out[list(table.columns)]
    _step(steps, "sphere", table, out, len(feats), len(feats), function="pycytominer.normalize", method="spherize",
          spherize_method=cfg.sphere, spherize_epsilon=cfg.sphere_epsilon, samples=samples)
    return out


def _harmony(table: pd.DataFrame, feats: list[str], cfg: ProfileConfig, steps: list[dict[str, Any]]) -> pd.DataFrame:
    harmonypy = require("harmonypy", "profiles")
    if cfg.harmony not in table.columns:
        raise InputError(f"harmony batch column {cfg.harmony!r} is not in the table; pass an existing column")
    batches = table[[cfg.harmony]].astype(str)
    if batches[cfg.harmony].nunique() < 2:
        raise InputError(f"harmony batch column {cfg.harmony!r} has a single value; Harmony needs two batches or more")
    x = table[feats].to_numpy(dtype=np.float64)
    result = harmonypy.run_harmony(x, batches, cfg.harmony, nclust=cfg.harmony_nclust, random_state=0, verbose=False)
    z = np.asarray(result.Z_corr)
    z = z if z.shape == x.shape else z.T  # (N, F); older harmonypy returns (F, N)
    out = table.copy()
    out[feats] = z
    _step(steps, "harmony", table, out, len(feats), len(feats), function="harmonypy.run_harmony", batch=cfg.harmony,
          nclust=cfg.harmony_nclust, random_state=0)
    return out


def make_profiles(table: pd.DataFrame, *, config: ProfileConfig = ProfileConfig(),
                  source: dict[str, Any] | None = None) -> Profiles:
    """Aggregate, normalise, select, sphere and batch-correct a feature table (order of the JUMP recipe).

    Args:
        table: (rows, Metadata_* + features): a dino_boc table (images, sites or cells) or
            CellProfiler / pycytominer profiles.
        config: the steps and their settings.
        source: provenance of the input, carried into the result.

    Returns:
        :class:`Profiles`: (N, metadata + F) table, F kept feature names, the recorded steps.

    Raises:
        InputError: missing strata/plate/feature columns, a control query selecting nothing or a plate
            without controls, all features dropped, or non-finite values left at the end (turn on
            ``drop_na_columns`` / ``drop_outliers`` or check the input).
    """
    steps: list[dict[str, Any]] = [{"step": "config", **asdict(config)}]
    feats = feature_columns(table, config.features)
    feats = common_features(channel_presence(table, feats), feats, config.channel_sets, steps)
    work = as_float(table, feats)
    if config.aggregate != "none":
        work = aggregate(work, feats, config, steps)
    return finish_profiles(work, feats, config=config, steps=steps, source=source)


def as_float(table: pd.DataFrame, feats: list[str]) -> pd.DataFrame:
    """The ``Metadata_*`` columns and the features as float64, one unfragmented frame."""
    meta = [c for c in table.columns if str(c).startswith(METADATA_PREFIX)]
    return pd.concat([table[meta], table[feats].astype(np.float64)], axis=1)


def finish_profiles(work: pd.DataFrame, feats: list[str], *, config: ProfileConfig, steps: list[dict[str, Any]],
                    source: dict[str, Any] | None = None) -> Profiles:
    """The steps after aggregation (normalise, inverse normal, select, sphere, Harmony) and the final check."""
    if config.normalize != "none":
        work = _normalize(work, feats, config, steps)
    if config.inverse_normal:
        work = _inverse_normal(work, feats, steps)
    if config.select:
        kept = _select(work, feats, config, steps)
        work = work.drop(columns=[c for c in feats if c not in set(kept)])
        feats = kept
    if config.sphere != "none":
        work = _sphere(work, feats, config, steps)
    if config.harmony:
        work = _harmony(work, feats, config, steps)
    values = work[feats].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        cols = [feats[j] for j in np.flatnonzero(bad.any(axis=0))]
        raise InputError(f"{int(bad.any(axis=1).sum())} profile rows keep NaN or infinite values in {len(cols)} "
                         f"features (first: {cols[:3]}); keep 'drop_na_columns' and 'drop_outliers' in select, "
                         "or a MAD of 0 in the controls made them infinite")
    meta = [c for c in work.columns if c not in set(feats)]
    return Profiles(table=work[meta + feats].reset_index(drop=True), features=feats, steps=steps, source=source)
