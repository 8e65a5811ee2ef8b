"""Every input kind through embed_dataset, each row equal to dino_boc.embed of the pixels read independently."""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

import dino_boc
from dino_boc.io import ImageRecord

from .conftest import L
from .helpers import META, feature_block, image, write_cyx

ATOL = 1e-5


def run(source, model, **kw):
    return dino_boc.embed_dataset(source, model=model, n_last_blocks=L, progress=False, **kw)


def expect(model, array, **kw):
    """The independent path: dino_boc.embed on the array (as numpy read it), same options."""
    return dino_boc.embed(array, model=model, n_last_blocks=L, **kw)


@pytest.fixture
def folder(tmp_path, rng):
    """Three ImageJ CYX TIFFs with names (1, 2 and 3 channels; 2 sizes), like examples/images."""
    d = tmp_path / "images"
    d.mkdir()
    arrays = {
        "a_1ch.tif": (image(rng, 1, dtype=np.uint8, high=255), ["DNA"]),
        "b_2ch.tif": (image(rng, 2, 40, 48), ["DNA", "RNA"]),
        "c_3ch.tif": (image(rng, 3), ["DNA", "RNA", "Mito"]),
    }
    for name, (data, names) in arrays.items():
        write_cyx(d / name, data, names if len(names) > 1 else None)
    return d, arrays


def test_folder_with_mixed_channel_counts_equals_embed(folder, model):
    d, arrays = folder
    df = run(d, model)
    assert list(df.columns[:3]) == META
    assert df["Metadata_path"].tolist() == [str(d / n) for n in sorted(arrays)]
    assert df["Metadata_channels"].tolist() == ["ch0", "DNA;RNA", "DNA;RNA;Mito"]
    for i, name in enumerate(sorted(arrays)):
        data = tifffile.imread(d / name).reshape(-1, *arrays[name][0].shape[-2:])
        names = df["Metadata_channels"][i].split(";")
        np.testing.assert_allclose(feature_block(df, i, names), expect(model, data), atol=ATOL, rtol=0)
    # union of the feature columns: the 1-channel row has no DNA columns, the 2-channel row no Mito ones
    assert df.filter(like="Mito_").iloc[:2].isna().all().all() and df.filter(like="Mito_").iloc[2].notna().all()
    assert df.shape[1] == 3 + (L + 1) * 64 * 4  # ch0, DNA, RNA, Mito


def test_folder_glob_and_list_give_the_same_table(folder, model):
    d, arrays = folder
    by_folder = run(d, model)
    by_glob = run(str(d / "*.tif"), model)
    by_list = run([str(d / n) for n in sorted(arrays)], model)
    pd.testing.assert_frame_equal(by_folder, by_glob)
    pd.testing.assert_frame_equal(by_folder, by_list)


def test_channels_by_name_and_by_index(folder, model):
    d, arrays = folder
    df = run([d / "c_3ch.tif", d / "b_2ch.tif"], model, channels=["RNA", "DNA"])
    assert df["Metadata_channels"].tolist() == ["RNA;DNA", "RNA;DNA"]
    np.testing.assert_allclose(feature_block(df, 0, ["RNA", "DNA"]), expect(model, arrays["c_3ch.tif"][0][[1, 0]]),
                               atol=ATOL, rtol=0)
    by_index = run([d / "c_3ch.tif"], model, channels="2,0")
    assert by_index["Metadata_channels"][0] == "Mito;DNA"


def test_ome_tiff_with_z_and_channel_names(tmp_path, rng, model):
    data = rng.integers(0, 4096, size=(3, 2, 32, 32)).astype(np.uint16)  # Z C Y X
    path = tmp_path / "field.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "ZCYX", "Channel": {"Name": ["DNA", "AGP"]}})
    df = run(path, model)
    assert df["Metadata_channels"][0] == "DNA;AGP"
    np.testing.assert_allclose(feature_block(df, 0, ["DNA", "AGP"]), expect(model, data.max(axis=0)), atol=ATOL, rtol=0)
    plane = run(path, model, z=1)
    np.testing.assert_allclose(feature_block(plane, 0, ["DNA", "AGP"]), expect(model, data[1]), atol=ATOL, rtol=0)


