"""The one feature-table reader (outputs/read.py): a round trip through each writer of outputs/writers.py, and
CSV/TSV tables; clear errors for missing, corrupt and foreign files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dino_boc.errors import ImageReadError, InputError
from dino_boc.outputs import ShardWriter, finalize, read_features
from dino_boc.outputs.read import table_format
from outputs_helpers import expected_frame, feed, make_items, make_provenance


def _finalized(tmp_path, suffix, seed):
    items = make_items(20, seed=seed, single_cell=True)
    writer = ShardWriter(tmp_path / "shards", make_provenance(), shard_size=4)
    feed(writer, items)
    writer.close()
    finalize(tmp_path / "shards", tmp_path / f"out{suffix}", row_group_rows=5)
    return tmp_path / f"out{suffix}", expected_frame(items), writer.provenance


@pytest.mark.parametrize("suffix", [".parquet", ".h5ad", ".npy"])
def test_every_written_format_reads_back_as_the_expected_table(tmp_path, suffix):
    if suffix == ".h5ad":
        pytest.importorskip("anndata")
    path, want, prov = _finalized(tmp_path, suffix, seed=len(suffix))
    got = read_features(path)
    table, records = got  # a (table, records) pair
    assert list(table.columns) == list(want.columns)
    feats = [c for c in want.columns if not c.startswith("Metadata_")]
    np.testing.assert_array_equal(table[feats].to_numpy(np.float32), want[feats].to_numpy())  # NaN where absent
    for col in want.columns.difference(feats):  # h5ad keeps text as categoricals, the npy index CSV 10.0 as 10
        got_col = table[col].astype(want[col].dtype).reset_index(drop=True)
        pd.testing.assert_series_equal(got_col, want[col], check_names=False)
    assert got.provenance == prov and records["dino_boc"] == prov.to_dict()


def test_text_tables_with_and_without_typed_metadata(tmp_path):
    frame = pd.DataFrame({"Metadata_Plate": ["000123", "000124"], "Metadata_site": [1, 2],
                          "DNA_cls23_0000": [0.5, -1.25], "DNA_mean_0000": [2.0, 3.0]})
    for name, sep in (("t.csv", ","), ("t.csv.gz", ","), ("t.tsv", "\t"), ("t.tsv.gz", "\t")):
        frame.to_csv(tmp_path / name, sep=sep, index=False)
        table, records = read_features(tmp_path / name, metadata_as_text=True)
        pd.testing.assert_frame_equal(table, frame.astype({"Metadata_site": str}))
        assert records == {} and read_features(tmp_path / name).provenance is None
        typed = read_features(tmp_path / name).table  # inferred: the plate's leading zeros are gone
        assert typed["Metadata_Plate"].tolist() == [123, 124] and typed["Metadata_site"].tolist() == [1, 2]


def test_a_parquet_folder_is_one_table(tmp_path):
    frame = pd.DataFrame({"Metadata_Plate": ["a", "b", "c"], "f_0": [1.0, 2.0, 3.0]})
    (tmp_path / "ds").mkdir()
    frame.iloc[:2].to_parquet(tmp_path / "ds" / "part-0.parquet", index=False)
    frame.iloc[2:].to_parquet(tmp_path / "ds" / "part-1.parquet", index=False)
    assert table_format(tmp_path / "ds") == "parquet"
    pd.testing.assert_frame_equal(read_features(tmp_path / "ds").table.sort_values("Metadata_Plate",
                                                                                   ignore_index=True), frame)


def test_clear_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_features(tmp_path / "absent.parquet")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InputError, match="expected a .parquet or .csv feature table"):
        read_features(tmp_path / "f.txt")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4)
    with pytest.raises(ImageReadError, match="probably corrupt or truncated"):
        read_features(tmp_path / "bad.parquet")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ImageReadError, match="probably corrupt or truncated"):
        read_features(tmp_path / "empty.csv")
    np.save(tmp_path / "lone.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(InputError, match=r"comes without .*lone.index.csv.*keep the three files together"):
        read_features(tmp_path / "lone.npy")
    (tmp_path / "lone.index.csv").write_text("Metadata_path\na\nb\n")
    (tmp_path / "lone.provenance.json").write_text(json.dumps({"feature_names": ["x", "y"]}))
    with pytest.raises(InputError, match=r"shape \(2, 3\) but lone.provenance.json names 2 features"):
        read_features(tmp_path / "lone.npy")
