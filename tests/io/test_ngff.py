"""OME-Zarr (NGFF 0.4 on zarr format 2, NGFF 0.5 on zarr format 3): levels, omero names, axes, T/Z, errors."""

from __future__ import annotations

import numpy as np
import pytest

from dino_boc.errors import ImageReadError, InputError
from dino_boc.io import read_image

zarr = pytest.importorskip("zarr")
ZARR3 = int(zarr.__version__.split(".")[0]) >= 3

NAMES = ["DNA", "AGP", "Mito"]
AXES = [
    {"name": "t", "type": "time"},
    {"name": "c", "type": "channel"},
    {"name": "z", "type": "space"},
    {"name": "y", "type": "space"},
    {"name": "x", "type": "space"},
]


def _data(seed=0):
    return np.random.default_rng(seed).integers(0, 4096, size=(2, 3, 4, 16, 20), dtype=np.uint16)  # TCZYX


def _add_array(group, name, data):
    if hasattr(group, "create_array"):  # zarr 3
        group.create_array(name, data=data, chunks=data.shape)
    else:  # zarr 2
        group.create_dataset(name, data=data, chunks=data.shape)


def _write(path, data, *, version, names=NAMES, axes=AXES):
    """Two resolution levels: full, and every second pixel in Y and X."""
    if version == "0.5" and not ZARR3:
        pytest.skip("NGFF 0.5 needs zarr format 3 (zarr-python >= 3)")
    kwargs = {"zarr_format": 3 if version == "0.5" else 2} if ZARR3 else {}
    group = zarr.open_group(str(path), mode="w", **kwargs)
    _add_array(group, "s0", data)
    _add_array(group, "s1", data[..., ::2, ::2])
    multiscale = {"axes": axes, "datasets": [{"path": "s0"}, {"path": "s1"}], "name": "field"}
    attrs = {"multiscales": [multiscale]}
    if names is not None:
        attrs["omero"] = {"channels": [{"label": n, "color": "FFFFFF"} for n in names]}
    if version == "0.5":
        group.attrs.update({"ome": {"version": "0.5", **attrs}})
    else:
        multiscale["version"] = "0.4"
        group.attrs.update(attrs)
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_levels_names_and_values(tmp_path, version):
    data = _data()
    path = _write(tmp_path / "field.ome.zarr", data, version=version)
    marker = "zarr.json" if version == "0.5" else ".zattrs"
    assert (path / marker).is_file()

    array, names = read_image(path, t=1, z=0)
    assert names == NAMES
    assert array.dtype == np.uint16
    np.testing.assert_array_equal(array, data[1, :, 0])

    low, _ = read_image(path, level=1, t=0)  # maximum projection of the coarser level
    expected = np.stack(
        [[[data[0, c, :, y, x].max() for x in range(0, 20, 2)] for y in range(0, 16, 2)] for c in range(3)]
    )
    np.testing.assert_array_equal(low, expected)

    mean, _ = read_image(path, z="mean", t=-1)
    np.testing.assert_allclose(mean, data[1].astype(np.float64).mean(axis=1), rtol=1e-6)

    with pytest.raises(InputError, match="level=2"):
        read_image(path, level=2)
    with pytest.raises(InputError, match="t=5"):
        read_image(path, t=5)


def test_cyx_image_without_omero(tmp_path):
    data = _data()[0, :, 0]  # CYX
    axes = [a for a in AXES if a["name"] in "cyx"]
    path = _write(tmp_path / "plain.zarr", data, version="0.4", names=None, axes=axes)
    array, names = read_image(path)
    np.testing.assert_array_equal(array, data)
    assert names is None


def test_names_dropped_when_count_differs(tmp_path):
    path = _write(tmp_path / "x.zarr", _data(), version="0.4", names=["only", "two"])
    assert read_image(path)[1] is None


def test_dims_override_and_bad_dims(tmp_path):
    data = _data()
    path = _write(tmp_path / "x.zarr", data, version="0.4")
    # declaring T as Z and Z as T: keep the first "T" (stored Z index 0), max over the stored T axis
    array, _ = read_image(path, dims="ZCTYX")
    np.testing.assert_array_equal(array, np.maximum(data[0, :, 0], data[1, :, 0]))
    with pytest.raises(InputError, match="3 letters"):
        read_image(path, dims="CYX")


def test_bare_array_needs_dims(tmp_path):
    data = _data()[0, :, 0]
    kwargs = {"zarr_format": 2} if ZARR3 else {}
    stored = zarr.open_array(str(tmp_path / "bare.zarr"), mode="w", shape=data.shape, dtype=data.dtype, **kwargs)
    stored[...] = data
    with pytest.raises(InputError, match="dims="):
        read_image(tmp_path / "bare.zarr")
    np.testing.assert_array_equal(read_image(tmp_path / "bare.zarr", dims="CYX")[0], data)


def test_plate_group_is_refused(tmp_path):
    kwargs = {"zarr_format": 2} if ZARR3 else {}
    group = zarr.open_group(str(tmp_path / "plate.zarr"), mode="w", **kwargs)
    group.attrs.update({"plate": {"wells": [{"path": "A/1"}], "version": "0.4"}})
    with pytest.raises(InputError, match="plate.*A/1/0"):
        read_image(tmp_path / "plate.zarr")


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "absent.ome.zarr")
    path = tmp_path / "broken.zarr"
    path.mkdir()
    (path / ".zattrs").write_text("{not json")
    (path / ".zgroup").write_text('{"zarr_format": 2}')
    with pytest.raises(ImageReadError, match="broken.zarr.*zarr"):
        read_image(path)
