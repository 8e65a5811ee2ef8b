"""Every reader on URLs: the same arrays from moto's S3 server (127.0.0.1) and plain HTTP as from disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from dino_boc.errors import ImageReadError
from dino_boc.io import collect_sources, read_image
from dino_boc.io import fs as dfs

from .plate import CHANNELS, PREFIX, WELLS, write_plate

zarr = pytest.importorskip("zarr")
imageio = pytest.importorskip("imageio.v3")


def _ome_zarr(path, data, names, version="0.5"):
    """NGFF 0.5 (zarr format 3) or 0.4 (zarr format 2) image, CYX."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3 if version == "0.5" else 2)
    group.create_array("0", data=data, chunks=(1, 16, 16))
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    attrs = {"multiscales": [{"axes": axes, "datasets": [{"path": "0"}]}],
             "omero": {"channels": [{"label": n} for n in names]}}
    if version == "0.5":
        group.attrs.update({"ome": {"version": "0.5", **attrs}})
    else:
        attrs["multiscales"][0]["version"] = "0.4"
        group.attrs.update(attrs)


def _files(tmp_path, rng):
    local = tmp_path / "local"
    local.mkdir()
    cyx = rng.integers(0, 60000, size=(3, 24, 20), dtype=np.uint16)
    tifffile.imwrite(local / "a.ome.tiff", cyx, compression="lzw", metadata={"axes": "CYX", "Channel": {"Name": CHANNELS}})
    imageio.imwrite(local / "b.png", rng.integers(0, 255, size=(20, 24, 3), dtype=np.uint8))
    np.save(local / "c.npy", cyx[:2].astype(np.float32))
    _ome_zarr(local / "d.ome.zarr", cyx, CHANNELS)
    return local


def test_s3_reads_equal_local_reads(tmp_path, s3):
    local = _files(tmp_path, np.random.default_rng(0))
    s3.mkdir("bucket1")
    s3.put(str(local) + "/", "bucket1/data/", recursive=True)
    for name in ("a.ome.tiff", "b.png", "c.npy", "d.ome.zarr"):
        want, want_names = read_image(local / name)
        got, got_names = read_image(f"s3://bucket1/data/{name}")
        assert got.dtype == want.dtype and got_names == want_names, name
        np.testing.assert_array_equal(got, want)
    assert read_image("s3://bucket1/data/a.ome.tiff")[1] == CHANNELS  # OME-XML names over S3


def test_missing_object_is_an_image_read_error_naming_the_url(s3):
    s3.mkdir("bucket2")
    with pytest.raises(ImageReadError, match="s3://bucket2/nope.tif"):
        read_image("s3://bucket2/nope.tif")


def test_gallery_loaddata_from_s3_with_relative_paths_and_url_columns(tmp_path, s3):
    arrays = write_plate(tmp_path)
    s3.mkdir("gallery-io")
    s3.put(str(tmp_path / "cpg0000-test") + "/", "gallery-io/cpg0000-test/", recursive=True)
    table = f"s3://gallery-io/{PREFIX}/load_data_csv/plate1/load_data.csv.gz"
    records = collect_sources(table)
    assert [r.metadata["Metadata_Well"] for r in records] == [w for w, _ in WELLS]
    want_first = f"s3://gallery-io/{PREFIX}/images/plate1/rA01f01-ch1.tiff"  # '../../images' resolved on the URL
    assert records[0].paths[0] == want_first
    for record, (well, site) in zip(records, WELLS):
        np.testing.assert_array_equal(record.read()[0], arrays[f"{well}-{site}"])
    # a table giving full object URLs in URL_<Ch> columns (as the Gallery's load_data_with_illum does)
    df = pd.read_csv(tmp_path / PREFIX / "load_data_csv" / "plate1" / "load_data.csv.gz")
    for k, ch in enumerate(CHANNELS):
        df[f"URL_Orig{ch}"] = [r.paths[k] for r in records]
        df = df.drop(columns=[f"PathName_Orig{ch}"])
        df[f"FileName_Orig{ch}"] = "not-used.tiff"
    df.to_csv(tmp_path / "with_urls.csv", index=False)
    s3.put(str(tmp_path / "with_urls.csv"), "gallery-io/elsewhere/with_urls.csv")
    by_url = collect_sources("s3://gallery-io/elsewhere/with_urls.csv")
    assert [r.paths for r in by_url] == [r.paths for r in records]
    assert "URL_OrigDNA" not in by_url[0].metadata


def test_s3_prefix_and_glob_list_images(tmp_path, s3):
    write_plate(tmp_path)
    s3.mkdir("listing")
    s3.put(str(tmp_path / "cpg0000-test") + "/", "listing/cpg0000-test/", recursive=True)
    base = f"s3://listing/{PREFIX}/images/plate1"
    by_prefix = [r.paths[0] for r in collect_sources(base)]
    by_glob = [r.paths[0] for r in collect_sources(base + "/*-ch2.tiff")]
    names = sorted(p.name for p in (tmp_path / PREFIX / "images" / "plate1").iterdir())
    assert by_prefix == [f"{base}/{n}" for n in names]
    assert by_glob == [f"{base}/{n}" for n in names if n.endswith("-ch2.tiff")]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_over_plain_http(http_root, rng, version):
    root, url = http_root
    data = rng.integers(0, 4096, size=(3, 32, 32), dtype=np.uint16)
    _ome_zarr(root / "img.ome.zarr", data, CHANNELS, version)
    got, names = read_image(f"{url}/img.ome.zarr")
    np.testing.assert_array_equal(got, data)
    assert names == CHANNELS


def test_transient_http_errors_are_retried_and_persistent_ones_reported(http_root, rng):
    root, url = http_root
    data = rng.integers(0, 4096, size=(2, 16, 16), dtype=np.uint16)
    for name in ("FLAKY.tif", "FAIL500.tif"):
        tifffile.imwrite(root / name, data, metadata={"axes": "CYX"})
    np.testing.assert_array_equal(read_image(f"{url}/FLAKY.tif")[0], data)  # two 500s, then the file
    with pytest.raises(ImageReadError, match=r"FAIL500.tif.*after 5 tries"):
        read_image(f"{url}/FAIL500.tif")


def test_stalled_objects_time_out_and_are_reported(http_root, rng, monkeypatch):
    root, url = http_root
    tifffile.imwrite(root / "STALL.tif", rng.integers(0, 4096, size=(2, 16, 16), dtype=np.uint16))
    monkeypatch.setattr(dfs, "READ_TIMEOUT_S", 0.3)
    monkeypatch.setattr(dfs, "RETRIES", 1)
    with pytest.raises(ImageReadError, match=r"STALL.tif.*after 2 tries"):
        read_image(f"{url}/STALL.tif")


def test_storage_option_parsing_and_scoping():
    assert dfs.parse_storage_option("anon=true") == ("anon", True)
    assert dfs.parse_storage_option("endpoint_url=http://h:9") == ("endpoint_url", "http://h:9")
    assert dfs.parse_storage_option("max_concurrency=8") == ("max_concurrency", 8)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        dfs.parse_storage_option("anon")
    with dfs.storage_options(anon=True):
        assert dfs.get_storage_options() == {"anon": True}
    assert dfs.get_storage_options() == {}
    assert dfs.url_join("s3://b/x/load_data_csv/p", "../../images/p/a.tif") == "s3://b/x/images/p/a.tif"
