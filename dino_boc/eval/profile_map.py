"""Score profiles with mean average precision (copairs), as the JUMP consortium and CHAMMI-75's JUMP-CP
benchmark do.

* **Phenotypic activity**: each perturbation's replicate wells are retrieved against negative-control
  wells. Every well of a perturbation is a query; its other wells are the positives, the control wells
  (of the same plate when ``plate_col`` is given) the negatives; controls are not scored. copairs'
  ``average_precision`` then ``mean_average_precision`` (permutation null, Benjamini-Hochberg FDR).
* **Phenotypic consistency** (with ``target_col``): the median consensus profile of each *active*
  perturbation is retrieved against the consensus profiles of perturbations that share none of its
  targets; ``|``-separated targets are multilabel (copairs' ``multilabel.average_precision``).

All the scoring is copairs'; this module builds its inputs and writes the tables. Needs the
``profiles`` extra: ``pip install "dino-boc[profiles]"``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from dino_boc.errors import ConfigError, InputError, require
from dino_boc.eval.profiles import control_rows, library_versions, feature_columns

__all__ = ["Distance", "MapConfig", "MapResult", "MAP_COLUMNS", "REFERENCE_COLUMN", "phenotypic_activity",
           "phenotypic_consistency", "profile_map", "write_map"]

logger = logging.getLogger(__name__)

Distance = Literal["cosine", "abs_cosine", "correlation", "euclidean"]
#: copairs' output columns every table carries
MAP_COLUMNS = ("mean_average_precision", "mean_normalized_average_precision", "p_value", "corrected_p_value",
               "below_p", "below_corrected_p")
#: copairs' reference-index column (assign_reference_index): -1 for treatments, the row for controls
REFERENCE_COLUMN = "Metadata_reference_index"


@dataclass(frozen=True)
class MapConfig:
    """How profiles are scored (defaults: CHAMMI-75's JUMP-CP evaluation, copairs' example notebooks).

    Attributes:
        pert_col: column naming the perturbation of each well (replicates share it).
        control: pandas query selecting the negative-control wells.
        plate_col: if given, a query's negatives are the controls of its own plate (JUMP, CHAMMI-75).
        target_col: column of ``|``-separated targets (or MoAs); enables phenotypic consistency.
        null_size: size of copairs' permutation null per (positives, total) configuration.
        threshold: FDR level for ``below_corrected_p`` (0.05).
        seed: seed of the null distribution.
        distance: copairs similarity.
        batch_size: pairs per similarity batch in copairs.
        features: feature columns; None: every numeric column not starting with ``Metadata_``.
    """

    pert_col: str
    control: str
    plate_col: str | None = None
    target_col: str | None = None
    null_size: int = 100_000
    threshold: float = 0.05
    seed: int = 0
    distance: Distance = "cosine"
    batch_size: int = 20_000
    features: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.distance not in get_args(Distance):
            raise ConfigError(f"distance={self.distance!r}; expected one of {get_args(Distance)}")
        if self.null_size < 100:
            raise ConfigError(f"null_size={self.null_size}; expected >= 100 (p-values cannot go below 1/null_size)")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold={self.threshold}; expected an FDR level in (0, 1), e.g. 0.05")


@dataclass
class MapResult:
    """Tables of :func:`profile_map`.

    Attributes:
        activity: one row per perturbation: ``pert_col``, ``n_wells``, copairs' columns (:data:`MAP_COLUMNS`).
        consistency: one row per target (empty when no ``target_col`` or nothing to score).
        summary: one row per analysis: ``analysis``, ``n_scored``, ``n_retrieved``, ``fraction_retrieved``
            (``below_corrected_p``), ``mean_map`` (over all scored), ``mean_map_retrieved``.
        protocol: the settings and copairs pairing rules used, JSON-ready.
    """

    activity: pd.DataFrame
    consistency: pd.DataFrame
    summary: pd.DataFrame
    protocol: dict[str, Any] = field(default_factory=dict)


def _features(profiles: pd.DataFrame, config: MapConfig) -> tuple[list[str], np.ndarray]:
    feats = feature_columns(profiles, config.features)
    x = profiles[feats].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InputError(f"{int(bad.sum())} of {len(x)} profile rows have NaN or infinite features (first: row "
                         f"{int(np.argmax(bad))}); run 'dino-boc eval profiles' (it drops such features) or drop them")
    return feats, x


def _check_columns(profiles: pd.DataFrame, *cols: str | None) -> None:
    missing = [c for c in cols if c is not None and c not in profiles.columns]
    if missing:
        raise InputError(f"columns {missing} are not in the profiles; metadata columns there: "
                         f"{[c for c in profiles.columns if str(c).startswith('Metadata_')][:10]}")


def _summary_row(analysis: str, table: pd.DataFrame, n_total: int) -> dict[str, Any]:
    scored = len(table)
    hits = table["below_corrected_p"].astype(bool) if scored else pd.Series(dtype=bool)
    return {"analysis": analysis, "n_total": n_total, "n_scored": scored, "n_retrieved": int(hits.sum()),
            "fraction_retrieved": float(hits.mean()) if scored else float("nan"),
            "mean_map": float(table["mean_average_precision"].mean()) if scored else float("nan"),
            "mean_map_retrieved": float(table.loc[hits, "mean_average_precision"].mean()) if hits.any() else float("nan")}


def phenotypic_activity(profiles: pd.DataFrame, *, config: MapConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Phenotypic activity: replicate wells of each perturbation retrieved against control wells.

    Args:
        profiles: (N wells, Metadata_* + F features), e.g. the output of :func:`make_profiles`.
        config: columns, control query and copairs settings.

    Returns:
        (activity, protocol): one row per perturbation with at least two non-control wells
        (``pert_col``, ``n_wells`` and copairs' columns), and the pairing rules used.

    Raises:
        InputError: missing columns, non-finite features, no control or no replicate well.
    """
    copairs_map = require("copairs.map", "profiles")
    from_matching = require("copairs.matching", "profiles")
    _check_columns(profiles, config.pert_col, config.plate_col)
    profiles = profiles.reset_index(drop=True)
    feats, x = _features(profiles, config)
    controls = control_rows(profiles, config.control)
    if not controls.any():
        raise InputError(f"control query {config.control!r} selects no well; expected negative-control wells")
    if REFERENCE_COLUMN in profiles.columns:
        raise InputError(f"the profiles already have a {REFERENCE_COLUMN!r} column; rename it")
    treated = ~controls
    unnamed = treated & profiles[config.pert_col].isna().to_numpy()
    if unnamed.any():
        raise InputError(f"{int(unnamed.sum())} non-control wells have no {config.pert_col!r} value (first: row "
                         f"{int(np.argmax(unnamed))}); fill it or widen the control query")
    if config.plate_col:
        plates = profiles[config.plate_col].astype(str)
        bare = sorted(set(plates[treated]) - set(plates[controls]))
        if bare:
            raise InputError(f"plates {bare[:5]} have treated wells but no control well; their wells would have no "
                             "negatives (and a perfect AP). Add their controls, drop those plates, or leave out "
                             "plate_col (--plate-col) to draw negatives from every plate")
    meta_cols = [config.pert_col] + ([config.plate_col] if config.plate_col else [])
    meta = profiles[meta_cols].astype(str)
    meta = from_matching.assign_reference_index(meta, np.flatnonzero(controls), reference_col=REFERENCE_COLUMN,
                                                default_value=-1)
    wells = profiles.loc[treated, config.pert_col].astype(str).value_counts()
    if (int(wells.max()) if len(wells) else 0) < 2:
        raise InputError(f"no perturbation in {config.pert_col!r} has two non-control wells; activity needs replicate "
                         "wells (e.g. replicate plates) of the same perturbation")
    rules = {"pos_sameby": [config.pert_col, REFERENCE_COLUMN], "pos_diffby": [],
             "neg_sameby": [config.plate_col] if config.plate_col else [],
             "neg_diffby": [config.pert_col, REFERENCE_COLUMN]}
    ap = copairs_map.average_precision(meta, x, batch_size=config.batch_size, distance=config.distance,
                                       progress_bar=False, **rules)
    ap = ap[ap[REFERENCE_COLUMN] == -1]
    result = copairs_map.mean_average_precision(ap, [config.pert_col], null_size=config.null_size,
                                                threshold=config.threshold, seed=config.seed, progress_bar=False)
    result = result.drop(columns=["indices"], errors="ignore")
    result.insert(1, "n_wells", result[config.pert_col].map(wells).astype(int))
    single = int((wells < 2).sum())
    if single:
        logger.warning("%d perturbation(s) have a single non-control well and are not scored", single)
    protocol = {"analysis": "activity", "function": "copairs.map.average_precision + mean_average_precision",
                "reference": "copairs.matching.assign_reference_index(control)", **rules,
                "controls_scored": False, "n_control_wells": int(controls.sum()), "n_single_well": single,
                "n_features": len(feats)}
    return result.reset_index(drop=True), protocol


