"""LoadData CSVs as pe2loaddata writes them (tests/data/pe2loaddata): Orig* channels, relative PathName_
folders, Illum* illumination functions, metadata kept as written, Objects* label images."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dino_boc.errors import ChannelError, ConfigError, InputError
from dino_boc.io.loaddata import loaddata_objects, read_loaddata

ROOT = Path(__file__).parents[1] / "data" / "pe2loaddata"  # where pe2loaddata ran: PathName_ starts here
V1 = ROOT / "tests" / "data" / "Version1"
PLAIN, WITH_ILLUM = V1 / "load_data_version1.csv", V1 / "load_data_with_illum.csv"
ORIG = ["OrigRNA", "OrigER", "OrigAGP", "OrigMito", "OrigBrightfield", "OrigDNA"]  # column order of the CSV


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _plane(row: dict[str, str], ch: str, prefix: str = "") -> Path:
    return ROOT / row[f"PathName_{prefix}{ch}"] / row[f"FileName_{prefix}{ch}"]


def test_orig_channels_pixels_and_metadata_as_written(monkeypatch):
    monkeypatch.chdir(ROOT)  # the CSV's PathName_ folders are relative to where pe2loaddata ran
    (record,) = read_loaddata(PLAIN)
    row = _rows(PLAIN)[0]
    assert record.channel_names == tuple(ORIG)
    array, names = record.read()
    assert names == ORIG and array.dtype == np.uint16
    want = np.stack([tifffile.imread(_plane(row, ch)) for ch in ORIG])
    np.testing.assert_array_equal(array, want)
    meta = {k: v for k, v in row.items() if not k.startswith(("FileName_", "PathName_"))}
    assert dict(record.metadata) == meta  # every value the exact text of the CSV cell
    assert record.metadata["Metadata_Site"] == "1" and record.metadata["Metadata_PositionZ_OrigBrightfield"] == "0"
    assert record.metadata["Metadata_ImageResolutionX"] == "5.979760809567617E-07"


def test_path_root_is_tried_first_and_named(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # neither the CSV's folder nor here holds tests/data/Version1/images/
    with caplog.at_level(logging.WARNING, logger="dino_boc.io.loaddata"):
        (lost,) = read_loaddata(PLAIN)
    assert "none of the bases tried" in caplog.text and "--path-root" in caplog.text
    assert str(V1) in caplog.text and str(tmp_path) in caplog.text  # every base tried is named
    assert not os.path.exists(lost.paths[0]) and lost.paths[0].startswith(str(V1))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dino_boc.io.loaddata"):
        (record,) = read_loaddata(PLAIN, path_root=ROOT)
    assert f"resolved against {ROOT}" in caplog.text
    assert record.paths[0] == str(ROOT / "tests/data/Version1/images/r01c01f01p01-ch3sk1fk1fl1.tiff")
    assert record.read()[0].shape == (6, 64, 72)


def test_illum_columns_are_never_channels(monkeypatch):
    monkeypatch.chdir(ROOT)
    (record,) = read_loaddata(WITH_ILLUM)
    assert record.channel_names == tuple(ORIG) and record.illum is None
    assert not any("Illum" in k for k in record.metadata)
    with pytest.raises(ChannelError, match="illumination functions, not image channels"):
        read_loaddata(WITH_ILLUM, channels=["OrigDNA", "IllumDNA"])


def test_illum_divides_each_channel_as_correctilluminationapply(monkeypatch):
    monkeypatch.chdir(ROOT)
    (record,) = read_loaddata(WITH_ILLUM, channels=["OrigDNA", "OrigMito"], illum=True)
    row = _rows(WITH_ILLUM)[0]
    array, names = record.read()
    assert names == ["OrigDNA", "OrigMito"] and array.dtype == np.float32
    for got, ch in zip(array, ["DNA", "Mito"]):
        raw = tifffile.imread(_plane(row, f"Orig{ch}")).astype(np.float64)
        function = np.load(_plane(row, ch, prefix="Illum"))
        want = np.clip(raw / function, 0, 65535)  # divide; truncate at 0 and at 1 (= 65535 for 16-bit)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert not np.allclose(got, raw)


def test_illum_clips_at_the_files_range(tmp_path):
    plane = np.array([[60000, 10], [0, 65535]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", plane)
    np.save(tmp_path / "illum.npy", np.array([[0.5, 0.5], [2.0, 1.0]]))
    _write(tmp_path / "ld.csv", ["FileName_OrigDNA", "FileName_IllumDNA"], [["a.tif", "illum.npy"]])
    (record,) = read_loaddata(tmp_path / "ld.csv", illum=True)
    np.testing.assert_array_equal(record.read()[0][0], [[65535, 20], [0, 65535]])


@pytest.mark.parametrize("function, match", [
    (np.ones((3, 3)), "differ in size"), (np.array([[1.0, 0.0], [1.0, 1.0]]), "<= 0"),
    (np.array([[1.0, np.nan], [1.0, 1.0]]), "NaN"), (np.ones((2, 2, 2)), "2-D"),
])
def test_bad_illumination_functions_are_refused(tmp_path, function, match):
    tifffile.imwrite(tmp_path / "a.tif", np.ones((2, 2), np.uint16))
    np.save(tmp_path / "illum.npy", function)
    _write(tmp_path / "ld.csv", ["FileName_OrigDNA", "FileName_IllumDNA"], [["a.tif", "illum.npy"]])
    (record,) = read_loaddata(tmp_path / "ld.csv", illum=True)
    with pytest.raises(InputError, match=match):
        record.read()


def test_illum_without_its_column_is_an_error(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ChannelError, match="no illumination column"):
        read_loaddata(PLAIN, illum=True)


def test_objects_columns_give_the_label_images(tmp_path):
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(tmp_path / name, np.zeros((8, 8), np.uint16))
    (tmp_path / "seg").mkdir()
    _write(tmp_path / "ld.csv",
           ["FileName_OrigDNA", "PathName_OrigDNA", "ObjectsFileName_Nuclei", "ObjectsPathName_Nuclei", "Metadata_Well"],
           [["a.tif", "", "a_nuclei.png", "seg", "A01"], ["b.tif", "", "", "", "A02"]])
    records = read_loaddata(tmp_path / "ld.csv")
    assert [dict(r.metadata) for r in records] == [{"Metadata_Well": "A01"}, {"Metadata_Well": "A02"}]
    assert loaddata_objects(tmp_path / "ld.csv", "Nuclei") == [str(tmp_path / "seg" / "a_nuclei.png"), ""]
    with pytest.raises(ConfigError, match="objects in it: \\['Nuclei'\\]"):
        loaddata_objects(tmp_path / "ld.csv", "Cells")


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
