"""Vendor formats (CZI, ND2, LIF, ...) through bioio and its format plugins (optional extra).

bioio returns a 5-D ``TCZYX`` array (6-D ``TCZYXS`` for RGB data) with ``dims.order`` naming the axes and
``channel_names`` from the file. Each format needs its own plugin, e.g. ``pip install bioio-czi``; bioio's
own error names the missing plugin.
"""

from __future__ import annotations

import os

import numpy as np

from dino_boc.errors import InputError, require
from dino_boc.io.axes import DEFAULT_Z, ZReduction, check_t, check_z, match_names, parse_dims, to_kyx
from dino_boc.io.formats import check_exists, reading

__all__ = ["read_vendor"]


def read_vendor(
    path: str | os.PathLike,
    *,
    dims: str | None = None,
    z: ZReduction = DEFAULT_Z,
    t: int = 0,
    level: int = 0,
    position: int = 0,
) -> tuple[np.ndarray, list[str] | None]:
    """Read the first scene of a vendor file as (K, H, W) through bioio.

    Args:
        path: the file.
        dims: axes overriding bioio's ``dims.order``.
        z: Z reduction, ``"max"``, ``"mean"`` or a slice index.
        t: time point to keep.
        level: resolution level of a pyramidal file (0 = full resolution).
        position: index along a stage-position axis (``P``/``R``) when the file has one.

    Returns:
        (array (K, H, W), channel names or ``None``).

    Raises:
        MissingExtraError: bioio is not installed (``pip install "dino-boc[bioio]"``).
        ImageReadError: unreadable file, or no bioio plugin for it (the message names the plugin).
        InputError: ``level`` out of range or axes that do not fit.
    """
    bioio = require("bioio", "bioio")
    check_exists(path)
    check_z(z)
    check_t(t)
    source = str(path)
    with reading(path, "bioio"):
        image = bioio.BioImage(path)
        if level:
            levels = list(image.resolution_levels)
            if level not in levels:
                raise InputError(f"{source}: level={level} but the file has resolution levels {levels}")
            image.set_resolution_level(level)
        order = str(image.dims.order)
        array = np.asarray(image.data)
        names = list(image.channel_names or [])
    axes = parse_dims(dims, array.shape) if dims is not None else order
    out = to_kyx(array, axes, z=z, t=t, position=position, source=source)
    return out, match_names(names, out.shape[0], source)