def _targets(value: Any) -> list[str]:
    return [t.strip() for t in str(value).split("|") if t.strip()]


def phenotypic_consistency(profiles: pd.DataFrame, active: list[str], *,
                           config: MapConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Phenotypic consistency: median consensus profiles of the active perturbations retrieved against
    those with other targets (multilabel on ``|``-separated ``target_col``).

    Returns:
        (consistency, protocol): one row per target with copairs' columns; empty when fewer than two active
        perturbations share a target.
    """
    copairs_map = require("copairs.map", "profiles")
    _check_columns(profiles, config.pert_col, config.target_col)
    profiles = profiles.reset_index(drop=True)
    feats, _ = _features(profiles, config)
    rows = profiles[~control_rows(profiles, config.control) & profiles[config.pert_col].astype(str).isin(active)]
    targets = rows.groupby(rows[config.pert_col].astype(str))[config.target_col].agg(
        lambda s: sorted({t for v in s.dropna() for t in _targets(v)}))
    consensus = rows.groupby(rows[config.pert_col].astype(str))[feats].median()
    consensus = consensus.loc[targets[targets.map(len) > 0].index]
    meta = pd.DataFrame({config.pert_col: consensus.index, config.target_col: targets.loc[consensus.index].tolist()})
    rules = {"pos_sameby": [config.target_col], "pos_diffby": [], "neg_sameby": [],
             "neg_diffby": [config.target_col], "multilabel_col": config.target_col}
    protocol = {"analysis": "consistency", "function": "copairs.map.multilabel.average_precision + "
                "mean_average_precision", "consensus": "median of each active perturbation's wells", **rules,
                "n_active": len(active), "n_with_targets": len(consensus)}
    empty = pd.DataFrame(columns=[config.target_col, "n_perturbations", *MAP_COLUMNS])
    counts = pd.Series([t for ts in meta[config.target_col] for t in ts]).value_counts()
    if len(consensus) < 3 or (int(counts.max()) if len(counts) else 0) < 2:
        logger.warning("consistency: fewer than two active perturbations share a target; nothing to score")
        return empty, {**protocol, "skipped": "no target shared by two active perturbations"}
    unpaired = require("copairs.matching", "profiles").UnpairedException
    try:
        ap = copairs_map.multilabel.average_precision(meta, consensus.to_numpy(dtype=np.float64),
                                                      batch_size=config.batch_size, distance=config.distance,
                                                      progress_bar=False, **rules)
    except unpaired as exc:  # e.g. every active perturbation shares one target: no negatives
        logger.warning("consistency: %s; nothing to score", exc)
        return empty, {**protocol, "skipped": f"copairs: {exc}"}
    result = copairs_map.mean_average_precision(ap, [config.target_col], null_size=config.null_size,
                                                threshold=config.threshold, seed=config.seed, progress_bar=False)
    result = result.drop(columns=["indices"], errors="ignore")
    result.insert(1, "n_perturbations", result[config.target_col].map(counts).astype(int))
    return result.reset_index(drop=True), protocol


def profile_map(profiles: pd.DataFrame, *, config: MapConfig) -> MapResult:
    """Phenotypic activity and (with ``config.target_col``) consistency of a profile table.

    Args:
        profiles: (N wells, Metadata_* + F features); normalise first (:func:`make_profiles`).
        config: see :class:`MapConfig`.

    Returns:
        :class:`MapResult` with the activity, consistency and summary tables.
    """
    _check_columns(profiles, config.pert_col, config.plate_col, config.target_col)
    activity, p_act = phenotypic_activity(profiles, config=config)
    n_perts = int(profiles.loc[~control_rows(profiles.reset_index(drop=True), config.control),
                               config.pert_col].nunique())
    rows = [_summary_row("activity", activity, n_perts)]
    protocols = [p_act]
    consistency = pd.DataFrame(columns=[config.target_col or "target", "n_perturbations", *MAP_COLUMNS])
    if config.target_col:
        active = activity.loc[activity["below_corrected_p"].astype(bool), config.pert_col].astype(str).tolist()
        consistency, p_con = phenotypic_consistency(profiles, active, config=config)
        n_targets = len({t for v in profiles[config.target_col].dropna() for t in _targets(v)})
        rows.append(_summary_row("consistency", consistency, n_targets))
        protocols.append(p_con)
    protocol = {"config": asdict(config), "analyses": protocols, "libraries": library_versions("copairs", "dino-boc")}
    return MapResult(activity=activity, consistency=consistency, summary=pd.DataFrame(rows), protocol=protocol)


def write_map(result: MapResult, outdir: str | os.PathLike, *, overwrite: bool = False,
              source: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``activity.csv``, ``consistency.csv`` (when scored), ``summary.csv`` and ``map.json`` (protocol,
    library versions and the profiles' own provenance) into ``outdir``.

    Raises:
        InputError: one of the files exists and ``overwrite`` is False.
    """
    out = Path(outdir)
    paths = {"activity": out / "activity.csv", "summary": out / "summary.csv", "protocol": out / "map.json"}
    if "consistency" in set(result.summary["analysis"]):
        paths["consistency"] = out / "consistency.csv"
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} already exists; pass overwrite=True (--overwrite) or another output folder")
    out.mkdir(parents=True, exist_ok=True)
    result.activity.to_csv(paths["activity"], index=False)
    if "consistency" in paths:
        result.consistency.to_csv(paths["consistency"], index=False)
    result.summary.to_csv(paths["summary"], index=False)
    paths["protocol"].write_text(json.dumps({**result.protocol, "profiles_provenance": source or {}}, indent=2,
                                            default=str))
    return paths
