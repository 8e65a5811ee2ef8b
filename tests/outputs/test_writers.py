import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dino_boc.distributed import shard_indices
from dino_boc.errors import ConfigError, InputError
from dino_boc.outputs import Provenance, ShardWriter, finalize, read_provenance
from outputs_helpers import expected_frame, feed, make_items, make_provenance


def _write(shard_dir, items, *, shard_size=4):
    writer = ShardWriter(shard_dir, make_provenance(), shard_size=shard_size)
    feed(writer, items)
    writer.close()
    return writer.provenance


def _features(frame):
    return [c for c in frame.columns if not c.startswith("Metadata_")]


def _assert_metadata_equal(got: pd.DataFrame, want: pd.DataFrame):
    assert list(got.columns) == list(want.columns)
    for col in want.columns:
        g, w = got[col].astype(object).tolist(), want[col].astype(object).tolist()
        assert [str(v) for v in g] == [str(v) for v in w], col


def test_parquet_round_trip(tmp_path):
    items = make_items(25, seed=10)
    prov = _write(tmp_path / "shards", items)
    summary = finalize(tmp_path / "shards", tmp_path / "out.parquet", row_group_rows=7)

    table = pq.read_table(tmp_path / "out.parquet")
    want = expected_frame(items)
    pd.testing.assert_frame_equal(table.to_pandas(), want)
    assert Provenance.from_json(table.schema.metadata[b"dino_boc"]) == prov
    assert read_provenance(tmp_path / "out.parquet") == prov
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups > 1
    # 3-channel rows lack the 5-channel columns: null, not NaN
    three = np.array([c.count(";") == 2 for c in want["Metadata_channels"]])
    assert table.column("Mito_cls_0").null_count == three.sum()
    assert summary["n_rows"] == summary["n_ok"] == len(want)
    assert summary["feature_columns"] == 10 and summary["format"] == "parquet"


def test_h5ad_round_trip(tmp_path):
    anndata = pytest.importorskip("anndata")
    items = make_items(25, seed=11)
    prov = _write(tmp_path / "shards", items)
    finalize(tmp_path / "shards", tmp_path / "out.h5ad", row_group_rows=6)

    adata = anndata.read_h5ad(tmp_path / "out.h5ad")
    want = expected_frame(items)
    feats = _features(want)
    assert adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X, want[feats].to_numpy())  # NaN where a row lacks a column
    assert list(adata.var_names) == feats
    _assert_metadata_equal(adata.obs.reset_index(drop=True), want.drop(columns=feats))
    assert Provenance.from_json(adata.uns["dino_boc"]) == prov
    assert read_provenance(tmp_path / "out.h5ad") == prov


def test_npy_round_trip(tmp_path):
    items = make_items(25, seed=12)
    prov = _write(tmp_path / "shards", items)
    finalize(tmp_path / "shards", tmp_path / "out.npy", row_group_rows=5)

    want = expected_frame(items)
    feats = _features(want)
    x = np.load(tmp_path / "out.npy")
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, want[feats].to_numpy())
    index = pd.read_csv(tmp_path / "out.index.csv")
    pd.testing.assert_frame_equal(index, want.drop(columns=feats))
    side = json.loads((tmp_path / "out.provenance.json").read_text())
    assert side["feature_names"] == feats and side["n_rows"] == len(want)
    assert Provenance.from_dict(side["dino_boc"]) == prov
    assert read_provenance(tmp_path / "out.npy") == prov


def test_errors_file_and_summary(tmp_path):
    items = make_items(30, seed=13, fail_every=4)
    _write(tmp_path / "shards", items)
    summary = finalize(tmp_path / "shards", tmp_path / "out.parquet")

    failed = [it for it in items if "reason" in it]
    errors = pd.read_csv(tmp_path / "out.parquet.errors.csv")
    assert list(errors.columns) == ["index", "path", "reason"]
    assert errors["index"].tolist() == [it["index"] for it in failed]
    assert errors["path"].tolist() == [it["path"] for it in failed]
    assert errors["reason"].tolist() == [it["reason"] for it in failed]
    kinds = [it["reason"].split(":")[0] for it in failed]
    assert summary["n_failed"] == len(failed)
    assert summary["by_reason"] == {k: kinds.count(k) for k in set(kinds)}
    assert summary["errors_file"] == str(tmp_path / "out.parquet.errors.csv")


