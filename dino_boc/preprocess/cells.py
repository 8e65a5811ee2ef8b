"""Single-cell crops: a label image (one integer per object) -> a fixed-size crop centred on each object.

Label images are what cellpose (``*_cp_masks.png``/``*_masks.tif``), StarDist or CellProfiler
(``ConvertObjectsToImage``, uint16 labels) write: 0 is background, every other value one object.
Centroids are computed with ``numpy.bincount`` (no scipy): the mean row and column of each object's
pixels, in pixels of the full field of view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dino_boc._arrays import one_plane
from dino_boc.errors import InputError

__all__ = ["CellCrops", "check_label_image", "object_centroids", "crop_cells", "crop_object"]


@dataclass(frozen=True)
class CellCrops:
    """The crops of one field of view.

    Attributes:
        crops: ``(n_cells, K, S, S)`` in the image's dtype; pixels outside the field of view are 0.
        labels: ``(n_cells,)`` int64, the objects' values in the label image, ascending.
        centroids: ``(n_cells, 2)`` float64 ``(y, x)`` centroid of each object.
    """

    crops: np.ndarray
    labels: np.ndarray
    centroids: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def check_label_image(labels: np.ndarray, shape: tuple[int, int] | None = None, *, source: str = "label image") -> np.ndarray:
    """Validate a label image and return it as int64 ``(H, W)``.

    Args:
        labels: ``(H, W)`` or ``(1, H, W)`` integers (floats holding whole numbers are accepted).
        shape: the ``(H, W)`` of the image it segments, checked when given.
        source: what to call it in messages (its path).

    Raises:
        InputError: several planes, a non-integer or negative value, or a size different from the image's.
    """
    lab = one_plane(labels, what=f"{source}: a label image (H, W)",
                    hint="Save one integer label image per field of view (0 = background, 1..n = objects), as "
                         "cellpose or CellProfiler do")
    if lab.dtype == bool or not np.issubdtype(lab.dtype, np.number):
        raise InputError(f"{source}: label image has dtype {lab.dtype}; expected integers (0 = background)")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.isfinite(lab)) or np.any(lab != np.round(lab)):
            raise InputError(f"{source}: label image holds non-integer values; expected integer labels (0 = background)")
    if lab.size and lab.min() < 0:
        raise InputError(f"{source}: label image has negative values (min {lab.min()}); expected 0 = background, 1..n = objects")
    if shape is not None and tuple(lab.shape) != tuple(shape):
        raise InputError(
            f"{source}: label image is {lab.shape[0]}x{lab.shape[1]} but its image is {shape[0]}x{shape[1]}; "
            "each label image must segment its own field of view at the same size"
        )
    return lab.astype(np.int64, copy=False)


def object_centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Objects of a label image and their centroids.

    Args:
        labels: int ``(H, W)``; 0 = background.

    Returns:
        (ids ``(n,)`` int64 ascending, centroids ``(n, 2)`` float64 as ``(y, x)``: the mean row and column
        of the object's pixels).
    """
    flat = np.asarray(labels).reshape(-1)
    ids, inverse = np.unique(flat, return_inverse=True)  # compact labels: bincount stays small for any id
    inverse = inverse.reshape(-1)
    width = labels.shape[1]
    rows, cols = np.divmod(np.arange(flat.size, dtype=np.int64), width)
    counts = np.bincount(inverse, minlength=ids.size).astype(np.float64)
    cy = np.bincount(inverse, weights=rows, minlength=ids.size) / counts
    cx = np.bincount(inverse, weights=cols, minlength=ids.size) / counts
    keep = ids != 0
    return ids[keep].astype(np.int64), np.stack([cy[keep], cx[keep]], axis=1)


def crop_cells(
    image: np.ndarray, labels: np.ndarray, size: int, *, mask_outside: bool = False, source: str = "image"
) -> CellCrops:
    """A ``size x size`` crop centred on every object of ``labels``.

    The crop of an object with centroid ``(cy, cx)`` covers rows ``r - size // 2`` to ``r - size // 2 + size - 1``
    with ``r = numpy.round(cy)`` (half to even), columns likewise; the part outside the field of view is 0.

    Args:
        image: ``(K, H, W)``, any dtype.
        labels: ``(H, W)`` (or ``(1, H, W)``) label image of the same field; 0 = background.
        size: S, the side of each crop in pixels.
        mask_outside: set every pixel not belonging to the object (background and neighbours) to 0.
        source: what to call the image in messages.

    Returns:
        :class:`CellCrops` with ``crops (n, K, S, S)``; ``n = 0`` when the label image holds no object.

    Raises:
        InputError: an image that is not ``(K, H, W)``, a bad label image, or ``size < 1``.
    """
    img = np.asarray(image)
    if img.ndim != 3:
        raise InputError(f"{source}: expected a (K, H, W) image for single-cell crops, got shape {img.shape}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"cell crop size={size!r} must be a positive integer (pixels)")
    lab = check_label_image(labels, img.shape[1:], source=f"{source} (labels)")
    ids, centroids = object_centroids(lab)
    crops = np.zeros((ids.size, img.shape[0], size, size), dtype=img.dtype)
    for n, (obj, centroid) in enumerate(zip(ids, centroids)):
        crops[n] = crop_object(img, lab, int(obj), centroid, size, mask_outside=mask_outside)
    return CellCrops(crops=crops, labels=ids, centroids=centroids)


def crop_object(
    image: np.ndarray, labels: np.ndarray, obj: int, centroid: np.ndarray | tuple[float, float], size: int, *,
    mask_outside: bool = False,
) -> np.ndarray:
    """The ``(K, S, S)`` crop of one object (the rule of :func:`crop_cells`), made on its own so that a
    field's crops can be made one batch at a time.

    Args:
        image: ``(K, H, W)``.
        labels: int ``(H, W)``, checked by :func:`check_label_image`.
        obj: the object's label.
        centroid: its ``(y, x)``.
        size: S.
        mask_outside: zero the pixels not belonging to the object.
    """
    k, h, w = image.shape
    cy, cx = centroid
    top, left = int(np.round(cy)) - size // 2, int(np.round(cx)) - size // 2
    y0, y1 = max(top, 0), min(top + size, h)
    x0, x1 = max(left, 0), min(left + size, w)
    window = image[:, y0:y1, x0:x1]
    if mask_outside:
        window = np.where(labels[y0:y1, x0:x1] == obj, window, 0)
    crop = np.zeros((k, size, size), dtype=image.dtype)
    crop[:, y0 - top:y1 - top, x0 - left:x1 - left] = window
    return crop
