"""CHAMMI tapes: channels side by side in one 2-D image."""

from __future__ import annotations

import numpy as np
import pytest

from dino_boc.errors import InputError
from dino_boc.io import fold_tape, read_image, unfold_tape


def _channels(k=3, h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 255, size=(k, h, w), dtype=np.uint8)


def test_unfold_matches_side_by_side_layout():
    channels = _channels(k=5, h=6, w=7)
    tape = np.concatenate(list(channels), axis=1)  # channel k in columns k*w .. (k+1)*w - 1
    assert tape.shape == (6, 35)
    np.testing.assert_array_equal(unfold_tape(tape, 7), channels)
    np.testing.assert_array_equal(unfold_tape(tape[None], 7), channels)  # (1, H, K*w) as read_image gives
    np.testing.assert_array_equal(fold_tape(channels), tape)


def test_unfold_matches_released_chammi_decoder():
    """The released loader reshapes (H, K*H) to (H, H, K) in Fortran order and moves K first."""
    channels = _channels(k=4, h=9, w=9, seed=3)
    tape = np.concatenate(list(channels), axis=1)
    released = np.reshape(tape, (tape.shape[0], tape.shape[0], -1), order="F").transpose(2, 0, 1)
    np.testing.assert_array_equal(unfold_tape(tape, tape.shape[0]), released)


@pytest.mark.parametrize(("array", "width", "message"), [
    (np.zeros((8, 20)), 6, "not a multiple"),
    (np.zeros((8, 24)), 0, "positive int"),
    (np.zeros((2, 8, 24)), 8, "one 2-D plane"),
])
def test_unfold_errors(array, width, message):
    with pytest.raises(InputError, match=message):
        unfold_tape(array, width)


def test_read_image_unfolds_png_tape(tmp_path):
    iio = pytest.importorskip("imageio.v3")
    channels = _channels(k=3, h=10, w=10, seed=5)
    iio.imwrite(tmp_path / "tape.png", np.concatenate(list(channels), axis=1))
    array, names = read_image(tmp_path / "tape.png", channel_width=10)
    np.testing.assert_array_equal(array, channels)
    assert names is None
    with pytest.raises(InputError, match="not a multiple"):
        read_image(tmp_path / "tape.png", channel_width=7)


def test_read_image_refuses_tape_width_on_multichannel(tmp_path):
    np.save(tmp_path / "cyx.npy", _channels())
    with pytest.raises(InputError, match="already has 3 channels"):
        read_image(tmp_path / "cyx.npy", channel_width=8)
