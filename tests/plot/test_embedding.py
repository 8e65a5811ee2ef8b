"""plot.embedding: one point per row, one legend entry per category, points where PCA puts them."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

import dino_boc
from dino_boc.errors import ChannelError, InputError
from dino_boc.features import feature_names
from dino_boc.plot import embedding, select_channels
from dino_boc.plot import _common
from dino_boc.plot.embedding import complete_rows_and_columns, load_table

from .conftest import CHANNEL_NAMES


def _points(fig) -> np.ndarray:
    ax = fig.axes[0]
    return np.concatenate([c.get_offsets() for c in ax.collections], axis=0)


def _legend_labels(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def _reference_pca(x: np.ndarray) -> np.ndarray:
    """sklearn PCA of z-scored columns (an independent computation), signs aligned per component later."""
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return PCA(n_components=2, svd_solver="full").fit_transform(z)


def _same_up_to_sign(a: np.ndarray, b: np.ndarray) -> bool:
    return all(np.allclose(a[:, i], s * b[:, i], atol=1e-4) for i, s in
               ((i, np.sign(a[:, i] @ b[:, i])) for i in range(a.shape[1])))


def test_pca_one_point_per_row_and_legend_per_category(feature_table):
    fig = embedding(feature_table, color="Metadata_group", method="pca")
    assert _points(fig).shape == (12, 2)
    assert [lab.split(" ")[0] for lab in _legend_labels(fig)] == ["a", "b", "c"]


def test_pca_points_are_the_reference_projection(feature_table):
    fig = embedding(feature_table, color="Metadata_group", method="pca")
    ax = fig.axes[0]
    got = np.zeros((12, 2))
    for coll, cat in zip(ax.collections, ["a", "b", "c"]):
        got[(feature_table["Metadata_group"] == cat).to_numpy()] = coll.get_offsets()
    feats = feature_table.drop(columns=["Metadata_group", "Metadata_dose"]).to_numpy(dtype=float)
    assert _same_up_to_sign(got, _reference_pca(feats))


def test_numeric_colour_gets_a_colorbar_not_a_legend(feature_table):
    fig = embedding(feature_table, color="Metadata_dose", method="pca")
    assert fig.axes[0].get_legend() is None
    assert len(fig.axes) == 2  # the scatter and its colour bar
    assert _points(fig).shape == (12, 2)


def test_missing_categories_are_one_na_entry(feature_table):
    t = feature_table.copy()
    t["Metadata_group"] = t["Metadata_group"].where(t.index % 5 != 0, None)  # rows 0, 5, 10 missing
    fig = embedding(t, color="Metadata_group", method="pca")
    labels = _legend_labels(fig)
    assert labels[-1] == "NA (3)" and len(labels) == 4
    assert _points(fig).shape == (12, 2)


def test_inputs_parquet_h5ad_anndata_and_array_give_the_same_points(feature_table, tmp_path):
    anndata = pytest.importorskip("anndata")
    meta = feature_table[["Metadata_group", "Metadata_dose"]]
    feats = feature_table.drop(columns=meta.columns).to_numpy()
    ref = _points(embedding(feature_table, "Metadata_group", method="pca"))
    feature_table.to_parquet(tmp_path / "f.parquet")
    adata = anndata.AnnData(X=feats.astype(np.float32), obs=meta.set_axis(meta.index.astype(str)))
    adata.var_names = [c for c in feature_table.columns if not c.startswith("Metadata_")]
    adata.write_h5ad(tmp_path / "f.h5ad")
    for table, kw in [(tmp_path / "f.parquet", {}), (str(tmp_path / "f.h5ad"), {}), (adata, {}),
                      (meta, {"features": feats})]:
        pts = _points(embedding(table, "Metadata_group", method="pca", **kw))
        assert np.allclose(pts, ref, atol=1e-4), type(table)


def test_array_without_metadata_and_colour_values(feature_table):
    feats = feature_table.drop(columns=["Metadata_group", "Metadata_dose"]).to_numpy()
    fig = embedding(feats, ["x", "y"] * 6, method="pca")
    assert _points(fig).shape == (12, 2)
    assert len(_legend_labels(fig)) == 2


def test_select_channels_matches_the_column_convention():
    names = feature_names("boc", CHANNEL_NAMES, 4, n_last_blocks=2, last_block=5)
    cols = select_channels(names, ["nuclei_z26"])
    assert [names[i] for i in cols] == [n for n in names if n.startswith("nuclei_z26_")]
    assert len(cols) == 3 * 4  # 2 CLS blocks + the patch mean, D = 4
    assert select_channels(names, [2, "DNA"]) == sorted(select_channels(names, ["Mito"]) +
                                                         select_channels(names, [0]))
    ha = feature_names("ha", ["a", "b"], 4, n_last_blocks=1)
    assert all(not ha[i].startswith("global") for i in select_channels(ha, ["a", "b"]))
    with pytest.raises(ChannelError, match="nuclei_z26"):
        select_channels(names, ["nuclei"])


def test_channels_option_maps_only_those_columns(feature_table):
    fig = embedding(feature_table, "Metadata_group", method="pca", channels=["DNA"])
    dna = feature_table[[c for c in feature_table.columns if c.startswith("DNA_")]].to_numpy(dtype=float)
    ax = fig.axes[0]
    got = np.zeros((12, 2))
    for coll, cat in zip(ax.collections, ["a", "b", "c"]):
        got[(feature_table["Metadata_group"] == cat).to_numpy()] = coll.get_offsets()
    assert _same_up_to_sign(got, _reference_pca(dna))
    assert "12 rows x 192 features" in ax.get_title()


def test_standardize_off_uses_raw_columns(feature_table):
    fig = embedding(feature_table, None, method="pca", standardize=False)
    feats = feature_table.drop(columns=["Metadata_group", "Metadata_dose"]).to_numpy(dtype=float)
    assert _same_up_to_sign(_points(fig), PCA(n_components=2).fit_transform(feats))


def test_randomised_pca_for_large_tables_agrees_with_exact(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)) * [10.0, 5.0, 2.0] @ rng.normal(size=(3, 80)) + 0.01 * rng.normal(size=(300, 80))
    monkeypatch.setattr(_common, "_EXACT_SVD_MAX", 10)
    scores, ratio = _common.pca(x, 2, seed=0)
    ref = PCA(n_components=2).fit(x)
    assert _same_up_to_sign(scores.astype(float), ref.transform(x))
    assert np.allclose(ratio, ref.explained_variance_ratio_, atol=1e-4)


def test_errors_name_the_problem(feature_table, tmp_path):
    with pytest.raises(InputError, match="Metadata_plate"):
        embedding(feature_table, "Metadata_plate", method="pca")
    with pytest.raises(InputError, match="method"):
        embedding(feature_table, method="tsne")
    with pytest.raises(InputError, match="channels= needs named"):
        embedding(np.ones((3, 4)), method="pca", channels=["DNA"])
    bad = feature_table.copy()
    bad.iloc[3, 5] = np.nan
    with pytest.raises(InputError, match="1 rows have NaN"):
        embedding(bad, method="pca")
    with pytest.raises(InputError, match="suffix"):
        embedding(feature_table, method="pca", output=tmp_path / "x.jpg")


def test_saves_png_and_svg(feature_table, tmp_path):
    embedding(feature_table, "Metadata_group", method="pca", output=tmp_path / "sub" / "pca.png")
    embedding(feature_table, "Metadata_group", method="pca", output=tmp_path / "pca.svg")
    assert (tmp_path / "sub" / "pca.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "pca.svg").read_bytes()[:1000]


def test_draws_into_a_given_axes(feature_table):
    from matplotlib.figure import Figure

    fig = Figure()
    axes = fig.subplots(1, 2)
    out = embedding(feature_table, "Metadata_group", method="pca", ax=axes[1])
    assert out is fig and len(axes[1].collections) == 3 and not axes[0].collections


@pytest.mark.slow
def test_umap_one_point_per_row_and_deterministic(feature_table):
    pytest.importorskip("umap")
    a = embedding(feature_table, "Metadata_group", method="umap", seed=0)
    b = embedding(feature_table, "Metadata_group", method="umap", seed=0)
    assert _points(a).shape == (12, 2)
    assert len(_legend_labels(a)) == 3
    assert np.allclose(_points(a), _points(b))


def _union_table(tiny_model) -> pd.DataFrame:
    """What ``dino-boc embed`` writes for images of different channel sets: the union of columns, NaN where absent."""
    rng = np.random.default_rng(3)
    parts = []
    for names, n in ((["DNA", "ER"], 6), (["DNA", "Mito"], 5)):
        feats = dino_boc.embed(rng.random((n, len(names), 32, 32)).astype(np.float32) * 255, model=tiny_model,
                               n_last_blocks=2)
        meta = pd.DataFrame({"Metadata_channels": [";".join(names)] * n})
        parts.append(pd.concat([meta, pd.DataFrame(feats, columns=dino_boc.feature_names(tiny_model, names, n_last_blocks=2))],
                               axis=1))
    return pd.concat(parts, ignore_index=True)


def test_union_table_plots_the_common_channels(tiny_model, caplog):
    table = _union_table(tiny_model)
    dna = [c for c in table.columns if c.startswith("DNA_")]
    with caplog.at_level(logging.WARNING, logger="dino_boc.plot.embedding"):
        fig = embedding(table, "Metadata_channels", method="pca")
    assert "mixes channel sets" in caplog.text and "'DNA;ER': 6 rows" in caplog.text
    assert f"x {len(dna)} features" in fig.axes[0].get_title() and "11 rows" in fig.axes[0].get_title()
    x, names, meta = load_table(table, allow_missing=True)
    got, got_names, _ = complete_rows_and_columns(x, names, meta, None)
    assert got_names == dna
    np.testing.assert_array_equal(got, table[dna].to_numpy())


def test_union_table_with_channels_keeps_the_rows_that_have_them(tiny_model, caplog):
    table = _union_table(tiny_model)
    with caplog.at_level(logging.WARNING, logger="dino_boc.plot.embedding"):
        fig = embedding(table, method="pca", channels=["Mito"])
    assert "leaving out 6 of 11 rows" in caplog.text
    assert "5 rows" in fig.axes[0].get_title()
    only_er = table[table["Metadata_channels"] == "DNA;ER"].drop(columns=[c for c in table if c.startswith("DNA_")])
    with pytest.raises(InputError, match="no feature column is filled in every row"):
        embedding(pd.concat([only_er, table[table["Metadata_channels"] == "DNA;Mito"].drop(
            columns=[c for c in table if c.startswith("DNA_")])], ignore_index=True), method="pca")


def test_csv_table_metadata_is_read_as_written(feature_table, tmp_path):
    table = feature_table.assign(Metadata_Plate=["000123"] * 6 + ["000124"] * 6)
    table.to_csv(tmp_path / "f.csv", index=False)
    _, names, meta = load_table(tmp_path / "f.csv")
    assert sorted(set(meta["Metadata_Plate"])) == ["000123", "000124"]
    assert names == [c for c in table.columns if not c.startswith("Metadata_")]
    fig = embedding(tmp_path / "f.csv", "Metadata_Plate", method="pca")
    assert sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts()) == ["000123 (6)", "000124 (6)"]
