"""Evaluation on pre-computed features: the CHAMMI benchmark, k-NN, linear probing, metrics, well profiles and
their mAP (``profiles``, ``profile_map``; need the ``profiles`` extra).

Import explicitly (``from dino_boc.eval import chammi_knn``); nothing else in dino_boc imports this package.
"""

from dino_boc.eval.chammi import SUMMARY_COLUMNS, TASK_COLUMNS, chammi, chammi_knn, chammi_knn_tasks, chammi_summary
from dino_boc.eval.chammi_data import ChammiImages, load_chammi, read_tape_image
from dino_boc.eval.knn import knn, nearest_neighbors
from dino_boc.eval.linear import FeatureSplits, LinearProbeResult, feature_splits, fit_linear_sweep, linear_probe
from dino_boc.eval.metrics import accuracy, macro_f1
from dino_boc.eval.presets import PRESETS, FeaturePreset, get_preset
from dino_boc.eval.profile_map import MapConfig, MapResult, profile_map
from dino_boc.eval.profiles import ProfileConfig, Profiles, make_profiles

__all__ = [
    "chammi",
    "chammi_knn",
    "chammi_knn_tasks",
    "chammi_summary",
    "load_chammi",
    "read_tape_image",
    "ChammiImages",
    "knn",
    "nearest_neighbors",
    "linear_probe",
    "feature_splits",
    "FeatureSplits",
    "fit_linear_sweep",
    "LinearProbeResult",
    "macro_f1",
    "accuracy",
    "FeaturePreset",
    "PRESETS",
    "get_preset",
    "TASK_COLUMNS",
    "SUMMARY_COLUMNS",
    "ProfileConfig",
    "Profiles",
    "make_profiles",
    "MapConfig",
    "MapResult",
    "profile_map",
]
