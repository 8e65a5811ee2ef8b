import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from dino_boc.errors import InputError
from dino_boc.eval import PRESETS, chammi, chammi_knn, chammi_knn_tasks, chammi_summary, load_chammi
from dino_boc.eval.chammi import SUMMARY_COLUMNS, TASK_COLUMNS, cache_key
from dino_boc.eval.chammi_data import ChammiImages

from .chammi_fixture import LAYOUT, enriched_frame, read_metadata_as_user, write_chammi

# (folder, table name, tasks, leave-one-group-out (task, column)) -- written from the MorphEm code
SPEC = [
    ("Allen", "WTC", ["Task_one", "Task_two"], None),
    ("HPA", "HPA", ["Task_one", "Task_two", "Task_three"], ("Task_three", "cell_type")),
    ("CP", "CP", ["Task_one", "Task_two", "Task_three", "Task_four"], ("Task_four", "Plate")),
]


def nn1(ref, ref_labels, qry, metric):
    if metric == "l2":
        d = ((qry[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    else:
        d = -(qry / np.linalg.norm(qry, axis=1, keepdims=True)) @ (ref / np.linalg.norm(ref, axis=1, keepdims=True)).T
    return ref_labels[np.argmin(d, axis=1)]


def reference_scores(x, meta, metric):
    """Independent re-implementation of MorphEm evaluate() per source; percent macro-F1 per task."""
    out = {}
    for folder, name, tasks, leave_out in SPEC:
        sel = meta["file_path"].str.startswith(folder + "/").to_numpy()
        if not sel.any():
            continue
        df, xs = meta[sel].reset_index(drop=True), x[sel]
        xs = xs[:, ~np.isnan(xs).all(axis=0)]
        labels = df["Label"].to_numpy()
        train = np.where(df["train_test_split"] == "Train")[0]
        for i, task in enumerate(tasks):
            flag = df[task].astype(bool)
            if leave_out and leave_out[0] == task:
                take = df[flag]
                pred, gt = [], []
                for g in take[leave_out[1]].unique():
                    q = take[take[leave_out[1]] == g].index.values
                    o = take[take[leave_out[1]] != g].index.values
                    ref = np.concatenate([train, o])
                    pred.append(nn1(xs[ref], labels[ref], xs[q], metric))
                    gt.append(labels[q])
                pred, gt = np.concatenate(pred), np.concatenate(gt)
            else:
                q = np.where(flag)[0]
                pred, gt = nn1(xs[train], labels[train], xs[q], metric), labels[q]
            out[f"{name}_Task{i + 1}"] = 100 * f1_score(gt, pred, labels=np.unique(gt), average="macro")
    return out


def fixture_metadata():
    frames = [enriched_frame(f, rows, suffix=s, channel_width=cw) for f, (_, cw, _, s, _, rows) in LAYOUT.items()]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("chammi")
    images = write_chammi(root)
    return root, images


# ----------------------------------------------------------------------------------------- loader
def test_load_chammi_reads_sources_in_order(release):
    root, _ = release
    meta = load_chammi(root)
    as_read = read_metadata_as_user(root)
    assert len(meta) == len(as_read) == sum(len(v[-1]) for v in LAYOUT.values())
    assert meta["file_path"].tolist() == as_read["file_path"].tolist()
    n = {f: len(v[-1]) for f, v in LAYOUT.items()}
    assert meta["chammi_source"].tolist() == ["Allen"] * n["Allen"] + ["HPA"] * n["HPA"] + ["CP"] * n["CP"]
    assert meta["channel_width"].tolist() == [LAYOUT[s][1] for s in meta["chammi_source"]]
    hpa = meta[meta["chammi_source"] == "HPA"]
    assert hpa["Task_three"].sum() == 6 and set(hpa["cell_type"]) == {"A", "B", "C", "D"}
    assert set(meta.loc[meta["chammi_source"] == "CP", "Plate"]) == {"P1", "P2", "P3", "P4"}


def test_load_chammi_takes_channel_width_from_the_index(tmp_path):
    write_chammi(tmp_path, drop_enriched_width=True)
    meta = load_chammi(tmp_path)
    assert meta["channel_width"].tolist() == [LAYOUT[s][1] for s in meta["chammi_source"]]


def test_images_unfold_like_the_benchmark(release):
    root, images = release
    meta = load_chammi(root)
    imgs = ChammiImages(root, meta)
    for i in (0, 20, len(meta) - 1):
        fp, cw = meta["file_path"][i], meta["channel_width"][i]
        got = imgs[i]
        k = LAYOUT[meta["chammi_source"][i]][0]
        assert got.shape == (k, images[fp].shape[1], cw)
        np.testing.assert_array_equal(got, images[fp])
        # MorphEm fold_channels: reshape((h, channel_width, -1), order="F") -> (H, W, K)
        tape = np.concatenate(list(images[fp]), axis=1)
        folded = np.reshape(tape, (tape.shape[0], cw, -1), order="F")
        np.testing.assert_array_equal(got, folded.transpose(2, 0, 1))


def test_wrong_channel_width_is_reported(release):
    root, _ = release
    meta = load_chammi(root)
    meta.loc[0, "channel_width"] = 4  # Allen tape is 18 px wide: 18 / 4 is not whole
    with pytest.raises(InputError, match="not a multiple of channel_width=4"):
        ChammiImages(root, meta)[0]
    meta.loc[0, "channel_width"] = 9  # 2 channels instead of 3
    with pytest.raises(InputError, match="expected 3"):
        ChammiImages(root, meta)[0]


def test_missing_release_says_what_to_download(tmp_path):
    with pytest.raises(InputError, match="Zenodo record 7988357"):
        load_chammi(tmp_path)


# ---------------------------------------------------------------------------------------- scoring
def test_task_membership_and_groups():
    meta = fixture_metadata()
    x = np.random.default_rng(0).normal(size=(len(meta), 6))
    long = chammi_knn_tasks(x, meta, metric="l2").set_index("column")
    assert list(long.index) == list(TASK_COLUMNS)
    expected = {"WTC_Task1": 4, "WTC_Task2": 4, "HPA_Task1": 4, "HPA_Task2": 4, "HPA_Task3": 6,
                "CP_Task1": 3, "CP_Task2": 3, "CP_Task3": 3, "CP_Task4": 6}
    assert long["n_queries"].to_dict() == expected
    assert long.loc["HPA_Task3", "n_groups"] == 3 and long.loc["CP_Task4", "n_groups"] == 2
    assert long.loc["HPA_Task3", "n_classes"] == 3 and long.loc["CP_Task4", "n_classes"] == 3
    assert (long.drop(index=["HPA_Task3", "CP_Task4"])["n_groups"] == 1).all()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_an_independent_implementation(metric, seed):
    meta = fixture_metadata()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(meta), 5)) * rng.uniform(0.2, 5.0, size=(len(meta), 1))
    got = chammi_knn(x, meta, metric=metric)
    ref = reference_scores(x, meta, metric)
    assert list(got.columns) == [*SUMMARY_COLUMNS, *TASK_COLUMNS] and len(got) == 1
    for col, value in ref.items():
        assert got[col].iloc[0] == pytest.approx(value, abs=1e-9), col


def test_cosine_and_l2_tables_differ_where_the_metrics_do():
    meta = fixture_metadata()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(len(meta), 4)) * rng.uniform(0.05, 20.0, size=(len(meta), 1))
    cos, l2 = chammi_knn(x, meta, metric="cosine"), chammi_knn(x, meta, metric="l2")
    assert not np.allclose(cos.to_numpy(), l2.to_numpy())
    ref_cos, ref_l2 = reference_scores(x, meta, "cosine"), reference_scores(x, meta, "l2")
    assert cos[list(ref_cos)].iloc[0].to_numpy() == pytest.approx(list(ref_cos.values()))
    assert l2[list(ref_l2)].iloc[0].to_numpy() == pytest.approx(list(ref_l2.values()))


