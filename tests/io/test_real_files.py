"""Real files written by instruments and tools (tests/data/<source>/README.md says where each comes from).

Every pixel check compares with tifffile reading the same file on its own; metadata checks compare with
what the file names and the instruments' own metadata say.
"""

from __future__ import annotations

import gzip
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dino_boc.errors import InputError
from dino_boc.io import collect_sources, read_image
from dino_boc.pipeline.inputs import gather_inputs
from dino_boc.io.options import ReadOptions

DATA = Path(__file__).resolve().parents[1] / "data"
NDTIFF = DATA / "micromanager_ndstorage" / "12_bit_pycromanager_mda" / "12_bit_pycromanager_mda_NDTiffStack.tif"
MMSTACK = DATA / "micromanager_mmstack"
HYPERSTACK = DATA / "pyimagej" / "test_still_stack.tif"
PHENIX = DATA / "pe2loaddata" / "images" / "r01c01f01p01-ch6sk1fk1fl1.tiff"
CELLOMICS = DATA / "cellprofiler_examples" / "cellomics"
IMAGEXPRESS = DATA / "cellprofiler_examples" / "imagexpress"
CELLPOSE = DATA / "stardist" / "cellpose_layout"


def test_micromanager_ndtiff_channels_and_time_points():
    with tifffile.TiffFile(NDTIFF) as tif:
        series = tif.series[0]
        assert series.kind == "ndtiff" and series.axes == "TCYX"  # neither ImageJ nor OME: read anyway
        stack = series.asarray()
    for t in (0, 3):
        array, names = read_image(NDTIFF, t=t)
        assert array.dtype == np.uint16
        np.testing.assert_array_equal(array, stack[t])
        assert names is None


def unpack_mmstack(folder: Path) -> Path:
    """The shipped MMStack files, gunzipped (bytes as Micro-Manager wrote them) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for gz in sorted(MMSTACK.glob("*.ome.tif.gz")):
        (folder / gz.name[: -len(".gz")]).write_bytes(gzip.decompress(gz.read_bytes()))
    return folder


def test_micromanager_mmstack_positions_time_z_and_channel_names(tmp_path):
    folder = unpack_mmstack(tmp_path / "mm")
    first = sorted(folder.glob("*.tif"))[0]
    with tifffile.TiffFile(first) as tif:
        series = tif.series[0]
        assert tif.is_imagej and tif.is_ome and series.kind == "mmstack" and series.axes == "RTZCYX"
        stack = series.asarray()
        channel_names = tif.micromanager_metadata["Summary"]["ChNames"]
    assert stack.shape[0] == 4
    for p in range(4):
        array, names = read_image(first, position=p, t=1)  # Z: max projection
        np.testing.assert_array_equal(array, stack[p, 1].max(axis=0))
        assert names == channel_names == ["Cy5", "DAPI"]
    np.testing.assert_array_equal(read_image(first, position=2, t=0, z=1)[0], stack[2, 0, 1])
    with pytest.raises(InputError, match="position=4"):
        read_image(first, position=4)


def test_micromanager_folder_is_one_dataset_one_row_per_position(tmp_path):
    """tifffile opens each file of the dataset as the whole dataset: a folder must not repeat it 4 times."""
    folder = unpack_mmstack(tmp_path / "mm")
    with tifffile.TiffFile(sorted(folder.glob("*.tif"))[0]) as tif:
        stack = tif.series[0].asarray()
    assert len(collect_sources(folder)) == 1
    records = collect_sources(folder, position="each")
    assert [r.metadata["Metadata_Position"] for r in records] == [0, 1, 2, 3]
    assert len({r.id for r in records}) == 4
    for p, record in enumerate(records):
        np.testing.assert_array_equal(record.read()[0], stack[p, 0].max(axis=0))


def test_fiji_hyperstack_plane_labels_are_not_channel_names():
    with tifffile.TiffFile(HYPERSTACK) as tif:
        labels = tif.imagej_metadata["Labels"]
        stack = tif.series[0].asarray()
    assert labels[0].startswith("c:1/4 t:75/132")  # what Bio-Formats wrote, one per plane
    array, names = read_image(HYPERSTACK)
    np.testing.assert_array_equal(array, stack)
    assert names is None


def test_phenix_lzw_field():
    with tifffile.TiffFile(PHENIX) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW
        expected = tif.asarray()
    array, _ = read_image(PHENIX)
    assert array.shape == (1, 1080, 1080) and array.dtype == np.uint16
    np.testing.assert_array_equal(array[0], expected)


def test_missing_codec_names_pip_install_not_corruption():
    """Without imagecodecs (hidden from the import system), the LZW file is not called corrupt."""
    code = (
        "import sys; sys.modules['imagecodecs'] = None\n"
        "from dino_boc.errors import MissingExtraError\n"
        "from dino_boc.io import read_image\n"
        "try:\n"
        f"    read_image({str(PHENIX)!r})\n"
        "except MissingExtraError as exc:\n"
        "    print('MISSING', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.startswith("MISSING"), out.stderr
    assert "pip install imagecodecs" in out.stdout and "LZW" in out.stdout
    assert "corrupt" not in out.stdout.replace("not damaged", "")


def test_phenix_preset_metadata():
    (record,) = collect_sources(PHENIX.parent, pattern="phenix")
    assert record.channel_names == ("ch6",)
    assert record.metadata["Metadata_Well"] == "A01"  # r01c01
    assert record.metadata["Metadata_Site"] == "01" and record.metadata["Metadata_Plane"] == "01"


def test_cellomics_channels_grouped_into_one_image():
    files = sorted(CELLOMICS.glob("*.tif"))
    (record,) = collect_sources(CELLOMICS, pattern="cellomics")
    assert record.channel_names == ("d0", "d1", "d2")
    assert dict(record.metadata) == {"Metadata_Plate": "AS_09125_050116030001", "Metadata_Well": "D03",
                                     "Metadata_Site": "00"}
    array, names = record.read()
    np.testing.assert_array_equal(array, np.stack([tifffile.imread(f) for f in files]))
    assert names == ["d0", "d1", "d2"]


def test_per_channel_folder_without_pattern_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="dino_boc.io"):
        records = collect_sources(CELLOMICS)
    assert len(records) == 3  # still one per file, as asked, but the user is told
    assert "pattern='cellomics'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dino_boc.io"):
        gather_inputs(CELLOMICS, ReadOptions())  # what a run does: told once, not once per pass
    assert caplog.text.count("pattern='cellomics'") == 1


def test_imagexpress_channels_grouped_into_one_image():
    files = sorted(IMAGEXPRESS.glob("*.tif"))
    with tifffile.TiffFile(files[0]) as tif:
        assert tif.series[0].kind == "stk"  # MetaMorph, another series kind
    (record,) = collect_sources(IMAGEXPRESS, pattern="imagexpress")
    assert record.channel_names == ("w1", "w2")
    assert record.metadata["Metadata_Well"] == "C01"
    np.testing.assert_array_equal(record.read()[0], np.stack([tifffile.imread(f) for f in files]))


def test_cellpose_layout_masks_are_not_images(caplog):
    with caplog.at_level(logging.WARNING, logger="dino_boc.io"):
        records = collect_sources(CELLPOSE)
    assert [Path(r.paths[0]).name for r in records] == ["img2d.tif"]
    assert "img2d_cp_masks.tif" in caplog.text
