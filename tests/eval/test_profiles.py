"""eval.profiles: each step equals pycytominer / harmonypy called directly, plus checks from the equations."""

import json
from importlib.metadata import version

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dino_boc.errors import ConfigError, InputError
from dino_boc.eval.profile_files import PROFILES_KEY, make_profiles_from_file, read_table, write_profiles
from dino_boc.eval.profiles import ProfileConfig, make_profiles

pycytominer = pytest.importorskip("pycytominer")

CONTROL = "Metadata_pert_type == 'negcon'"


def site_table(seed=0, n_feat=12, plates=("P1", "P2"), wells=8, sites=3):
    """Sites of wells on plates: wells 0-2 controls, the rest 4 compounds; plate offsets; one constant and
    one duplicated (perfectly correlated) feature for the selection to drop."""
    rng = np.random.default_rng(seed)
    rows = []
    for p, plate in enumerate(plates):
        for w in range(wells):
            for s in range(sites):
                rows.append({"Metadata_Plate": plate, "Metadata_Well": f"A{w:02d}", "Metadata_Site": s,
                             "Metadata_path": f"{plate}/A{w:02d}_s{s}.tif",
                             "Metadata_pert_type": "negcon" if w < 3 else "trt",
                             "Metadata_compound": "DMSO" if w < 3 else f"c{w % 4}",
                             **{f"f{j}": rng.normal(3.0 * p, 1.0 + j % 3) for j in range(n_feat)}})
    df = pd.DataFrame(rows)
    df["const"] = 5.0
    df["dup"] = 2.0 * df["f0"] + 1.0
    return df


def test_aggregate_normalize_select_equal_pycytominer_called_directly():
    df = site_table()
    cfg = ProfileConfig(control=CONTROL, select=("variance_threshold", "correlation_threshold", "drop_na_columns"))
    out = make_profiles(df, config=cfg)

    feats = [c for c in df.columns if not c.startswith("Metadata_")]
    agg = pycytominer.aggregate(df, strata=["Metadata_Plate", "Metadata_Well"], features=feats, operation="median")
    agg = agg.merge(df.groupby(["Metadata_Plate", "Metadata_Well"], as_index=False)[
        ["Metadata_pert_type", "Metadata_compound"]].first(), on=["Metadata_Plate", "Metadata_Well"])
    parts = [pycytominer.normalize(agg[agg.Metadata_Plate == p], features=feats,
                                   meta_features=[c for c in agg.columns if c not in feats], samples=CONTROL,
                                   method="mad_robustize", mad_robustize_epsilon=0.0) for p in ("P1", "P2")]
    norm = pd.concat(parts)
    sel = pycytominer.feature_select(norm, features=feats,
                                     operation=["variance_threshold", "correlation_threshold", "drop_na_columns"])
    expected_feats = [c for c in feats if c in sel.columns]

    assert out.features == expected_feats
    assert "const" not in out.features and not {"f0", "dup"} <= set(out.features)
    key = ["Metadata_Plate", "Metadata_Well"]
    got = out.table.sort_values(key).reset_index(drop=True)
    want = sel.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(got[expected_feats].to_numpy(), want[expected_feats].to_numpy(), rtol=1e-12)
    # metadata constant within a well is kept, per-site columns are not; the row count is recorded
    assert list(got["Metadata_compound"]) == list(want["Metadata_compound"])
    assert "Metadata_path" not in got.columns and "Metadata_Site" not in got.columns
    assert (got["Metadata_n_rows"] == 3).all()


def test_mad_robustize_per_plate_from_the_equation():
    df = site_table(seed=1).drop(columns="const")  # MAD 0: 0/0, left to feature selection
    out = make_profiles(df, config=ProfileConfig(control=CONTROL, select=()))
    wells = df.groupby(["Metadata_Plate", "Metadata_Well"], as_index=False).median(numeric_only=True)
    wells["Metadata_pert_type"] = np.where(wells.Metadata_Well.str[1:].astype(int) < 3, "negcon", "trt")
    got = out.table.set_index(["Metadata_Plate", "Metadata_Well"])
    for plate, block in wells.groupby("Metadata_Plate"):
        ctrl = block[block.Metadata_pert_type == "negcon"]["f3"].to_numpy()
        med = np.median(ctrl)
        mad = 1.4826 * np.median(np.abs(ctrl - med))
        for _, row in block.iterrows():
            assert got.loc[(plate, row.Metadata_Well), "f3"] == pytest.approx((row.f3 - med) / mad, rel=1e-9)


def test_standardize_on_all_rows_and_inverse_normal_equal_pycytominer():
    df = site_table(seed=2)
    cfg = ProfileConfig(aggregate="none", control=CONTROL, normalize="standardize", normalize_by="all",
                        inverse_normal=True, select=())
    out = make_profiles(df, config=cfg)
    feats = [c for c in df.columns if not c.startswith("Metadata_")]
    meta = [c for c in df.columns if c in out.table.columns and c not in feats]
    step1 = pycytominer.normalize(df, features=feats, meta_features=meta, samples=CONTROL, method="standardize")
    step2 = pycytominer.normalize(step1, features=feats, meta_features=meta, samples="all", method="inverse_normal")
    np.testing.assert_allclose(out.table[feats].to_numpy(), step2[feats].to_numpy(), rtol=1e-12)


