"""TIFF / ImageJ / OME-TIFF reading: axes, channel names, Z and T handling, dims=, damaged files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from dino_boc.errors import ImageReadError, InputError
from dino_boc.io import read_image

NAMES = ["DNA", "RNA", "ER"]


def _random(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64])
def test_dtype_and_values_kept(tmp_path, dtype):
    data = _random((3, 12, 10), dtype)
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, data, photometric="minisblack", metadata={"axes": "CYX"})
    array, names = read_image(path)
    assert array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(array, data)
    assert names is None


def test_plain_2d_is_one_channel(tmp_path):
    data = _random((12, 10), np.uint16)
    tifffile.imwrite(tmp_path / "plane.tiff", data)
    array, _ = read_image(tmp_path / "plane.tiff")
    np.testing.assert_array_equal(array, data[None])


def test_channels_last_from_metadata(tmp_path):
    data = _random((12, 10, 5), np.uint16)  # YXC, 5 channels
    tifffile.imwrite(tmp_path / "yxc.tif", data, metadata={"axes": "YXC"})
    array, _ = read_image(tmp_path / "yxc.tif")
    np.testing.assert_array_equal(array, np.stack([data[..., k] for k in range(5)]))


def test_rgb_samples_are_channels(tmp_path):
    data = _random((12, 10, 3), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb")
    array, _ = read_image(tmp_path / "rgb.tif")
    np.testing.assert_array_equal(array, np.moveaxis(data, -1, 0))


def test_imagej_hyperstack_labels_and_z(tmp_path):
    data = _random((4, 3, 12, 10), np.uint16)  # ZCYX
    labels = [name for _ in range(4) for name in NAMES]  # one per plane, channels fastest
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX", "Labels": labels})

    array, names = read_image(path)  # default: maximum projection over Z
    assert names == NAMES
    expected = np.stack(
        [[[max(data[z, c, y, x] for z in range(4)) for x in range(10)] for y in range(12)] for c in range(3)]
    )
    np.testing.assert_array_equal(array, expected)
    assert array.dtype == np.uint16

    mean, _ = read_image(path, z="mean")
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean, data.astype(np.float64).sum(axis=0) / 4, rtol=1e-6)

    np.testing.assert_array_equal(read_image(path, z=2)[0], data[2])
    np.testing.assert_array_equal(read_image(path, z=-1)[0], data[3])
    with pytest.raises(InputError, match="z=4"):
        read_image(path, z=4)
    with pytest.raises(InputError, match="Z reduction"):
        read_image(path, z="median")


def test_ome_tczyx_names_t_and_z(tmp_path):
    data = _random((2, 3, 4, 12, 10), np.float32)  # TCZYX
    path = tmp_path / "field.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "TCZYX", "Channel": {"Name": NAMES}})

    array, names = read_image(path, t=1)
    assert names == NAMES
    np.testing.assert_array_equal(array, np.maximum.reduce([data[1, :, z] for z in range(4)]))

    np.testing.assert_array_equal(read_image(path, t=0, z=1)[0], data[0, :, 1])
    with pytest.raises(InputError, match="t=2"):
        read_image(path, t=2)


def test_ome_without_channel_names(tmp_path):
    data = _random((2, 12, 10), np.uint16)
    tifffile.imwrite(tmp_path / "x.ome.tiff", data, photometric="minisblack", metadata={"axes": "CYX"})
    array, names = read_image(tmp_path / "x.ome.tiff")
    np.testing.assert_array_equal(array, data)
    assert names is None


def test_unknown_leading_axis_needs_dims(tmp_path):
    data = _random((5, 12, 10), np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, photometric="minisblack")  # no axes metadata: tifffile reports 'QYX'
    with pytest.raises(InputError, match="dims='CYX'.*dims='ZYX'"):
        read_image(path)
    np.testing.assert_array_equal(read_image(path, dims="CYX")[0], data)
    np.testing.assert_array_equal(read_image(path, dims="zyx")[0], data.max(axis=0, keepdims=True))


def test_dims_override_reorders(tmp_path):
    data = _random((3, 12, 10), np.uint16)  # stored as CYX but declared wrong
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, data, photometric="minisblack", metadata={"axes": "CYX"})
    # declaring the stored array as (Y=3, C=12, X=10) puts the second axis first
    np.testing.assert_array_equal(read_image(path, dims="YCX")[0], np.transpose(data, (1, 0, 2)))


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ("CYXZ", "4 letters"),
        ("CY", "2 letters"),
        ("QYX", "unknown letters"),
        ("CCX", "repeats"),
        ("CZT", "lacks Y or X"),
    ],
)
def test_bad_dims_string(tmp_path, dims, message):
    data = _random((3, 12, 10), np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", data, photometric="minisblack", metadata={"axes": "CYX"})
    with pytest.raises(InputError, match=message):
        read_image(tmp_path / "x.tif", dims=dims)


def test_pyramid_levels(tmp_path):
    data = _random((2, 16, 20), np.uint16)
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(data, subifds=1, metadata={"axes": "CYX", "Channel": {"Name": ["a", "b"]}})
        tif.write(data[:, ::2, ::2], subfiletype=1)
    np.testing.assert_array_equal(read_image(path, level=0)[0], data)
    array, names = read_image(path, level=1)
    np.testing.assert_array_equal(array, data[:, ::2, ::2])
    assert names == ["a", "b"]
    with pytest.raises(InputError, match="level=2"):
        read_image(path, level=2)


@pytest.mark.parametrize("kind", ["imagej", "ome", "plain"])
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_truncated_file(tmp_path, kind, fraction):
    data = _random((2, 4, 3, 16, 20), np.uint16)  # TZCYX, ImageJ's order
    full = tmp_path / ("full.ome.tif" if kind == "ome" else "full.tif")
    if kind == "imagej":
        tifffile.imwrite(full, data, imagej=True, metadata={"axes": "TZCYX"})
    elif kind == "ome":
        tifffile.imwrite(full, data, metadata={"axes": "TZCYX"})
    else:
        tifffile.imwrite(full, data[0, 0, 0])
    payload = full.read_bytes()
    cut = tmp_path / full.name.replace("full", "cut")
    cut.write_bytes(payload[: int(len(payload) * fraction)])
    with pytest.raises(ImageReadError, match="cut"):
        read_image(cut)


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "noise.tif"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageReadError, match="noise.tif.*tifffile"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "absent.tif")


def test_time_point_of_a_long_series_is_read_alone(tmp_path):
    """Selecting pages by T (the reader decodes only those) gives tifffile's whole read, indexed."""
    data = _random((6, 2, 3, 12, 10), np.uint16)  # TZCYX
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX"})
    for t in (0, 4, -1):
        np.testing.assert_array_equal(read_image(path, t=t, z=1)[0], data[t, 1])
    with pytest.raises(InputError, match="t=6"):
        read_image(path, t=6)
