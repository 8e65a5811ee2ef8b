"""A dino_boc table goes through pycytominer (aggregate -> normalize -> feature_select) and anndata
without hand edits; docs/profiling.md's recipe runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import tifffile

import dino_boc
from dino_boc.outputs import feature_columns, metadata_columns, prefix_features

pycytominer = pytest.importorskip("pycytominer")

DOC = Path(__file__).parents[2] / "docs" / "profiling.md"


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """A real dino_boc run: 8 fields, 2 plates x 2 wells x 2 sites, a plate name with leading zeros."""
    root = tmp_path_factory.mktemp("profiling")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        plate, well, site = ("000123", "000124")[i // 4], ("A01", "B02")[(i // 2) % 2], f"0{i % 2 + 1}"
        name = f"{plate}_{well}_s{site}.tif"
        tifffile.imwrite(root / name, rng.integers(0, 4000, (2, 32, 32)).astype(np.uint16), metadata={"axes": "CYX"})
        rows.append({"path": name, "Metadata_Plate": plate, "Metadata_Well": well, "Metadata_Site": site})
    pd.DataFrame(rows).to_csv(root / "inputs.csv", index=False)
    model = dino_boc.create_model("boc", embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32, seed=0)
    for suffix in ("parquet", "h5ad"):
        dino_boc.embed_dataset(root / "inputs.csv", root / f"features.{suffix}", model=model, n_last_blocks=1,
                               channel_names="DNA,ER", progress=False)
    return root / "features.parquet"


def test_metadata_is_kept_as_written(table):
    df = pd.read_parquet(table)
    assert sorted(set(df["Metadata_Plate"])) == ["000123", "000124"] and set(df["Metadata_Site"]) == {"01", "02"}


def test_pycytominer_pipeline_with_feature_columns(table):
    df = pd.read_parquet(table)
    feats = feature_columns(df)
    assert feats == [c for c in df.columns if not c.startswith("Metadata_")] and feats[0].startswith("DNA_")
    with pytest.raises(ValueError, match="No features"):  # why the helper is needed
        pycytominer.aggregate(df, strata=["Metadata_Plate", "Metadata_Well"])
    agg = pycytominer.aggregate(df, strata=["Metadata_Plate", "Metadata_Well"], features=feats)
    want = df.groupby(["Metadata_Plate", "Metadata_Well"])[feats].median().reset_index()
    assert agg["Metadata_Plate"].tolist() == want["Metadata_Plate"].tolist()
    np.testing.assert_allclose(agg[feats].to_numpy(), want[feats].to_numpy(), rtol=1e-5, atol=1e-6)
    norm = pycytominer.normalize(agg, features=feats, meta_features=metadata_columns(agg), method="standardize")
    x = agg[feats].to_numpy(dtype=np.float64)
    z = (x - x.mean(0)) / x.std(0)
    np.testing.assert_allclose(norm[feats].to_numpy(dtype=np.float64), z, rtol=1e-4, atol=1e-4)
    sel = pycytominer.feature_select(norm, features=feats, operation=["variance_threshold", "correlation_threshold"])
    kept = feature_columns(sel)
    assert 0 < len(kept) < len(feats) and set(kept) <= set(feats)
    assert metadata_columns(sel) == ["Metadata_Plate", "Metadata_Well"]


def test_prefix_makes_infer_work(table):
    df = prefix_features(pd.read_parquet(table), "Cells_")
    assert feature_columns(df)[0].startswith("Cells_DNA_") and "Metadata_Plate" in df.columns
    agg = pycytominer.aggregate(df, strata=["Metadata_Plate", "Metadata_Well"])  # features="infer"
    norm = pycytominer.normalize(agg)
    sel = pycytominer.feature_select(norm, operation="variance_threshold")
    assert len(agg) == 4 and feature_columns(sel) and all(c.startswith("Cells_") for c in feature_columns(sel))


def test_anndata_keeps_features_in_x_and_round_trips(table, tmp_path):
    df = pd.read_parquet(table)
    adata = anndata.read_h5ad(table.with_suffix(".h5ad"))
    feats = feature_columns(df)
    assert list(adata.var_names) == feats
    np.testing.assert_array_equal(adata.X, df[feats].to_numpy(dtype=np.float32))
    assert adata.obs["Metadata_Plate"].astype(str).tolist() == df["Metadata_Plate"].tolist()
    adata.write_h5ad(tmp_path / "again.h5ad")
    back = anndata.read_h5ad(tmp_path / "again.h5ad")
    np.testing.assert_array_equal(back.X, adata.X)
    pd.testing.assert_frame_equal(back.obs, adata.obs)
    assert back.uns.keys() == adata.uns.keys()
    from pycytominer.cyto_utils.load import load_profiles  # pycytominer reads obs + X of an .h5ad

    profiles = load_profiles(str(table.with_suffix(".h5ad")))
    np.testing.assert_array_equal(profiles[feats].to_numpy(dtype=np.float32), adata.X)
    assert profiles["Metadata_Well"].astype(str).tolist() == df["Metadata_Well"].tolist()


def test_the_documented_recipe_runs(table, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/profiling.md has no python block"
    monkeypatch.chdir(table.parent)
    scope: dict = {}
    exec(compile("\n".join(blocks), str(DOC), "exec"), scope)  # the docs read features.parquet from here
    assert len(scope["profiles"]) == 4 and feature_columns(scope["profiles"])
