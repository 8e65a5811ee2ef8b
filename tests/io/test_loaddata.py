"""CellProfiler LoadData CSVs: one file per channel, metadata columns, missing and mismatched files."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from dino_boc.errors import ChannelError, ImageReadError, InputError
from dino_boc.io import ImageRecord, read_loaddata

CHANNELS = ["DNA", "ER", "Mito"]


def _plane(seed, shape=(12, 10)):
    return np.random.default_rng(seed).integers(0, 65535, size=shape, dtype=np.uint16)


def _write_plate(tmp_path, n_sites=2):
    """Images in tmp_path/images/, a CSV in tmp_path/ with relative PathName for DNA/ER, absolute for Mito."""
    (tmp_path / "images").mkdir()
    rows, planes = [], {}
    for site in range(n_sites):
        row = {"Metadata_Plate": "P1", "Metadata_Well": "B02", "Metadata_Site": site}
        for k, ch in enumerate(CHANNELS):
            name = f"r02c02f{site:02d}-ch{k + 1}.tiff"
            planes[(site, ch)] = _plane(10 * site + k)
            tifffile.imwrite(tmp_path / "images" / name, planes[(site, ch)])
            row[f"FileName_{ch}"] = name
            row[f"PathName_{ch}"] = str(tmp_path / "images") if ch == "Mito" else "images"
        rows.append(row)
    columns = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    for ch in CHANNELS:  # CellProfiler's interleaved column order
        columns += [f"FileName_{ch}", f"PathName_{ch}"]
    _write_csv(tmp_path / "load_data.csv", columns, rows)
    return tmp_path / "load_data.csv", planes


def _write_csv(path, columns, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def test_rows_become_stacked_records(tmp_path):
    csv_path, planes = _write_plate(tmp_path)
    records = read_loaddata(csv_path)
    assert [r.id for r in records] == ["load_data.csv#0", "load_data.csv#1"]
    for site, record in enumerate(records):
        assert isinstance(record, ImageRecord)
        assert record.channel_names == tuple(CHANNELS)
        assert record.metadata == {"Metadata_Plate": "P1", "Metadata_Well": "B02", "Metadata_Site": str(site)}  # as written
        array, names = record.read()
        assert names == CHANNELS
        assert array.dtype == np.uint16
        np.testing.assert_array_equal(array, np.stack([planes[(site, ch)] for ch in CHANNELS]))


def test_channel_selection_and_order(tmp_path):
    csv_path, planes = _write_plate(tmp_path, n_sites=1)
    record = read_loaddata(csv_path, channels=["Mito", "DNA"])[0]
    array, names = record.read()
    assert names == ["Mito", "DNA"]
    np.testing.assert_array_equal(array, np.stack([planes[(0, "Mito")], planes[(0, "DNA")]]))
    assert "FileName_ER" not in record.metadata
    with pytest.raises(ChannelError, match="Actin"):
        read_loaddata(csv_path, channels=["Actin"])


def test_path_name_optional(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _plane(1))
    tifffile.imwrite(tmp_path / "b.tif", _plane(2))
    row = {"FileName_A": "a.tif", "FileName_B": "b.tif", "Treatment": "DMSO"}
    _write_csv(tmp_path / "ld.csv", list(row), [row])
    array, names = read_loaddata(tmp_path / "ld.csv")[0].read()
    np.testing.assert_array_equal(array, np.stack([_plane(1), _plane(2)]))
    assert names == ["A", "B"]


def test_missing_channel_file_fails_at_read(tmp_path):
    csv_path, _ = _write_plate(tmp_path)
    (tmp_path / "images" / "r02c02f01-ch2.tiff").unlink()  # ER of site 1
    records = read_loaddata(csv_path)  # listing does not fail: a batch records the bad row and goes on
    records[0].read()
    with pytest.raises(ImageReadError, match="no such file.*r02c02f01-ch2.tiff"):
        records[1].read()


def test_empty_file_name_cell(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _plane(1))
    _write_csv(tmp_path / "ld.csv", ["FileName_A", "FileName_B"], [{"FileName_A": "a.tif", "FileName_B": ""}])
    with pytest.raises(ImageReadError, match="no file for channel 'B'"):
        read_loaddata(tmp_path / "ld.csv")[0].read()


def test_channel_files_of_different_size(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _plane(1, (12, 10)))
    tifffile.imwrite(tmp_path / "b.tif", _plane(2, (12, 11)))
    _write_csv(tmp_path / "ld.csv", ["FileName_A", "FileName_B"], [{"FileName_A": "a.tif", "FileName_B": "b.tif"}])
    with pytest.raises(ImageReadError, match="differ in size"):
        read_loaddata(tmp_path / "ld.csv")[0].read()


def test_multiplane_channel_file_refused(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _plane(1))
    two = np.stack([_plane(2), _plane(3)])
    tifffile.imwrite(tmp_path / "b.tif", two, photometric="minisblack", metadata={"axes": "CYX"})
    _write_csv(tmp_path / "ld.csv", ["FileName_A", "FileName_B"], [{"FileName_A": "a.tif", "FileName_B": "b.tif"}])
    with pytest.raises(ImageReadError, match="single 2-D plane"):
        read_loaddata(tmp_path / "ld.csv")[0].read()


def test_table_without_file_columns(tmp_path):
    _write_csv(tmp_path / "meta.csv", ["Metadata_Well"], [{"Metadata_Well": "A01"}])
    with pytest.raises(InputError, match="FileName_"):
        read_loaddata(tmp_path / "meta.csv")
    with pytest.raises(ImageReadError, match="no such table"):
        read_loaddata(tmp_path / "absent.csv")
