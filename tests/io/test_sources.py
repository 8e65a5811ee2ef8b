"""collect_sources: folders, globs, path lists, tables, LoadData detection; ImageRecord options."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from dino_boc.errors import ChannelError, ImageReadError, InputError
from dino_boc.io import ImageRecord, collect_sources


def _img(seed, k=2):
    return np.random.default_rng(seed).integers(0, 1000, size=(k, 8, 8), dtype=np.uint16)


def _tif(path, seed, k=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, _img(seed, k), photometric="minisblack", metadata={"axes": "CYX"})
    return path


@pytest.fixture
def tree(tmp_path):
    """root/{b.tif, a.npy, notes.txt, .hidden.tif, sub/c.tif, sub/d.ome.zarr/.zattrs (skipped: not read)}"""
    root = tmp_path / "root"
    _tif(root / "b.tif", 1)
    np.save(root / "a.npy", _img(2))
    (root / "notes.txt").write_text("not an image")
    _tif(root / ".hidden.tif", 3)
    _tif(root / "sub" / "c.tif", 4)
    zarr_dir = root / "sub" / "d.ome.zarr"
    (zarr_dir / "0").mkdir(parents=True)
    (zarr_dir / ".zattrs").write_text("{}")
    return root


def _names(records, root):
    return [str(Path(r.paths[0]).relative_to(root)) for r in records]


def test_folder_recursive_sorted(tree):
    records = collect_sources(tree)
    assert _names(records, tree) == ["a.npy", "b.tif", "sub/c.tif", "sub/d.ome.zarr"]
    assert [r.id for r in records] == [r.paths[0] for r in records]
    np.testing.assert_array_equal(records[1].read()[0], _img(1))


def test_folder_not_recursive(tree):
    assert _names(collect_sources(str(tree), recursive=False), tree) == ["a.npy", "b.tif"]


def test_glob_and_list_keep_input_order(tree):
    globbed = collect_sources(str(tree / "**" / "*.tif"))
    assert _names(globbed, tree) == ["b.tif", "sub/c.tif"]
    listed = collect_sources([tree / "sub" / "c.tif", str(tree / "a.npy")])
    assert _names(listed, tree) == ["sub/c.tif", "a.npy"]
    np.testing.assert_array_equal(listed[0].read()[0], _img(4))


def test_read_options_are_stored(tmp_path):
    stack = np.random.default_rng(0).integers(0, 99, size=(3, 8, 8), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", stack, photometric="minisblack")  # axes unknown to tifffile
    record = collect_sources(tmp_path / "z.tif", dims="ZYX", z=1)[0]
    assert (record.dims, record.z) == ("ZYX", 1)
    np.testing.assert_array_equal(record.read()[0], stack[1:2])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_with_path_column_keeps_metadata(tmp_path, suffix):
    _tif(tmp_path / "imgs" / "x.tif", 5)
    _tif(tmp_path / "imgs" / "y.tif", 6, k=3)
    table = pd.DataFrame(
        {
            "file": ["imgs/x.tif", str(tmp_path / "imgs" / "y.tif")],  # relative to the table, and absolute
            "well": ["A01", "A02"],
            "dose": [0.5, float("nan")],
            "rep": [1, 2],
        }
    )
    path = tmp_path / f"inputs{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    with pytest.raises(InputError, match="no 'path' column"):
        collect_sources(path)
    records = collect_sources(path, path_column="file")
    assert [r.paths[0] for r in records] == [str(tmp_path / "imgs" / "x.tif"), str(tmp_path / "imgs" / "y.tif")]
    if suffix == ".csv":  # a CSV's cells are kept as written: text, an empty cell is ""
        assert records[0].metadata == {"well": "A01", "dose": "0.5", "rep": "1"}
        assert records[1].metadata["dose"] == ""
    else:  # Parquet keeps its stored types
        assert records[0].metadata == {"well": "A01", "dose": 0.5, "rep": 1}
        assert type(records[0].metadata["rep"]) is int and type(records[0].metadata["dose"]) is float
        assert math.isnan(records[1].metadata["dose"])
    np.testing.assert_array_equal(records[1].read()[0], _img(6, k=3))


def test_loaddata_csv_is_detected(tmp_path):
    for ch, seed in (("DNA", 1), ("RNA", 2)):
        tifffile.imwrite(tmp_path / f"{ch}.tif", _img(seed, k=1)[0])
    pd.DataFrame({"Metadata_Well": ["C03"], "FileName_DNA": ["DNA.tif"], "FileName_RNA": ["RNA.tif"]}).to_csv(
        tmp_path / "load_data.csv", index=False
    )
    (record,) = collect_sources(tmp_path / "load_data.csv")
    array, names = record.read()
    assert names == ["DNA", "RNA"] and record.metadata == {"Metadata_Well": "C03"}
    np.testing.assert_array_equal(array, np.stack([_img(1, k=1)[0], _img(2, k=1)[0]]))


def test_repeated_ids_made_unique(tree):
    records = collect_sources([tree / "b.tif", tree / "b.tif", tree / "b.tif"])
    first = str(tree / "b.tif")
    assert [r.id for r in records] == [first, f"{first}#2", f"{first}#3"]


def test_missing_image_listed_then_fails_when_read(tmp_path):
    (record,) = collect_sources([tmp_path / "gone.tif"])
    with pytest.raises(ImageReadError, match="no such file"):
        record.read()


def test_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        collect_sources(tmp_path / "no_such_folder")
    with pytest.raises(InputError, match="matches no supported image"):
        collect_sources(str(tmp_path / "*.tif"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        collect_sources(tmp_path / "empty")


def test_unknown_extension_in_list_fails_at_read(tmp_path):
    (tmp_path / "scan.bmp").write_bytes(b"BM")
    (record,) = collect_sources([tmp_path / "scan.bmp"])
    with pytest.raises(ImageReadError, match=r"unknown image format.*\.tif"):
        record.read()


def test_record_channel_names(tmp_path):
    _tif(tmp_path / "x.tif", 7, k=2)
    record = ImageRecord(id="x", paths=[str(tmp_path / "x.tif")], channel_names=["DNA", "Actin"])
    assert record.paths == (str(tmp_path / "x.tif"),)
    assert record.read()[1] == ["DNA", "Actin"]
    with pytest.raises(ChannelError, match="3 channel names"):
        ImageRecord(id="x", paths=(str(tmp_path / "x.tif"),), channel_names=("a", "b", "c")).read()
    with pytest.raises(ChannelError, match="one per file"):
        ImageRecord(id="y", paths=("a.tif", "b.tif"), channel_names=("a",))
    assert collect_sources([record]) == [record]
