"""``dino-boc embed`` on pe2loaddata's LoadData CSVs: --path-root, --illum, --channel-names, Objects masks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tifffile

import dino_boc
from dino_boc.cli import main

from .conftest import L
from .helpers import feature_block

ROOT = Path(__file__).parents[1] / "data" / "pe2loaddata"
CSV = ROOT / "tests" / "data" / "Version1" / "load_data_with_illum.csv"


def _row() -> dict[str, str]:
    with open(CSV, newline="") as f:
        return next(csv.DictReader(f))


def _corrected(row: dict[str, str], ch: str) -> np.ndarray:
    raw = tifffile.imread(ROOT / row[f"PathName_Orig{ch}"] / row[f"FileName_Orig{ch}"]).astype(np.float64)
    function = np.load(ROOT / row[f"PathName_Illum{ch}"] / row[f"FileName_Illum{ch}"])
    return np.clip(raw / function, 0, 65535).astype(np.float32)


def test_cli_loaddata_with_illum_path_root_and_channel_names(tmp_path, monkeypatch, model, model_dir, capsys):
    monkeypatch.chdir(tmp_path)  # not where pe2loaddata ran: --path-root says where
    out = tmp_path / "features.parquet"
    code = main(["embed", str(CSV), "-o", str(out), "--model", model_dir, "--n-last-blocks", str(L), "--quiet",
                 "--path-root", str(ROOT), "--channels", "OrigDNA,OrigER,OrigMito", "--illum",
                 "--channel-names", "DNA,ER,Mito"])
    assert code == 0, capsys.readouterr()
    df = pd.read_parquet(out)
    row = _row()
    assert df["Metadata_channels"].tolist() == ["DNA;ER;Mito"]
    assert df["Metadata_Plate"].tolist() == ["BR00121482"] and df["Metadata_Site"].tolist() == ["1"]
    assert not any("Illum" in c for c in df.columns)
    want = dino_boc.embed(np.stack([_corrected(row, ch) for ch in ("DNA", "ER", "Mito")]), model=model, n_last_blocks=L)
    np.testing.assert_allclose(feature_block(df, 0, ["DNA", "ER", "Mito"]), want, atol=1e-5, rtol=0)
    options = json.loads(pq.read_schema(out).metadata[b"dino_boc"])["options"]
    assert options["illum"] is True and "Divide" in options["illumination"]["method"]
    assert options["channel_names"] == ["DNA", "ER", "Mito"] and options["path_root"] == str(ROOT)


def test_without_illum_the_raw_planes_are_embedded(tmp_path, monkeypatch, model):
    monkeypatch.chdir(ROOT)  # where pe2loaddata ran: found without --path-root
    df = dino_boc.embed_dataset(CSV, model=model, n_last_blocks=L, channels="OrigDNA", progress=False)
    row = _row()
    raw = tifffile.imread(ROOT / row["PathName_OrigDNA"] / row["FileName_OrigDNA"])
    want = dino_boc.embed(raw[None], model=model, n_last_blocks=L)
    np.testing.assert_allclose(feature_block(df, 0, ["OrigDNA"]), want, atol=1e-5, rtol=0)
    assert df.attrs["provenance"]["options"]["illum"] is False
    assert "illumination" not in df.attrs["provenance"]["options"]


def test_a_glob_of_loaddata_tables_takes_the_run_options(tmp_path, model):
    rng = np.random.default_rng(1)
    planes = {}
    for plate in ("P1", "P2"):
        d = tmp_path / plate
        (d / "images").mkdir(parents=True)
        planes[plate] = rng.integers(1, 4000, (32, 40)).astype(np.uint16)
        tifffile.imwrite(d / "images" / "dna.tif", planes[plate])
        np.save(d / "illum_dna.npy", np.tile(np.linspace(1.0, 3.0, 40), (32, 1)))  # not uniform: it shows
        with open(d / "load_data.csv", "w", newline="") as f:  # PathName_ relative to tmp_path, as pe2loaddata
            w = csv.writer(f)
            w.writerow(["FileName_OrigDNA", "PathName_OrigDNA", "FileName_IllumDNA", "PathName_IllumDNA",
                        "Metadata_Plate"])
            w.writerow(["dna.tif", f"{plate}/images", "illum_dna.npy", plate, plate])
    df = dino_boc.embed_dataset(str(tmp_path / "*" / "load_data.csv"), model=model, n_last_blocks=L, illum=True,
                                path_root=tmp_path, progress=False)
    assert df["Metadata_Plate"].tolist() == ["P1", "P2"]
    for i, plate in enumerate(("P1", "P2")):
        corrected = planes[plate] / np.tile(np.linspace(1.0, 3.0, 40), (32, 1))
        want = dino_boc.embed(corrected.astype(np.float32)[None], model=model, n_last_blocks=L)
        np.testing.assert_allclose(feature_block(df, i, ["OrigDNA"]), want, atol=1e-5, rtol=0)


def test_channel_names_must_match_the_channel_count(tmp_path, model):
    with pytest.raises(dino_boc.errors.ConfigError, match="one name per kept channel"):
        dino_boc.embed_dataset(CSV, model=model, channels="OrigDNA,OrigER", channel_names="DNA", progress=False)


def test_objects_columns_are_the_masks_of_single_cell_mode(tmp_path, model):
    rng = np.random.default_rng(0)
    labels = np.zeros((32, 32), np.uint16)
    labels[4:12, 4:12], labels[18:28, 16:30] = 1, 2
    tifffile.imwrite(tmp_path / "dna.tif", rng.integers(0, 4000, (32, 32)).astype(np.uint16))
    (tmp_path / "objects").mkdir()
    tifffile.imwrite(tmp_path / "objects" / "nuclei.tif", labels)
    with open(tmp_path / "ld.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["FileName_OrigDNA", "ObjectsFileName_Nuclei", "ObjectsPathName_Nuclei", "Metadata_Well"])
        w.writerow(["dna.tif", "nuclei.tif", "objects", "A01"])
    df = dino_boc.embed_dataset(tmp_path / "ld.csv", model=model, n_last_blocks=L, masks="Nuclei", cell_size=16,
                                progress=False)
    assert df["Metadata_cell_label"].tolist() == [1, 2]
    assert df["Metadata_Well"].tolist() == ["A01", "A01"]
    assert not any(c.startswith("Metadata_Objects") for c in df.columns)
    with pytest.raises(dino_boc.errors.ConfigError, match=r"its objects: \['Nuclei'\]"):
        dino_boc.embed_dataset(tmp_path / "ld.csv", model=model, n_last_blocks=L, masks="Cells", progress=False)
