"""eval.profile_map: mAP equals a direct copairs call and the AP definition; planted effects are retrieved,
shuffled labels are not; the real CPJUMP1 table goes through ``dino-boc eval map`` end to end."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dino_boc.errors import ConfigError, InputError
from dino_boc.eval.profile_map import MAP_COLUMNS, MapConfig, phenotypic_activity, profile_map, write_map

copairs_map = pytest.importorskip("copairs.map")

CONTROL = "Metadata_pert_type == 'negcon'"
REAL = Path(__file__).resolve().parents[1] / "data" / "jump_cpjump1" / "cpjump1_u2os_compound_48h_wells.csv.gz"


def planted(seed=0, n_perts=12, plates=4, n_ctrl=8, f=16, effect=3.0, targets=False):
    """Wells on replicate plates: each perturbation adds its own direction (shared by perturbations of one
    target when ``targets``); controls are noise."""
    rng = np.random.default_rng(seed)
    target_dirs = rng.normal(size=(n_perts // 3, f))
    own = rng.normal(size=(n_perts, f))
    rows, x = [], []
    for p in range(plates):
        for c in range(n_ctrl):
            rows.append({"Metadata_Plate": f"P{p}", "Metadata_pert": "DMSO", "Metadata_pert_type": "negcon",
                         "Metadata_targets": None})
            x.append(rng.normal(size=f))
        for k in range(n_perts):
            direction = target_dirs[k // 3] + 0.3 * own[k] if targets else own[k]
            rows.append({"Metadata_Plate": f"P{p}", "Metadata_pert": f"cmp{k:02d}", "Metadata_pert_type": "trt",
                         "Metadata_targets": f"T{k // 3}|X{k}"})
            x.append(effect * direction / np.linalg.norm(direction) * np.sqrt(f) + rng.normal(size=f))
    df = pd.DataFrame(rows)
    return pd.concat([df, pd.DataFrame(np.asarray(x), columns=[f"x{j}" for j in range(f)])], axis=1)


def config(**kw):
    base = dict(pert_col="Metadata_pert", control=CONTROL, plate_col="Metadata_Plate", null_size=2000, seed=0)
    return MapConfig(**{**base, **kw})


def test_activity_equals_a_direct_copairs_call():
    df = planted(effect=0.6)
    got, protocol = phenotypic_activity(df, config=config())
    meta = df[["Metadata_pert", "Metadata_Plate"]].copy()
    meta["ref"] = np.where(df.Metadata_pert_type == "negcon", np.arange(len(df)), -1)
    feats = df.filter(regex="^x").to_numpy()
    ap = copairs_map.average_precision(meta, feats, pos_sameby=["Metadata_pert", "ref"], pos_diffby=[],
                                       neg_sameby=["Metadata_Plate"], neg_diffby=["Metadata_pert", "ref"],
                                       progress_bar=False)
    ap = ap[ap.ref == -1]
    want = copairs_map.mean_average_precision(ap, ["Metadata_pert"], null_size=2000, threshold=0.05, seed=0,
                                              progress_bar=False)
    got, want = got.set_index("Metadata_pert"), want.set_index("Metadata_pert")
    assert sorted(got.index) == sorted(want.index) == [f"cmp{k:02d}" for k in range(12)]
    for col in ("mean_average_precision", "p_value", "corrected_p_value", "below_corrected_p"):
        np.testing.assert_array_equal(got.loc[want.index, col].to_numpy(), want[col].to_numpy())
    assert (got["n_wells"] == 4).all()
    assert protocol["neg_sameby"] == ["Metadata_Plate"] and protocol["n_control_wells"] == 32


def average_precision_by_hand(df, pert, plate_negatives):
    """AP of every well of ``pert`` from the definition: rank its replicates and control wells by cosine
    similarity, average the precision at each replicate's rank; then the mean over the wells."""
    x = df.filter(regex="^x").to_numpy()
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    aps = []
    for q in np.flatnonzero(df.Metadata_pert == pert):
        pos = [i for i in np.flatnonzero(df.Metadata_pert == pert) if i != q]
        neg = np.flatnonzero((df.Metadata_pert_type == "negcon")
                             & ((df.Metadata_Plate == df.Metadata_Plate[q]) if plate_negatives else True))
        cand = np.array(pos + list(neg))
        order = cand[np.argsort(-(x[cand] @ x[q]), kind="stable")]
        hits = np.isin(order, pos)
        aps.append(np.mean(np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)))
    return float(np.mean(aps))


@pytest.mark.parametrize("plate_negatives", [True, False])
def test_map_equals_the_average_precision_definition(plate_negatives):
    df = planted(seed=1, effect=0.5, n_perts=6)
    got, _ = phenotypic_activity(df, config=config(plate_col="Metadata_Plate" if plate_negatives else None))
    for _, row in got.iterrows():
        assert row.mean_average_precision == pytest.approx(
            average_precision_by_hand(df, row.Metadata_pert, plate_negatives), abs=1e-9)


