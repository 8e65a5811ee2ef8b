"""Array shape rules shared by ``io`` and ``preprocess`` (which may not import each other)."""

from __future__ import annotations

import numpy as np

from dino_boc.errors import InputError

__all__ = ["one_plane"]


def one_plane(array: object, *, what: str, hint: str) -> np.ndarray:
    """The array as one 2-D plane ``(H, W)``: a ``(1, H, W)`` stack loses its first axis, as
    :func:`dino_boc.io.read_image` returns a 2-D file.

    Args:
        array: ``(H, W)`` or ``(1, H, W)`` array-like.
        what: what the array is, for the message (``"a tape (H, K*w)"``).
        hint: what to do instead, ending the message.

    Returns:
        The ``(H, W)`` array (a view; the dtype unchanged).

    Raises:
        InputError: any other shape: "<what> must be one 2-D plane; got shape (2, 8, 24). <hint>".
    """
    plane = np.asarray(array)
    if plane.ndim == 3 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.ndim != 2:
        raise InputError(f"{what} must be one 2-D plane; got shape {plane.shape}. {hint}")
    return plane
