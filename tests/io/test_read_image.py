"""read_image dispatch and argument errors, and the shared axes logic (to_kyx) against index arithmetic."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from dino_boc.errors import ImageReadError, InputError, MissingExtraError
from dino_boc.io import SUPPORTED_SUFFIXES, format_of, read_image
from dino_boc.io.axes import to_kyx


def test_unknown_extension_lists_supported(tmp_path):
    (tmp_path / "scan.bmp").write_bytes(b"BM" + bytes(64))
    with pytest.raises(ImageReadError, match=r"scan\.bmp.*unknown image format.*\.tif.*\.ome\.zarr.*\.png.*\.npy"):
        read_image(tmp_path / "scan.bmp")


def test_format_of():
    expected = {
        "a.TIF": "tiff", "a.ome.tiff": "tiff", "a.ome.zarr": "zarr", "b.zarr": "zarr", "c.PNG": "png",
        "c.jpeg": "png", "d.npy": "numpy", "e.czi": "vendor", "f.nd2": "vendor", "g.bmp": None,
    }
    got = {name: format_of(name) for name in expected}
    assert got == {n: (f if f != "png" else "pixels") for n, f in expected.items()}
    assert ".ome.tif" in SUPPORTED_SUFFIXES and ".lif" in SUPPORTED_SUFFIXES


def test_plain_folder_is_not_an_image(tmp_path):
    (tmp_path / "images.tif").mkdir()
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path / "images.tif")


def test_vendor_format_needs_bioio(tmp_path):
    path = tmp_path / "scan.czi"
    path.write_bytes(b"not a czi file" * 8)
    if importlib.util.find_spec("bioio") is None:
        with pytest.raises(MissingExtraError, match=r"dino-boc\[bioio\]"):
            read_image(path)
    else:  # bioio present: the garbage file (or the missing plugin) is a read error naming the file
        with pytest.raises(ImageReadError, match="scan.czi"):
            read_image(path)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"level": -1}, "level=-1"),
    ({"level": 1.5}, "level=1.5"),
    ({"t": "0"}, "time index"),
    ({"z": "median"}, "Z reduction"),
])
def test_bad_options(tmp_path, kwargs, message):
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(InputError, match=message):
        read_image(tmp_path / "x.npy", **kwargs)


def test_to_kyx_axis_orders():
    rng = np.random.default_rng(0)
    tzcyx = rng.integers(0, 100, size=(2, 3, 4, 5, 6), dtype=np.int32)  # T=2, Z=3, C=4, Y=5, X=6
    out = to_kyx(np.transpose(tzcyx, (3, 4, 1, 0, 2)), "YXZTC", z=1, t=1)  # same data, stored YXZTC
    np.testing.assert_array_equal(out, tzcyx[1, 1])
    projected = to_kyx(tzcyx, "TZCYX")
    for k in range(4):  # max over Z, element by element
        for y in range(5):
            for x in range(6):
                assert projected[k, y, x] == max(tzcyx[0, z, k, y, x] for z in range(3))


def test_to_kyx_samples_and_unknown_axes():
    rgb = np.arange(4 * 5 * 3).reshape(4, 5, 3)
    np.testing.assert_array_equal(to_kyx(rgb, "YXS"), np.moveaxis(rgb, -1, 0))
    np.testing.assert_array_equal(to_kyx(rgb[None], "CYXS"), np.moveaxis(rgb, -1, 0))  # C of length 1
    np.testing.assert_array_equal(to_kyx(rgb[None, None], "QCYXS"), np.moveaxis(rgb, -1, 0))  # unknown length 1
    with pytest.raises(InputError, match="both channels"):
        to_kyx(np.stack([rgb, rgb]), "CYXS")


def test_to_kyx_native_byte_order_and_empty():
    big = np.arange(12, dtype=">u2").reshape(1, 3, 4)
    out = to_kyx(big, "CYX")
    assert out.dtype == np.dtype("uint16") and out.dtype.isnative
    np.testing.assert_array_equal(out, np.arange(12).reshape(1, 3, 4))
    with pytest.raises(InputError, match="0 channels"):
        to_kyx(np.zeros((0, 3, 4)), "CYX")
    with pytest.raises(InputError, match="no pixels"):
        to_kyx(np.zeros((2, 0, 4)), "CYX")


def test_zero_channel_file(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8), np.uint16))
    with pytest.raises(InputError, match="0 channels.*dims='CYX'"):
        read_image(tmp_path / "empty.npy")