def test_planted_effects_are_retrieved_and_shuffled_labels_are_not():
    df = planted(seed=2, n_perts=24, effect=2.0)
    result = profile_map(df, config=config())
    assert result.activity["below_corrected_p"].mean() >= 0.9
    shuffled = df.copy()
    trt = shuffled.Metadata_pert_type == "trt"
    shuffled.loc[trt, "Metadata_pert"] = np.random.default_rng(0).permutation(shuffled.loc[trt, "Metadata_pert"])
    null = profile_map(shuffled, config=config()).activity
    assert null["below_corrected_p"].mean() <= 0.1
    assert null["mean_average_precision"].mean() < result.activity["mean_average_precision"].mean() - 0.3


def test_consistency_equals_multilabel_copairs_and_finds_planted_targets():
    df = planted(seed=3, n_perts=15, effect=2.0, targets=True)
    result = profile_map(df, config=config(target_col="Metadata_targets"))
    active = result.activity.loc[result.activity.below_corrected_p, "Metadata_pert"].tolist()
    assert len(active) == 15
    cons = (df[df.Metadata_pert.isin(active)].groupby("Metadata_pert")[[f"x{j}" for j in range(16)]].median())
    meta = pd.DataFrame({"Metadata_pert": cons.index,
                         "Metadata_targets": [df.loc[df.Metadata_pert == p, "Metadata_targets"].iloc[0].split("|")
                                              for p in cons.index]})
    ap = copairs_map.multilabel.average_precision(meta, cons.to_numpy(), pos_sameby=["Metadata_targets"],
                                                  pos_diffby=[], neg_sameby=[], neg_diffby=["Metadata_targets"],
                                                  multilabel_col="Metadata_targets", progress_bar=False)
    want = copairs_map.mean_average_precision(ap, ["Metadata_targets"], null_size=2000, threshold=0.05, seed=0,
                                              progress_bar=False).set_index("Metadata_targets")
    got = result.consistency.set_index("Metadata_targets")
    assert sorted(got.index) == sorted(want.index) == [f"T{t}" for t in range(5)]  # X<k> targets have one member
    np.testing.assert_array_equal(got.loc[want.index, "mean_average_precision"], want["mean_average_precision"])
    assert got["below_corrected_p"].mean() >= 0.8 and (got["n_perturbations"] == 3).all()
    summary = result.summary.set_index("analysis")
    assert summary.loc["consistency", "n_scored"] == 5 and summary.loc["consistency", "n_total"] == 20
    assert summary.loc["activity", "fraction_retrieved"] == pytest.approx(result.activity.below_corrected_p.mean())


def test_input_errors():
    df = planted(seed=4, n_perts=3)
    bad = df.copy()
    bad.loc[5, "x3"] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        phenotypic_activity(bad, config=config())
    with pytest.raises(InputError, match="two non-control wells"):
        phenotypic_activity(df[df.Metadata_Plate == "P0"], config=config())
    with pytest.raises(InputError, match="not in the profiles"):
        phenotypic_activity(df, config=config(pert_col="Metadata_compound"))
    with pytest.raises(InputError, match="selects no well"):
        phenotypic_activity(df, config=config(control="Metadata_pert_type == 'ctrl'"))
    unnamed = df.copy()
    unnamed.loc[unnamed.Metadata_pert_type == "trt", "Metadata_pert"] = None
    with pytest.raises(InputError, match="no 'Metadata_pert' value"):
        phenotypic_activity(unnamed, config=config())
    no_ctrl = df[~((df.Metadata_Plate == "P3") & (df.Metadata_pert_type == "negcon"))]
    with pytest.raises(InputError, match=r"plates \['P3'\] have treated wells but no control"):
        phenotypic_activity(no_ctrl, config=config())
    assert len(phenotypic_activity(no_ctrl, config=config(plate_col=None))[0]) == 3
    with pytest.raises(InputError, match="not in the profiles"):
        profile_map(df, config=config(target_col="Metadata_moa"))
    with pytest.raises(ConfigError):
        config(null_size=10)


