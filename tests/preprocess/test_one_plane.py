"""One shape rule (dino_boc._arrays.one_plane) for the two 2-D inputs: CHAMMI tapes (io) and label images
(preprocess)."""

from __future__ import annotations

import numpy as np
import pytest

from dino_boc.errors import InputError
from dino_boc.io.tape import unfold_tape
from dino_boc.preprocess.cells import check_label_image


def test_a_single_plane_stack_is_the_plane_for_both():
    tape = np.arange(8 * 24).reshape(1, 8, 24)
    np.testing.assert_array_equal(unfold_tape(tape, 8), unfold_tape(tape[0], 8))
    labels = np.zeros((1, 6, 5), np.int32)
    labels[0, 2:4, 1:3] = 7
    np.testing.assert_array_equal(check_label_image(labels, (6, 5)), labels[0])


@pytest.mark.parametrize("shape", [(2, 8, 24), (8,), (1, 1, 8, 24)])
def test_other_shapes_are_refused_with_each_callers_hint(shape):
    with pytest.raises(InputError, match=rf"a tape \(H, K\*w\) must be one 2-D plane; got shape .*Drop channel_width"):
        unfold_tape(np.zeros(shape), 8)
    with pytest.raises(InputError, match=r"A01.tif: a label image \(H, W\) must be one 2-D plane; got shape .*Save one"):
        check_label_image(np.zeros(shape, np.int32), source="A01.tif")