@pytest.mark.parametrize("pad", ["zero", "nan"])
def test_per_source_padding_is_stripped(pad):
    meta = fixture_metadata()
    rng = np.random.default_rng(4)
    widths = {"Allen": 6, "HPA": 8, "CP": 10}  # e.g. K*D with D=2
    x = np.full((len(meta), 10), 0.0 if pad == "zero" else np.nan)
    unpadded = {}
    for folder, w in widths.items():
        sel = meta["file_path"].str.startswith(folder).to_numpy()
        block = rng.normal(size=(sel.sum(), w))
        x[sel, :w] = block
        unpadded[folder] = block
    got = chammi_knn(x, meta, metric="cosine")
    for folder, name, tasks, _ in SPEC:
        sel = meta["file_path"].str.startswith(folder).to_numpy()
        ref = reference_scores(unpadded[folder], meta[sel].reset_index(drop=True), "cosine")
        for col in [c for c in ref if c.startswith(name)]:
            assert got[col].iloc[0] == pytest.approx(ref[col])


def small_source(folder, rows, points):
    """Metadata of one source from (split, label, group) rows, and features from points."""
    return enriched_frame(folder, rows), np.asarray(points, dtype=np.float64)


@pytest.mark.parametrize("folder,task,col", [("HPA", "HPA_Task3", "cell_type"), ("CP", "CP_Task4", "Plate")])
def test_leave_one_group_out_uses_other_groups_never_its_own(folder, task, col):
    flag = "Task_three" if folder == "HPA" else "Task_four"
    far = [100.0, 100.0]
    # Each query has a twin in its OWN group 0.1 away with another label, and a copy with its own label
    # in the OTHER group 0.5 away. Proper leave-one-group-out -> always right (100); a group (minus the
    # query itself) serving as its own reference -> always wrong (0).
    rows = [("Train", "known", "A"), (flag, "N1", "g1"), (flag, "N2", "g1"), (flag, "N1", "g2"), (flag, "N2", "g2"),
            (flag, "N2", "g1"), (flag, "N3", "g1"), (flag, "N2", "g2"), (flag, "N3", "g2")]
    pts = [far, [0, 0], [0, 0.1], [0.5, 0], [0.5, 0.1], [10, 0], [10, 0.1], [10.5, 0], [10.5, 0.1]]
    meta, x = small_source(folder, rows, pts)
    assert chammi_knn_tasks(x, meta, metric="l2").set_index("column").loc[task, "macro_f1"] == 1.0
    # Same geometry, but the other group's copies carry the wrong labels: the query itself (distance 0)
    # must not be found, so everything is wrong.
    rows2 = [("Train", "known", "A"), (flag, "N1", "g1"), (flag, "N2", "g2")]
    meta2, x2 = small_source(folder, rows2, [far, [0, 0], [0, 0]])  # exact duplicates across groups
    assert chammi_knn_tasks(x2, meta2, metric="l2").set_index("column").loc[task, "macro_f1"] == 0.0
    # ... and with a duplicate carrying the SAME label in the other group, it is found: 100.
    rows3 = [("Train", "known", "A"), (flag, "N1", "g1"), (flag, "N1", "g2"), (flag, "N2", "g1"), (flag, "N2", "g2")]
    meta3, x3 = small_source(folder, rows3, [[-1, -1], [1, 0], [1, 0], [0, 1], [0, 1]])
    assert chammi_knn_tasks(x3, meta3, metric="cosine").set_index("column").loc[task, "macro_f1"] == 1.0