def test_real_cpjump1_table_through_eval_map_end_to_end(tmp_path):
    from dino_boc.cli import main

    table = pd.read_csv(REAL)
    prof = tmp_path / "profiles.parquet"
    assert main(["eval", "profiles", str(REAL), "-o", str(prof), "--aggregate", "none",
                 "--control", "Metadata_control_type == 'negcon'"]) == 0
    out = tmp_path / "map"
    args = ["eval", "map", str(REAL), "-o", str(out), "--pert-col", "Metadata_pert_iname", "--control",
            "Metadata_control_type == 'negcon'", "--plate-col", "Metadata_Plate", "--target-col", "Metadata_target_list",
            "--null-size", "1000", "--compare", str(prof), "--name", "published", "--compare-name", "renormalised"]
    assert main(args) == 0
    activity = pd.read_csv(out / "activity.csv")
    treated = table[table.Metadata_control_type != "negcon"]
    assert sorted(activity.Metadata_pert_iname) == sorted(treated.Metadata_pert_iname.unique())
    assert set(MAP_COLUMNS) <= set(activity.columns)
    assert (activity.n_wells == treated.Metadata_pert_iname.value_counts().loc[activity.Metadata_pert_iname].to_numpy()
            ).all()
    consistency = pd.read_csv(out / "consistency.csv")
    assert set(MAP_COLUMNS) <= set(consistency.columns) and len(consistency) > 0
    summary = pd.read_csv(out / "summary.csv")
    row = summary[(summary.features == "published") & (summary.analysis == "activity")].iloc[0]
    assert row.fraction_retrieved == pytest.approx(activity.below_corrected_p.mean())
    assert row.mean_map == pytest.approx(activity.mean_average_precision.mean())
    # JUMP compounds at 48 h: well over a fifth of them are distinguishable from DMSO
    assert row.fraction_retrieved > 0.2
    assert set(summary.features) == {"published", "renormalised"}
    assert (out / "compare" / "activity.csv").exists() and (out / "map.png").stat().st_size > 10_000
    protocol = json.loads((out / "map.json").read_text())
    assert protocol["analyses"][0]["neg_sameby"] == ["Metadata_Plate"]
    assert protocol["config"]["null_size"] == 1000
    steps = json.loads((out / "compare" / "map.json").read_text())["profiles_provenance"]["dino_boc_profiles"]
    assert [s["step"] for s in steps["steps"]] == ["config", "normalize", "feature_select"]  # carried from PROFILES
    assert main(args) == 1  # refuses to overwrite
    # the same numbers as copairs called directly on the table
    feats = [c for c in table.columns if not c.startswith("Metadata_")]
    meta = table[["Metadata_pert_iname", "Metadata_Plate"]].copy()
    meta["ref"] = np.where(table.Metadata_control_type == "negcon", np.arange(len(table)), -1)
    ap = copairs_map.average_precision(meta, table[feats].to_numpy(), pos_sameby=["Metadata_pert_iname", "ref"],
                                       pos_diffby=[], neg_sameby=["Metadata_Plate"],
                                       neg_diffby=["Metadata_pert_iname", "ref"], progress_bar=False)
    want = copairs_map.mean_average_precision(ap[ap.ref == -1], ["Metadata_pert_iname"], null_size=1000,
                                              threshold=0.05, seed=0, progress_bar=False)
    merged = activity.merge(want, on="Metadata_pert_iname", suffixes=("", "_direct"))
    assert len(merged) == len(activity)
    np.testing.assert_allclose(merged.mean_average_precision, merged.mean_average_precision_direct, rtol=1e-12)
    np.testing.assert_allclose(merged.corrected_p_value, merged.corrected_p_value_direct, rtol=1e-12)


def test_write_map_refuses_to_overwrite(tmp_path):
    result = profile_map(planted(seed=5, n_perts=3), config=config())
    paths = write_map(result, tmp_path)
    assert set(paths) == {"activity", "summary", "protocol"}
    with pytest.raises(InputError, match="already exists"):
        write_map(result, tmp_path)
    write_map(result, tmp_path, overwrite=True)


def test_cli_feature_subset_and_error_message(tmp_path, capsys):
    from dino_boc.cli import main

    df = planted(seed=6, n_perts=4)
    df.to_csv(tmp_path / "p.csv", index=False)
    base = ["eval", "map", str(tmp_path / "p.csv"), "--pert-col", "Metadata_pert", "--control", CONTROL,
            "--null-size", "500"]
    assert main(base + ["-o", str(tmp_path / "a"), "--features", "x0", "x1", "x2"]) == 0
    protocol = json.loads((tmp_path / "a" / "map.json").read_text())
    assert protocol["analyses"][0]["n_features"] == 3 and protocol["config"]["features"] == ["x0", "x1", "x2"]
    assert protocol["analyses"][0]["neg_sameby"] == []
    assert main(base + ["-o", str(tmp_path / "b"), "--features", "x0", "nope"]) == 1
    assert "['nope'] are not in the table" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_consistency_without_negatives_is_skipped_not_a_traceback():
    df = planted(seed=7, n_perts=3, effect=2.0, targets=True)  # cmp00..02 all carry T0: no negative pairs
    result = profile_map(df, config=config(target_col="Metadata_targets"))
    assert result.activity.below_corrected_p.all()
    assert result.consistency.empty
    assert "skipped" in result.protocol["analyses"][1]
    assert result.summary.set_index("analysis").loc["consistency", "n_scored"] == 0