def test_dims_override_for_a_tiff_without_axes(tmp_path, rng, model):
    data = image(rng, 3)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.moveaxis(data, 0, -1), photometric="minisblack", planarconfig="contig",
                     metadata=None)  # stored Y X C, no axes metadata
    df = run(path, model, dims="YXC")
    np.testing.assert_allclose(feature_block(df, 0, 3), expect(model, data), atol=ATOL, rtol=0)


def test_ome_zarr_with_omero_names_and_levels(tmp_path, rng, model):
    zarr = pytest.importorskip("zarr")
    data = rng.integers(0, 4096, size=(2, 64, 64)).astype(np.uint16)  # C Y X
    group = zarr.open_group(str(tmp_path / "field.ome.zarr"), mode="w", zarr_format=2)
    for name, arr in (("0", data), ("1", data[:, ::2, ::2])):
        group.create_array(name, data=arr, chunks=arr.shape)
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    group.attrs.update({
        "multiscales": [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}, {"path": "1"}]}],
        "omero": {"channels": [{"label": "DNA"}, {"label": "ER"}]},
    })
    df = run(tmp_path / "field.ome.zarr", model)
    assert df["Metadata_channels"][0] == "DNA;ER"
    np.testing.assert_allclose(feature_block(df, 0, ["DNA", "ER"]), expect(model, data), atol=ATOL, rtol=0)
    low = run(tmp_path / "field.ome.zarr", model, level=1)
    np.testing.assert_allclose(feature_block(low, 0, ["DNA", "ER"]), expect(model, data[:, ::2, ::2]), atol=ATOL, rtol=0)


def test_png_gray_and_rgb(tmp_path, rng, model):
    gray = rng.integers(0, 255, size=(32, 40)).astype(np.uint8)
    rgb = rng.integers(0, 255, size=(32, 32, 3)).astype(np.uint8)
    iio.imwrite(tmp_path / "gray.png", gray)
    iio.imwrite(tmp_path / "rgb.png", rgb)
    df = run(tmp_path, model)
    np.testing.assert_allclose(feature_block(df, 0, 1), expect(model, gray[None]), atol=ATOL, rtol=0)
    np.testing.assert_allclose(feature_block(df, 1, 3), expect(model, np.moveaxis(rgb, -1, 0)), atol=ATOL, rtol=0)


def test_chammi_tape(tmp_path, rng, model):
    channels = image(rng, 3)
    tape = np.concatenate(list(channels), axis=1)  # (32, 3 * 32): channels side by side
    tifffile.imwrite(tmp_path / "tape.tif", tape)
    df = run(tmp_path / "tape.tif", model, channel_width=32)
    np.testing.assert_allclose(feature_block(df, 0, 3), expect(model, channels), atol=ATOL, rtol=0)