def test_sphering_whitens_the_controls():
    rng = np.random.default_rng(3)
    n, f = 120, 5
    mix = rng.normal(size=(f, f))
    x = rng.normal(size=(n, f)) @ mix
    df = pd.DataFrame(x, columns=[f"x{j}" for j in range(f)])
    df.insert(0, "Metadata_pert_type", np.where(np.arange(n) < 80, "negcon", "trt"))
    cfg = ProfileConfig(aggregate="none", normalize="none", control=CONTROL, select=(), sphere="ZCA-cor",
                        sphere_epsilon=1e-9)
    out = make_profiles(df, config=cfg)
    ctrl = out.table.loc[out.table.Metadata_pert_type == "negcon", out.features].to_numpy()
    np.testing.assert_allclose(np.cov(ctrl, rowvar=False), np.eye(f), atol=1e-4)
    direct = pycytominer.normalize(df, features=list(df.columns[1:]), meta_features=["Metadata_pert_type"],
                                   samples=CONTROL, method="spherize", spherize_method="ZCA-cor",
                                   spherize_epsilon=1e-9)
    np.testing.assert_allclose(out.table[out.features].to_numpy(), direct[out.features].to_numpy(), atol=1e-10)


def test_harmony_removes_a_planted_plate_shift():
    harmonypy = pytest.importorskip("harmonypy")
    rng = np.random.default_rng(4)
    n, f = 150, 6
    plate = np.repeat(["A", "B", "C"], n // 3)
    x = rng.normal(size=(n, f)) + np.where(plate == "B", 4.0, 0.0)[:, None]
    df = pd.DataFrame(x, columns=[f"x{j}" for j in range(f)])
    df.insert(0, "Metadata_Plate", plate)
    cfg = ProfileConfig(aggregate="none", normalize="none", select=(), harmony="Metadata_Plate", harmony_nclust=3)
    out = make_profiles(df, config=cfg)
    z = out.table[out.features].to_numpy()
    gap = lambda v: np.abs(v[plate == "B"].mean(axis=0) - v[plate == "A"].mean(axis=0)).mean()  # noqa: E731
    assert gap(z) < 0.5 * gap(x)
    direct = np.asarray(harmonypy.run_harmony(x, df[["Metadata_Plate"]], "Metadata_Plate", nclust=3, random_state=0,
                                              verbose=False).Z_corr)
    np.testing.assert_allclose(z, direct if direct.shape == x.shape else direct.T, rtol=1e-10)


def mixed_table():
    """Rows from 3-channel (DNA;RNA;ER) and 2-channel (DNA;RNA) images: the ER block is NaN for the latter."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(24):
        three = i % 2 == 0
        row = {"Metadata_Plate": "P1", "Metadata_Well": f"W{i // 2}", "Metadata_channels": "DNA;RNA;ER" if three
               else "DNA;RNA", "Metadata_pert_type": "negcon" if i < 8 else "trt"}
        for ch in ("DNA", "RNA", "ER"):
            for d in range(3):
                row[f"{ch}_cls0_{d}"] = rng.normal() if (three or ch != "ER") else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def test_mixed_channel_sets_keep_the_shared_features():
    df = mixed_table()
    out = make_profiles(df, config=ProfileConfig(aggregate="none", control=CONTROL, select=()))
    assert out.features == [f"{ch}_cls0_{d}" for ch in ("DNA", "RNA") for d in range(3)]
    assert np.isfinite(out.table[out.features].to_numpy()).all()
    step = next(s for s in out.steps if s["step"] == "channel_sets")
    assert step["channel_sets"] == {"DNA;RNA;ER": 12, "DNA;RNA": 12} and step["features_out"] == 6
    with pytest.raises(InputError, match="mixes 2 channel sets"):
        make_profiles(df, config=ProfileConfig(aggregate="none", control=CONTROL, channel_sets="error"))
    disjoint = df.copy()
    disjoint.loc[disjoint.Metadata_channels == "DNA;RNA", [c for c in df.columns if c.startswith(("DNA", "RNA"))]] = (
        np.nan)
    with pytest.raises(InputError, match="share no feature"):
        make_profiles(disjoint, config=ProfileConfig(aggregate="none", control=CONTROL))


def test_scattered_nan_feature_is_dropped_by_selection_and_left_nan_refused():
    df = site_table(seed=6)
    df.loc[df.index[::4], "f5"] = np.nan  # 25% missing in one feature (one site in 4 -> some wells lose it)
    df.loc[df.Metadata_Well == "A05", "f5"] = np.nan  # a whole well: NaN after aggregation
    out = make_profiles(df, config=ProfileConfig(control=CONTROL))
    assert "f5" not in out.features
    with pytest.raises(InputError, match="NaN or infinite"):
        make_profiles(df, config=ProfileConfig(control=CONTROL, select=()))


def test_errors_say_what_to_do():
    df = site_table()
    with pytest.raises(InputError, match="strata columns"):
        make_profiles(df.drop(columns="Metadata_Well"), config=ProfileConfig(control=CONTROL))
    with pytest.raises(InputError, match="selects no row"):
        make_profiles(df, config=ProfileConfig(control="Metadata_pert_type == 'none'"))
    with pytest.raises(InputError, match="control query"):
        make_profiles(df, config=ProfileConfig(control="Metadata_nope == 1"))
    no_ctrl = df[~((df.Metadata_Plate == "P2") & (df.Metadata_pert_type == "negcon"))]
    with pytest.raises(InputError, match=r"plates \['P2'\] have no control"):
        make_profiles(no_ctrl, config=ProfileConfig(control=CONTROL))
    with pytest.raises(ConfigError):
        ProfileConfig(normalize="zscore")
    with pytest.raises(ConfigError):
        ProfileConfig(select=("variance",))
    cp = df.assign(ImageNumber=np.arange(len(df)), ObjectNumber=1)
    assert make_profiles(cp, config=ProfileConfig(control=CONTROL)).features == \
        make_profiles(df, config=ProfileConfig(control=CONTROL)).features
    with pytest.raises(InputError, match="not numeric"):
        make_profiles(df, config=ProfileConfig(control=CONTROL, features=("f1", "Metadata_path")))


def test_written_parquet_and_csv_carry_the_steps(tmp_path):
    df = site_table()
    source = {"input": "features.parquet", "dino_boc": {"model": "tiny", "format_version": 1}}
    out = make_profiles(df, config=ProfileConfig(control=CONTROL, sphere="ZCA"), source=source)
    path = write_profiles(out, tmp_path / "profiles.parquet")
    meta = pq.read_schema(path).metadata
    record = json.loads(meta[PROFILES_KEY.encode()])
    assert [s["step"] for s in record["steps"]] == ["config", "aggregate", "normalize", "feature_select", "sphere"]
    assert record["steps"][2]["samples"] == CONTROL and record["steps"][2]["by"] == "plate"
    assert record["libraries"]["pycytominer"] == version("pycytominer")
    assert json.loads(meta[b"dino_boc"]) == source["dino_boc"]
    back, carried = read_table(path)
    pd.testing.assert_frame_equal(back, out.table)
    assert carried[PROFILES_KEY]["n_features"] == len(out.features)
    with pytest.raises(InputError, match="already exists"):
        write_profiles(out, path)
    csv = write_profiles(out, tmp_path / "profiles.csv.gz")
    side = json.loads((tmp_path / "profiles.csv.gz.profiles.json").read_text())
    assert side[PROFILES_KEY]["steps"][-1]["step"] == "sphere"
    np.testing.assert_allclose(pd.read_csv(csv)[out.features].to_numpy(), out.table[out.features].to_numpy())


def test_parquet_file_profiled_plate_by_plate_equals_the_whole_table(tmp_path):
    df = pd.concat([site_table(seed=7, plates=("P1", "P2", "P3")), mixed_channels_for(site_table(seed=7,
                   plates=("P1", "P2", "P3")))], axis=1)
    df.to_parquet(tmp_path / "cells.parquet", row_group_size=10)
    cfg = ProfileConfig(control=CONTROL, sphere="ZCA")
    whole = make_profiles(df, config=cfg)
    by_plate = make_profiles_from_file(tmp_path / "cells.parquet", config=cfg)
    assert by_plate.features == whole.features
    assert "ER_0" not in whole.features and "DNA_0" in whole.features  # the ER block is missing in one set
    pd.testing.assert_frame_equal(by_plate.table, whole.table, check_exact=False, rtol=1e-10)
    step = next(s for s in by_plate.steps if s["step"] == "aggregate")
    assert step["plates_read_one_at_a_time"] == 3 and step["rows_in"] == len(df) and step["rows_out"] == 24
    assert [s["step"] for s in by_plate.steps] == [s["step"] for s in whole.steps]
    assert next(s for s in by_plate.steps if s["step"] == "channel_sets")["channel_sets"] == {
        "DNA;ER": 60, "DNA": 12}


def mixed_channels_for(df):
    """A channel column and two feature blocks: DNA everywhere, ER absent from the sites of plate P3's first
    four wells (a 1-channel acquisition)."""
    rng = np.random.default_rng(8)
    one = ((df.Metadata_Plate == "P3") & (df.Metadata_Well.str[1:].astype(int) < 4)).to_numpy()
    out = pd.DataFrame({"Metadata_channels": np.where(one, "DNA", "DNA;ER")}, index=df.index)
    for d in range(3):
        out[f"DNA_{d}"] = rng.normal(size=len(df))
        out[f"ER_{d}"] = np.where(one, np.nan, rng.normal(size=len(df)))
    return out
