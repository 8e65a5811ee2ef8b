"""CHAMMI "tape" images: the K channels of a field stored side by side in one 2-D image.

A tape of K channels, each ``w`` pixels wide, is an (H, K*w) image whose columns ``k*w .. (k+1)*w - 1``
hold channel ``k``. This is the layout the released CHAMMI loaders undo (they reshape the (H, K*w)
image to (H, w, K) in Fortran order, which is the same split). CHAMMI's tiles are square, so
``channel_width`` is the tape's height there.
"""

from __future__ import annotations

import numpy as np

from dino_boc._arrays import one_plane
from dino_boc.errors import InputError

__all__ = ["unfold_tape", "fold_tape"]


def unfold_tape(array: np.ndarray, channel_width: int) -> np.ndarray:
    """Cut a tape into its channels.

    Args:
        array: (H, K*w) tape, or (1, H, K*w) as :func:`dino_boc.io.read_image` returns a 2-D file.
        channel_width: ``w``, the width of one channel in pixels (the height for CHAMMI's square tiles).

    Returns:
        (K, H, w) array, same dtype.

    Raises:
        InputError: not a single 2-D plane, ``channel_width`` not positive, or the width not a multiple
            of ``channel_width``.
    """
    array = one_plane(array, what="a tape (H, K*w)",
                      hint="Drop channel_width for images that already have a channel axis")
    if isinstance(channel_width, bool) or not isinstance(channel_width, (int, np.integer)) or channel_width < 1:
        raise InputError(f"channel_width={channel_width!r}; expected a positive int (pixels per channel)")
    height, width = array.shape
    if width % channel_width:
        raise InputError(
            f"tape width {width} is not a multiple of channel_width={channel_width} (shape {array.shape}); "
            f"for CHAMMI's square tiles channel_width is the height, {height}"
        )
    k = width // channel_width
    return np.ascontiguousarray(array.reshape(height, k, channel_width).transpose(1, 0, 2))


def fold_tape(array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`unfold_tape`: (K, H, w) -> (H, K*w), channels side by side."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"fold_tape expects (K, H, w); got shape {array.shape}")
    k, height, width = array.shape
    return np.ascontiguousarray(array.transpose(1, 0, 2).reshape(height, k * width))
