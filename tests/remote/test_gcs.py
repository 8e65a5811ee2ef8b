"""gs:// inputs through gcsfs, against a GCS JSON-API server on 127.0.0.1: the same arrays, records and
feature table as the same files on local disk."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from dino_boc.cli import main
from dino_boc.errors import ImageReadError
from dino_boc.io import collect_sources, read_image
from dino_boc.io import fs as dfs

from .plate import CHANNELS, PREFIX, WELLS, write_plate

TABLE = f"{PREFIX}/load_data_csv/plate1/load_data.csv.gz"


def test_gs_tiff_and_loaddata_equal_local(gcs, tmp_path):
    root, _, _ = gcs
    arrays = write_plate(tmp_path / "disk")
    shutil.copytree(tmp_path / "disk", root / "gallery")
    cyx = np.random.default_rng(1).integers(0, 60000, size=(3, 24, 20), dtype=np.uint16)
    tifffile.imwrite(root / "gallery" / "a.ome.tiff", cyx, compression="lzw",
                     metadata={"axes": "CYX", "Channel": {"Name": CHANNELS}})
    got, names = read_image("gs://gallery/a.ome.tiff", storage_options={"token": "anon"})
    np.testing.assert_array_equal(got, cyx)
    assert names == CHANNELS
    with dfs.storage_options(anon=True):  # --anon: gcsfs's token="anon"
        remote = collect_sources(f"gs://gallery/{TABLE}")
        assert [r.paths for r in remote] == [
            tuple(os.path.normpath(p).replace(str(tmp_path / "disk"), "gs://gallery") for p in r.paths)
            for r in collect_sources(tmp_path / "disk" / TABLE)]
        assert [r.metadata for r in remote] == [r.metadata for r in collect_sources(tmp_path / "disk" / TABLE)]
        for record, (well, site) in zip(remote, WELLS):
            np.testing.assert_array_equal(record.read()[0], arrays[f"{well}-{site}"])
        with pytest.raises(ImageReadError, match="gs://gallery/nope.tif"):
            read_image("gs://gallery/nope.tif")


def test_cli_embed_gs_equals_local(gcs, tmp_path, tiny_model_dir):
    root, _, _ = gcs
    write_plate(tmp_path / "disk")
    shutil.copytree(tmp_path / "disk", root / "gallery")
    common = ["--model", tiny_model_dir, "--n-last-blocks", "2", "--quiet"]
    assert main(["embed", str(tmp_path / "disk" / TABLE), "-o", str(tmp_path / "local.parquet"), *common]) == 0
    assert main(["embed", f"gs://gallery/{TABLE}", "--anon", "-o", str(tmp_path / "gs.parquet"), *common]) == 0
    local, remote = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "gs.parquet")
    assert len(remote) == len(WELLS)
    assert remote["Metadata_path"].str.startswith("gs://gallery/").all()
    pd.testing.assert_frame_equal(remote.drop(columns="Metadata_path"), local.drop(columns="Metadata_path"))