def test_loaddata_csv_one_file_per_channel(tmp_path, rng, model):
    (tmp_path / "plate1").mkdir()
    rows, stacks = [], []
    for i in range(3):
        planes = image(rng, 2)
        stacks.append(planes)
        for ch, plane in zip(["DNA", "RNA"], planes):
            tifffile.imwrite(tmp_path / "plate1" / f"w{i}_{ch}.tif", plane)
        rows.append({"Metadata_Plate": "P1", "Metadata_Well": f"A0{i}", "FileName_DNA": f"w{i}_DNA.tif",
                     "PathName_DNA": "plate1", "FileName_RNA": f"w{i}_RNA.tif", "PathName_RNA": "plate1"})
    pd.DataFrame(rows).to_csv(tmp_path / "load_data.csv", index=False)
    df = run(tmp_path / "load_data.csv", model)
    assert list(df.columns[:5]) == META + ["Metadata_Plate", "Metadata_Well"]
    assert df["Metadata_Well"].tolist() == ["A00", "A01", "A02"]
    assert df["Metadata_path"][1] == str(tmp_path / "plate1" / "w1_DNA.tif")
    for i in range(3):
        np.testing.assert_allclose(feature_block(df, i, ["DNA", "RNA"]), expect(model, stacks[i]), atol=ATOL, rtol=0)
    only_rna = run(tmp_path / "load_data.csv", model, channels=["RNA"])  # reads only the RNA files
    np.testing.assert_allclose(feature_block(only_rna, 2, ["RNA"]), expect(model, stacks[2][1:]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_table_with_path_column_and_metadata(tmp_path, rng, model, kind):
    arrays = [image(rng, 2) for _ in range(3)]
    for i, a in enumerate(arrays):
        write_cyx(tmp_path / f"img{i}.tif", a, ["DNA", "ER"])
    table = pd.DataFrame({"path": [f"img{i}.tif" for i in (2, 0, 1)], "treatment": ["dmso", "drugA", "drugB"],
                          "dose": [0.0, 1.5, 3.0]})
    path = tmp_path / f"inputs.{kind}"
    table.to_csv(path, index=False) if kind == "csv" else table.to_parquet(path)
    df = run(path, model)
    assert list(df.columns[:5]) == META + ["Metadata_treatment", "Metadata_dose"]
    assert df["Metadata_treatment"].tolist() == ["dmso", "drugA", "drugB"]  # table order kept
    # a CSV's metadata is kept as written (text); Parquet keeps its types
    assert df["Metadata_dose"].tolist() == (["0.0", "1.5", "3.0"] if kind == "csv" else [0.0, 1.5, 3.0])
    for row, i in enumerate((2, 0, 1)):
        np.testing.assert_allclose(feature_block(df, row, ["DNA", "ER"]), expect(model, arrays[i]), atol=ATOL, rtol=0)


def test_image_records_and_relative_paths(tmp_path, rng, model, monkeypatch):
    data = image(rng, 2)
    write_cyx(tmp_path / "x.tif", data, ["DNA", "ER"])
    monkeypatch.chdir(tmp_path)
    df = run([ImageRecord(id="custom", paths=("x.tif",), metadata={"site": 3})], model)
    assert df["Metadata_path"][0] == "x.tif" and df["Metadata_site"][0] == 3
    np.testing.assert_allclose(feature_block(df, 0, ["DNA", "ER"]), expect(model, data), atol=ATOL, rtol=0)
    assert os.getcwd() == str(tmp_path)


def test_whole_field_not_a_multiple_of_the_patch_is_centre_cropped(tmp_path, rng, model):
    data = image(rng, 2, 37, 45)  # patch 8: 32 x 40 kept, torchvision centre offsets (2, 2)
    write_cyx(tmp_path / "odd.tif", data, ["DNA", "ER"])
    df = run(tmp_path / "odd.tif", model)
    top, left = int(round((37 - 32) / 2.0)), int(round((45 - 40) / 2.0))
    want = expect(model, data[:, top:top + 32, left:left + 40])
    np.testing.assert_allclose(feature_block(df, 0, ["DNA", "ER"]), want, atol=ATOL, rtol=0)
    assert df.attrs["provenance"]["options"]["fit_to_patch"] == "center-crop"
    cropped = run(tmp_path / "odd.tif", model, crop=24)  # an explicit crop replaces the fit
    np.testing.assert_allclose(feature_block(cropped, 0, ["DNA", "ER"]), expect(model, data, crop=24), atol=ATOL, rtol=0)
    assert "fit_to_patch" not in cropped.attrs["provenance"]["options"]


def test_resize_crop_and_normalize_options_match_embed(folder, model):
    d, arrays = folder
    df = run(d / "b_2ch.tif", model, resize=40, crop=32, normalize="percentile")
    want = expect(model, arrays["b_2ch.tif"][0], resize=40, crop=32, normalize="percentile")
    np.testing.assert_allclose(feature_block(df, 0, ["DNA", "RNA"]), want, atol=ATOL, rtol=0)
    prov = df.attrs["provenance"]
    assert prov["preprocessing"]["resize"] == 40 and prov["preprocessing"]["crop"] == 32
    assert prov["model_name"] == model.name and prov["pretrained"] is False and len(prov["state_dict_sha256"]) == 64


def test_workers_give_the_same_table(folder, model):
    d, _ = folder
    pd.testing.assert_frame_equal(run(d, model, num_workers=2, batch_size=3), run(d, model))