@pytest.mark.parametrize("assign", ["interleaved", "contiguous"])
def test_two_ranks_merge_in_input_order(tmp_path, assign):
    items = make_items(37, seed=14)
    _write(tmp_path / "single", items, shard_size=5)
    finalize(tmp_path / "single", tmp_path / "single.parquet")

    if assign == "interleaved":
        parts = [items[0::2], items[1::2]]
    else:
        parts = [[items[i] for i in shard_indices(len(items), r, 2)] for r in range(2)]
    writers = [ShardWriter(tmp_path / "two", make_provenance(), shard_size=3, rank=r) for r in range(2)]
    feed(writers[1], parts[1])  # rank 1 commits all its shards before rank 0 commits any
    writers[1].close()
    feed(writers[0], parts[0])
    writers[0].close()
    finalize(tmp_path / "two", tmp_path / "two.parquet", row_group_rows=4)

    two = pq.read_table(tmp_path / "two.parquet").replace_schema_metadata(None)
    single = pq.read_table(tmp_path / "single.parquet").replace_schema_metadata(None)
    assert two.equals(single)
    pd.testing.assert_frame_equal(two.to_pandas(), expected_frame(items))


def test_single_cell_rows(tmp_path):
    items = make_items(15, seed=15, single_cell=True)
    _write(tmp_path / "shards", items, shard_size=4)
    summary = finalize(tmp_path / "shards", tmp_path / "cells.parquet")

    got = pq.read_table(tmp_path / "cells.parquet").to_pandas()
    want = expected_frame(items)
    pd.testing.assert_frame_equal(got, want)
    assert list(got.columns[-13:-10]) == ["Metadata_cell_label", "Metadata_centroid_y", "Metadata_centroid_x"]
    assert summary["n_rows"] == len(want)
    assert summary["n_ok"] == sum(1 for it in items if "rows" in it and it["rows"])


def test_metadata_types_are_unified_across_shards(tmp_path):
    writer = ShardWriter(tmp_path / "shards", make_provenance(), shard_size=2)
    feats = np.ones((2, 2), dtype=np.float32)
    first = [{"Metadata_site": 1, "Metadata_x": 1}, {"Metadata_site": 2, "Metadata_x": 2}]
    second = [{"Metadata_site": "s3", "Metadata_x": 0.5}, {"Metadata_site": None, "Metadata_x": None}]
    writer.add([0, 1], first, feats, ["a", "b"])
    writer.add([2, 3], second, feats, ["a", "b"])
    writer.close()
    finalize(tmp_path / "shards", tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("Metadata_site").type == pa.string()
    assert table.column("Metadata_site").to_pylist() == ["1", "2", "s3", None]
    assert table.schema.field("Metadata_x").type == pa.float64()
    assert table.column("Metadata_x").to_pylist() == [1.0, 2.0, 0.5, None]


@pytest.mark.parametrize("suffix", [".parquet", ".npy", ".h5ad"])
def test_everything_failed_gives_an_empty_table(tmp_path, suffix):
    if suffix == ".h5ad":
        pytest.importorskip("anndata")
    items = [{"index": i, "path": f"p{i}", "reason": "ImageReadError: corrupt"} for i in range(3)]
    _write(tmp_path / "shards", items)
    summary = finalize(tmp_path / "shards", tmp_path / f"out{suffix}")
    assert summary["n_ok"] == 0 and summary["n_failed"] == 3
    assert read_provenance(tmp_path / f"out{suffix}").model_name == "tiny-boc"
    if suffix == ".parquet":
        assert pq.read_table(tmp_path / "out.parquet").num_rows == 0


def test_bad_arguments(tmp_path):
    _write(tmp_path / "shards", make_items(3, seed=16, fail_every=0))
    with pytest.raises(ConfigError, match="suffix"):
        finalize(tmp_path / "shards", tmp_path / "out.csv")
    with pytest.raises(InputError, match="manifest"):
        finalize(tmp_path / "empty", tmp_path / "out.parquet")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(InputError, match="provenance"):
        read_provenance(tmp_path / "foreign.parquet")


def test_ranks_of_different_runs_are_rejected(tmp_path):
    _write(tmp_path / "shards", make_items(4, seed=17, fail_every=0))
    other = ShardWriter(tmp_path / "shards", make_provenance(model_name="other"), rank=1)
    other.close()
    with pytest.raises(ConfigError, match="different"):
        finalize(tmp_path / "shards", tmp_path / "out.parquet")