def test_train_rows_are_the_reference_and_other_tasks_never_are():
    # Task_two query at the origin; a Task_one row with another label sits right next to it; the Train
    # row with the query's label is farther away. The reference is Train only -> right.
    rows = [("Train", "golgi", "A"), ("Task_one", "mito", "A"), ("Task_two", "golgi", "D")]
    meta, x = small_source("HPA", rows, [[1.0, 1.0], [0.05, 0.0], [0.0, 0.0]])
    long = chammi_knn_tasks(x, meta, metric="l2").set_index("column")
    assert long.loc["HPA_Task2", "macro_f1"] == 1.0
    assert long.loc["HPA_Task1", "macro_f1"] == 0.0  # its only reference is the golgi Train row


def test_sources_never_mix():
    allen, xa = small_source("Allen", [("Train", "M0", None), ("Task_one", "M0", None)], [[5, 5], [0, 0]])
    hpa, xh = small_source("HPA", [("Train", "M3", "A"), ("Task_one", "M3", "A")], [[0, 0], [0, 0.1]])
    meta, x = pd.concat([allen, hpa], ignore_index=True), np.vstack([xa, xh])
    got = chammi_knn(x, meta, metric="l2")
    assert got["WTC_Task1"].iloc[0] == 100.0  # the HPA Train row at the query's position is not a reference
    assert got["HPA_Task1"].iloc[0] == 100.0
    assert np.isnan(got["CP_Task1"].iloc[0]) and np.isnan(got["Mean_OOD"].iloc[0])


