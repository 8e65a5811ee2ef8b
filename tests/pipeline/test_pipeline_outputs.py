"""Each output format written by embed_dataset, read back with its own library, holds the same table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import dino_boc
from dino_boc.errors import ConfigError

from .conftest import L
from .helpers import image, write_cyx


@pytest.fixture
def corpus(tmp_path, rng):
    d = tmp_path / "in"
    d.mkdir()
    arrays = {"a.tif": image(rng, 2), "b.tif": image(rng, 3), "c.tif": image(rng, 2, 40, 40)}
    names = {"a.tif": ["DNA", "ER"], "b.tif": ["DNA", "ER", "RNA"], "c.tif": ["DNA", "ER"]}
    for n, a in arrays.items():
        write_cyx(d / n, a, names[n])
    return d, arrays, names


def embed_expected(model, arrays, names):
    """Independent: one embed() per file; a dict column -> values (NaN where a row lacks the column)."""
    rows = []
    for n in sorted(arrays):
        feats = dino_boc.embed(arrays[n], model=model, n_last_blocks=L)
        rows.append(dict(zip(dino_boc.feature_names(model, names[n], n_last_blocks=L), feats)))
    return pd.DataFrame(rows)


def run(corpus, model, out, **kw):
    d, _, _ = corpus
    return dino_boc.embed_dataset(d, out, model=model, n_last_blocks=L, progress=False, **kw)


def test_parquet_read_with_pyarrow(corpus, model, tmp_path):
    d, arrays, names = corpus
    summary = run(corpus, model, tmp_path / "out" / "f.parquet")
    assert summary["n_ok"] == 3 and summary["n_failed"] == 0 and summary["output"] == str(tmp_path / "out" / "f.parquet")
    assert not (tmp_path / "out" / "f.parquet.shards").exists()  # removed after success
    table = pq.read_table(tmp_path / "out" / "f.parquet")
    prov = json.loads(table.schema.metadata[b"dino_boc"])
    assert prov["feature_layout"] == {"arch": "boc", "n_last_blocks": L, "avgpool": True, "channel_pool": "concat"}
    assert prov["model_name"] == model.name and prov["pretrained"] is False
    df = table.to_pandas()
    assert df["Metadata_path"].tolist() == [str(d / n) for n in sorted(arrays)]
    want = embed_expected(model, arrays, names)
    np.testing.assert_allclose(df[want.columns].to_numpy(float), want.to_numpy(float), atol=1e-5, rtol=0)
    assert pd.read_csv(tmp_path / "out" / "f.parquet.errors.csv").empty


def test_h5ad_read_with_anndata(corpus, model, tmp_path):
    anndata = pytest.importorskip("anndata")
    _, arrays, names = corpus
    run(corpus, model, tmp_path / "f.h5ad")
    adata = anndata.read_h5ad(tmp_path / "f.h5ad")
    assert adata.shape[0] == 3 and list(adata.obs["Metadata_channels"]) == ["DNA;ER", "DNA;ER;RNA", "DNA;ER"]
    want = embed_expected(model, arrays, names)
    got = pd.DataFrame(np.asarray(adata.X), columns=list(adata.var_names))
    np.testing.assert_allclose(got[want.columns].to_numpy(float), want.to_numpy(float), atol=1e-5, rtol=0)
    assert json.loads(adata.uns["dino_boc"])["model_name"] == model.name


def test_npy_read_with_numpy_and_pandas(corpus, model, tmp_path):
    _, arrays, names = corpus
    run(corpus, model, tmp_path / "f.npy")
    x = np.load(tmp_path / "f.npy")
    index = pd.read_csv(tmp_path / "f.index.csv")
    side = json.loads((tmp_path / "f.provenance.json").read_text())
    assert x.dtype == np.float32 and x.shape == (3, len(side["feature_names"])) and len(index) == 3
    got = pd.DataFrame(x, columns=side["feature_names"])
    want = embed_expected(model, arrays, names)
    np.testing.assert_allclose(got[want.columns].to_numpy(float), want.to_numpy(float), atol=1e-5, rtol=0)
    assert np.isnan(got.loc[[0, 2], [c for c in got.columns if c.startswith("RNA_")]]).all().all()
    assert side["dino_boc"]["feature_layout"]["n_last_blocks"] == L


def test_keep_shards_and_unknown_suffix(corpus, model, tmp_path):
    summary = run(corpus, model, tmp_path / "f.parquet", keep_shards=True, shard_size=1)
    assert summary["shards"] == str(tmp_path / "f.parquet.shards")
    assert len(list((tmp_path / "f.parquet.shards" / "rank-00000").glob("shard-*.parquet"))) == 3
    with pytest.raises(ConfigError, match="suffix"):
        run(corpus, model, tmp_path / "f.xlsx")
