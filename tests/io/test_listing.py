"""Streamed tables give the records collect_sources gives, chunk size whatever."""

from __future__ import annotations

import pandas as pd
import pytest

from dino_boc.errors import InputError
from dino_boc.io import collect_sources
from dino_boc.io.listing import iter_table_records


def _loaddata(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "Metadata_Plate": ["P1"] * n,
        "Metadata_Well": [f"A{i:02d}" for i in range(n)],
        "Metadata_Site": list(range(n)),
        "FileName_DNA": [f"w{i}-ch1.tiff" for i in range(n)],
        "PathName_DNA": ["imgs"] * n,
        "FileName_ER": [f"w{i}-ch2.tiff" for i in range(n)],
        "PathName_ER": ["s3://bucket/imgs"] * n,
    })


@pytest.mark.parametrize("name", ["ld.csv", "ld.csv.gz", "ld.parquet"])
@pytest.mark.parametrize("chunk_rows", [1, 3, 100])
def test_loaddata_streamed_equals_whole_table(tmp_path, name, chunk_rows):
    df = _loaddata(7)
    path = tmp_path / name
    df.to_parquet(path, index=False) if name.endswith("parquet") else df.to_csv(path, index=False)
    got = list(iter_table_records(path, chunk_rows=chunk_rows))
    assert got == collect_sources(path)
    assert got[2].paths == (str(tmp_path / "imgs" / "w2-ch2.tiff").replace("ch2", "ch1"), "s3://bucket/imgs/w2-ch2.tiff")


def test_path_table_streamed_equals_whole_table(tmp_path):
    pd.DataFrame({"path": ["a.tif", "sub/b.tif", ""], "Metadata_Dose": [1.5, 2.0, 3.0]}).to_csv(tmp_path / "t.csv", index=False)
    assert list(iter_table_records(tmp_path / "t.csv", chunk_rows=2)) == collect_sources(tmp_path / "t.csv")


def test_table_without_paths_is_refused(tmp_path):
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputError, match="'path'"):
        next(iter_table_records(tmp_path / "t.csv"))