def test_summary_columns_reproduce_the_paper():
    # Table 4, DINO BoC (Ours): tasks as printed; the paper's OOD means are 71.4 / 43.3 / 31.6 -> 48.8
    tasks = dict(zip(TASK_COLUMNS, [79.4, 71.4, 87.0, 56.4, 30.2, 93.5, 58.5, 20.1, 16.3]))
    s = chammi_summary(tasks)
    assert round(s["WTC_OOD"], 1) == 71.4 and round(s["HPA_OOD"], 1) == 43.3 and round(s["CP_OOD"], 1) == 31.6
    assert round(s["Mean_OOD"], 1) == 48.8
    meta = fixture_metadata()
    x = np.random.default_rng(5).normal(size=(len(meta), 4))
    row = chammi_knn(x, meta).iloc[0]
    assert row["CP_OOD"] == pytest.approx(np.mean([row["CP_Task2"], row["CP_Task3"], row["CP_Task4"]]))
    assert row["Mean_OOD"] == pytest.approx(np.mean([row["WTC_OOD"], row["HPA_OOD"], row["CP_OOD"]]))


def test_pipeline_style_table_with_metadata_prefix():
    meta = fixture_metadata()
    x = np.random.default_rng(6).normal(size=(len(meta), 4))
    table = pd.concat([meta.add_prefix("Metadata_"), pd.DataFrame(x, columns=[f"f{i}" for i in range(4)])], axis=1)
    pd.testing.assert_frame_equal(chammi_knn(table, table[[c for c in table if c.startswith("Metadata_")]]),
                                  chammi_knn(x, meta))


def test_mismatched_lengths_raise():
    meta = fixture_metadata()
    with pytest.raises(InputError, match="one feature row per metadata row"):
        chammi_knn(np.zeros((3, 4)), meta)


# ------------------------------------------------------------------------------------------ cache
def test_chammi_reuses_cached_features(release, tmp_path, caplog):
    root, _ = release
    meta = load_chammi(root)
    rng = np.random.default_rng(7)
    key = cache_key(None, PRESETS["chammi"], "fixture-model")
    assert key == "fixture-model__chammi"
    blocks = []
    for folder, width in (("Allen", 6), ("HPA", 8), ("CP", 10)):
        part = meta[meta["chammi_source"] == folder]
        feats = rng.normal(size=(len(part), width)).astype(np.float32)
        table = pd.concat([pd.DataFrame({"Metadata_file_path": part["file_path"].to_numpy()}),
                           pd.DataFrame(feats, columns=[f"cls_{i}" for i in range(width)])], axis=1)
        (tmp_path / key).mkdir(exist_ok=True)
        table.to_parquet(tmp_path / key / f"{folder}.parquet", index=False)
        blocks.append(np.pad(feats, ((0, 0), (0, 10 - width)), constant_values=np.nan))
    # "fixture-model" names no model: any attempt to embed would fail, so a result proves the cache was used
    with caplog.at_level(logging.INFO, logger="dino_boc.eval.chammi"):
        got = chammi(root, model="fixture-model", cache_dir=tmp_path, metric="l2", cache_name="fixture-model")
    assert caplog.text.count("using cached CHAMMI features") == 3
    expected = chammi_knn(np.vstack(blocks), meta, metric="l2")
    assert got.index.tolist() == [key]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy())
