"""PNG/JPEG (imageio) and .npy reading."""

from __future__ import annotations

import numpy as np
import pytest

from dino_boc.errors import ImageReadError, InputError
from dino_boc.io import read_image

iio = pytest.importorskip("imageio.v3")


def _pixels(shape, dtype=np.uint8, seed=0):
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_gray_is_one_channel(tmp_path, dtype):
    data = _pixels((12, 10), dtype)
    iio.imwrite(tmp_path / "gray.png", data)
    array, names = read_image(tmp_path / "gray.png")
    assert array.shape == (1, 12, 10) and array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(array[0], data)
    assert names is None


def test_png_rgb_is_three_channels(tmp_path):
    data = _pixels((12, 10, 3))
    iio.imwrite(tmp_path / "rgb.png", data)
    array, _ = read_image(tmp_path / "rgb.png")
    for k in range(3):
        np.testing.assert_array_equal(array[k], data[:, :, k])


@pytest.mark.parametrize("samples", [4, 2])
def test_png_alpha_plane_with_a_stain_is_a_channel(tmp_path, samples):
    # a 4-stain RGBA microscopy PNG (HPA-FoV style): the released decoder keeps every plane, so do we
    dtype = np.uint8  # Pillow writes 8-bit RGBA / LA only
    data = _pixels((12, 10, samples), dtype)
    data[0, 0, -1] = 0  # an alpha plane that varies: a stain, not an opaque mask
    iio.imwrite(tmp_path / "alpha.png", data)
    for alpha in ("auto", "channel"):
        array, _ = read_image(tmp_path / "alpha.png", alpha=alpha)
        assert array.shape == (samples, 12, 10) and array.dtype == np.dtype(dtype)
        for c in range(samples):
            np.testing.assert_array_equal(array[c], data[:, :, c])


@pytest.mark.parametrize("samples", [4, 2])
def test_png_alpha_as_transparency_is_dropped(tmp_path, samples):
    data = _pixels((12, 10, samples))
    iio.imwrite(tmp_path / "alpha.png", data)
    array, _ = read_image(tmp_path / "alpha.png", alpha="transparency")
    assert array.shape == (samples - 1, 12, 10)
    for c in range(samples - 1):
        np.testing.assert_array_equal(array[c], data[:, :, c])


def test_png_fully_opaque_alpha_is_dropped_by_default_but_kept_on_request(tmp_path):
    # an RGB picture saved with alpha (editors, matplotlib): every alpha value at the dtype's maximum
    data = _pixels((12, 10, 4))
    data[..., 3] = 255
    iio.imwrite(tmp_path / "opaque.png", data)
    array, _ = read_image(tmp_path / "opaque.png")
    np.testing.assert_array_equal(array, np.moveaxis(data[..., :3], -1, 0))
    kept, _ = read_image(tmp_path / "opaque.png", alpha="channel")
    np.testing.assert_array_equal(kept, np.moveaxis(data, -1, 0))


def test_png_unknown_alpha_mode_is_refused(tmp_path):
    iio.imwrite(tmp_path / "rgba.png", _pixels((12, 10, 4)))
    with pytest.raises(InputError, match="alpha=.stain.*transparency"):
        read_image(tmp_path / "rgba.png", alpha="stain")


def test_png_dims_override(tmp_path):
    data = _pixels((12, 10, 4))
    iio.imwrite(tmp_path / "rgba.png", data)
    array, _ = read_image(tmp_path / "rgba.png", dims="YXC")  # keep all four planes
    np.testing.assert_array_equal(array, np.moveaxis(data, -1, 0))


def test_jpeg_gray_and_rgb(tmp_path):
    yy, xx = np.mgrid[0:32, 0:40]
    smooth = (100 + 50 * np.sin(yy / 6.0) * np.cos(xx / 7.0)).astype(np.uint8)  # lossy codec: compare loosely
    iio.imwrite(tmp_path / "gray.jpg", smooth, quality=100)
    iio.imwrite(tmp_path / "rgb.jpeg", np.stack([smooth, 255 - smooth, smooth // 2], axis=-1), quality=100)
    gray, _ = read_image(tmp_path / "gray.jpg")
    assert gray.shape == (1, 32, 40) and gray.dtype == np.uint8
    assert np.abs(gray[0].astype(int) - smooth).max() <= 3
    rgb, _ = read_image(tmp_path / "rgb.jpeg")
    assert rgb.shape == (3, 32, 40)
    assert np.abs(rgb[1].astype(int) - (255 - smooth)).mean() < 3


def test_png_corrupt_and_truncated(tmp_path):
    data = _pixels((24, 20), np.uint16)
    iio.imwrite(tmp_path / "good.png", data)
    payload = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(payload[: len(payload) // 2])
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 20)
    for name in ("cut.png", "junk.png"):
        with pytest.raises(ImageReadError, match=f"{name}.*imageio"):
            read_image(tmp_path / name)


def test_png_has_no_levels(tmp_path):
    iio.imwrite(tmp_path / "gray.png", _pixels((12, 10)))
    with pytest.raises(InputError, match="level=1"):
        read_image(tmp_path / "gray.png", level=1)


def test_npy_layouts(tmp_path):
    cyx = np.random.default_rng(0).standard_normal((4, 12, 10)).astype(np.float32)
    np.save(tmp_path / "cyx.npy", cyx)
    np.testing.assert_array_equal(read_image(tmp_path / "cyx.npy")[0], cyx)  # 3-D is (K, H, W)
    np.save(tmp_path / "yx.npy", cyx[0])
    np.testing.assert_array_equal(read_image(tmp_path / "yx.npy")[0], cyx[:1])
    zcyx = np.stack([cyx, cyx + 1, cyx - 1])
    np.save(tmp_path / "zcyx.npy", zcyx)
    with pytest.raises(InputError, match="dims="):
        read_image(tmp_path / "zcyx.npy")
    np.testing.assert_array_equal(read_image(tmp_path / "zcyx.npy", dims="ZCYX")[0], cyx + 1)
    np.testing.assert_array_equal(read_image(tmp_path / "zcyx.npy", dims="ZCYX", z=2)[0], cyx - 1)


def test_npy_object_array_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageReadError, match="obj.npy"):
        read_image(tmp_path / "obj.npy")
