"""Per-channel files grouped by a file-name pattern; OME-Zarr HCS plates; slice labels; positions in OME-TIFF."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from dino_boc.errors import ConfigError, ImageReadError, InputError
from dino_boc.io import collect_sources, read_image
from dino_boc.io.grouping import PRESETS, file_pattern, group_files


def _planes(folder, names, shape=(8, 6), seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        out[name] = rng.integers(0, 4000, size=shape, dtype=np.uint16)
        tifffile.imwrite(folder / name, out[name])
    return out


def test_custom_regex_groups_orders_channels_numerically_and_keeps_metadata_text(tmp_path):
    names = [f"{w}_s{s}_ch{c}.tif" for w in ("B02", "A01") for s in ("01", "02") for c in (10, 2)]
    data = _planes(tmp_path, names)
    records = collect_sources(tmp_path, pattern=r"^(?P<well>[A-P]\d{2})_s(?P<site>\d+)_ch(?P<channel>\d+)\.tif$")
    assert [(r.metadata["Metadata_Well"], r.metadata["Metadata_Site"]) for r in records] == [
        ("A01", "01"), ("A01", "02"), ("B02", "01"), ("B02", "02")]  # sorted by path, "01" kept as text
    for r in records:
        assert r.channel_names == ("ch2", "ch10")  # a bare number becomes ch<n>; 2 before 10
        well, site = r.metadata["Metadata_Well"], r.metadata["Metadata_Site"]
        want = np.stack([data[f"{well}_s{site}_ch{c}.tif"] for c in (2, 10)])
        np.testing.assert_array_equal(r.read()[0], want)


def test_missing_channel_fails_that_image_only(tmp_path):
    _planes(tmp_path, ["A01_w1.tif", "A01_w2.tif", "A02_w1.tif"])
    records = collect_sources(tmp_path, pattern=r"(?P<well>[A-P]\d{2})_(?P<channel>w\d)")
    assert records[0].read()[0].shape == (2, 8, 6)
    assert records[1].paths[1] == ""
    with pytest.raises(ImageReadError, match="no file for channel 'w2'"):
        records[1].read()


def test_unmatched_files_left_out_and_bad_patterns_refused(tmp_path, caplog):
    _planes(tmp_path, ["A01_w1.tif", "A01_w2.tif", "overview.tif"])
    records = collect_sources(tmp_path, pattern=r"(?P<well>[A-P]\d{2})_(?P<channel>w\d)")
    assert len(records) == 1 and "overview.tif" in caplog.text
    with pytest.raises(ConfigError, match="channel"):
        file_pattern(r"(?P<well>[A-P]\d{2})")
    with pytest.raises(ConfigError, match="regular expression"):
        file_pattern("(?P<channel>")
    with pytest.raises(ConfigError, match="two files for channel"):
        group_files([tmp_path / "A01_w1.tif", tmp_path / "A01_w2.tif"], r"(?P<channel>w)\d")


@pytest.mark.parametrize("preset, names, well", [
    ("cellomics", ["PLATE_1_B03f01d0.tif", "PLATE_1_B03f01d1.tif"], "B03"),
    ("imagexpress", ["Week1_150607_B02_s1_w1EB868A72-19FC-46BB-BDFA-66B8966A817C.tif",
                     "Week1_150607_B02_s1_w2A7F4A3E8-B80D-4F4F-A3B3-3B7A5E4D1C2F.tif"], "B02"),
    ("imagexpress", ["B02_s1_w1.tif", "B02_s1_w2.tif"], "B02"),  # no plate prefix, no GUID
    ("phenix", ["r02c03f01p01-ch1sk1fk1fl1.tiff", "r02c03f01p01-ch2sk1fk1fl1.tiff"], "B03"),
    ("incucyte", ["VID193_phase_A1_1_00d04h00m.tif", "VID193_green_A1_1_00d04h00m.tif"], "A1"),
])
def test_presets_match_vendor_names(tmp_path, preset, names, well):
    _planes(tmp_path, names)
    assert preset in PRESETS
    (record,) = collect_sources(tmp_path, pattern=preset)
    assert len(record.channel_names) == 2 and record.metadata["Metadata_Well"] == well
    assert all(value for value in record.metadata.values())  # optional parts absent, not empty


def test_file_list_inputs_are_grouped_together(tmp_path):
    data = _planes(tmp_path, ["A01_w1.tif", "A01_w2.tif"])
    files = [str(tmp_path / n) for n in data]  # as the shell expands *.tif
    (record,) = collect_sources(files, pattern=r"(?P<well>[A-P]\d{2})_(?P<channel>w\d)")
    np.testing.assert_array_equal(record.read()[0], np.stack(list(data.values())))


def _write_plate(root, rng):
    """A 2-well, 2-field plate written by ome-zarr-py, as a user would."""
    zarr = pytest.importorskip("zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    group = zarr.group(store=parse_url(str(root), mode="w").store)
    write_plate_metadata(group, ["A", "B"], ["1", "2"], ["A/1", "B/2"], name="BR00117010")
    fields = {}
    for well in ("A/1", "B/2"):
        row, col = well.split("/")
        well_group = group.require_group(row).require_group(col)
        write_well_metadata(well_group, [{"path": "0"}, {"path": "1"}])
        for field in ("0", "1"):
            fields[(well, field)] = rng.integers(0, 60000, size=(3, 32, 40), dtype=np.uint16)
            write_image(fields[(well, field)], well_group.require_group(field), axes="cyx")
    return fields


def test_hcs_plate_expands_to_fields_with_plate_well_site(tmp_path):
    fields = _write_plate(tmp_path / "plate.ome.zarr", np.random.default_rng(0))
    records = collect_sources(tmp_path / "plate.ome.zarr")
    got = [(r.metadata["Metadata_Plate"], r.metadata["Metadata_Well"], r.metadata["Metadata_Site"]) for r in records]
    assert got == [("BR00117010", "A1", "0"), ("BR00117010", "A1", "1"), ("BR00117010", "B2", "0"),
                   ("BR00117010", "B2", "1")]
    for record, key in zip(records, fields):
        np.testing.assert_array_equal(record.read()[0], fields[key])
    one_well = collect_sources(tmp_path / "plate.ome.zarr" / "B" / "2")
    assert [r.metadata["Metadata_Well"] for r in one_well] == ["B2", "B2"]
    assert one_well[0].metadata["Metadata_Plate"] == "BR00117010"


def test_consistent_slice_labels_name_channels_and_plane_labels_do_not(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, size=(2, 3, 8, 6), dtype=np.uint8)  # TCYX
    consistent = ["DNA", "ER", "Mito"] * 2
    tifffile.imwrite(tmp_path / "a.tif", data, imagej=True, metadata={"axes": "TCYX", "Labels": consistent})
    assert read_image(tmp_path / "a.tif")[1] == ["DNA", "ER", "Mito"]
    per_time = ["DNA t1", "ER t1", "Mito t1", "DNA t2", "ER t2", "Mito t2"]  # differ between planes
    tifffile.imwrite(tmp_path / "b.tif", data, imagej=True, metadata={"axes": "TCYX", "Labels": per_time})
    assert read_image(tmp_path / "b.tif")[1] is None
    plane = [f"c:{c}/3 - x.nd2 (series 1)" for c in (1, 2, 3)]
    tifffile.imwrite(tmp_path / "c.tif", data[0], imagej=True, metadata={"axes": "CYX", "Labels": plane})
    assert read_image(tmp_path / "c.tif")[1] is None


def test_ome_tiff_with_one_image_per_position(tmp_path):
    rng = np.random.default_rng(0)
    positions = [rng.integers(0, 1000, size=(2, 8, 6), dtype=np.uint16) for _ in range(3)]
    path = tmp_path / "pos.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        for p in positions:
            tif.write(p, metadata={"axes": "CYX", "Channel": {"Name": ["DNA", "GFP"]}})
    for i, p in enumerate(positions):
        array, names = read_image(path, position=i)
        np.testing.assert_array_equal(array, p)
        assert names == ["DNA", "GFP"]
    records = collect_sources(path, position="each")
    assert [r.metadata["Metadata_Position"] for r in records] == [0, 1, 2]
    with pytest.raises(InputError, match="position"):
        read_image(path, position="each")


def test_plate_fields_keep_plate_well_site_through_a_glob_and_a_folder(tmp_path):
    _write_plate(tmp_path / "run" / "plate.ome.zarr", np.random.default_rng(1))
    by_glob = collect_sources(str(tmp_path / "run" / "plate.ome.zarr" / "*" / "*" / "*"))
    by_folder = collect_sources(tmp_path / "run")
    for records in (by_glob, by_folder):
        assert [(r.metadata["Metadata_Well"], r.metadata["Metadata_Site"]) for r in records] == [
            ("A1", "0"), ("A1", "1"), ("B2", "0"), ("B2", "1")]
