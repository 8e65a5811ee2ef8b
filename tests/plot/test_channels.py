"""plot.channels: K + 1 panels (channels then composite), named, composite = sum of tinted channels."""

from __future__ import annotations

import numpy as np
import pytest

from dino_boc.errors import InputError
from dino_boc.plot import channels


def _panels(fig):
    return [ax for ax in fig.axes if ax.images]


def _scaled(plane):
    lo, hi = np.percentile(plane.astype(np.float64), [1.0, 99.8])
    return np.clip((plane - lo) / (hi - lo), 0, 1)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_k_plus_one_panels_with_names(k):
    img = np.random.default_rng(k).integers(0, 4000, size=(k, 24, 40)).astype(np.uint16)
    names = [f"stain_{i}" for i in range(k)]
    fig = channels(img, names=names)
    panels = _panels(fig)
    assert len(panels) == k + 1
    assert [ax.get_title() for ax in panels] == names + ["composite"]
    assert all(ax.images[0].get_array().shape[:2] == (24, 40) for ax in panels)


def test_composite_is_the_sum_of_tinted_channels(image):
    fig = channels(image, colors=["red", "lime", "blue"])
    comp = _panels(fig)[-1].images[0].get_array()
    ref = np.clip(np.stack([_scaled(image[0]), _scaled(image[1]), _scaled(image[2])], axis=-1), 0, 1)
    np.testing.assert_allclose(comp, ref, atol=1e-5)
    first = _panels(fig)[0].images[0].get_array()
    np.testing.assert_allclose(first[..., 0], _scaled(image[0]), atol=1e-5)
    assert np.all(first[..., 1:] == 0)


def test_reads_names_from_a_file_and_saves(image, tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "i.tif", image, imagej=True, metadata={"axes": "CYX", "Labels": ["x", "y", "z"]})
    fig = channels(tmp_path / "i.tif", output=tmp_path / "c.svg")
    assert [ax.get_title() for ax in _panels(fig)] == ["x", "y", "z", "composite"]
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()[:1000]


def test_errors(image):
    with pytest.raises(InputError, match="2 channel names"):
        channels(image, names=["a", "b"])
    with pytest.raises(InputError, match="fewer colours"):
        channels(image, colors=["red"])
    with pytest.raises(InputError, match="not-a-colour"):
        channels(image, colors=["red", "green", "not-a-colour"])
    with pytest.raises(InputError, match=r"\(K, H, W\)"):
        channels(image[0])
