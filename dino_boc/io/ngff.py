"""OME-Zarr (OME-NGFF) images through the zarr library (zarr-python 2.16+ or 3).

An OME-Zarr image is a zarr group whose attributes hold ``multiscales`` (one entry per image; its
``datasets`` list one array path per resolution level, full resolution first, and ``axes`` name the
axes) and optionally ``omero`` (``channels[].label`` are the channel names). NGFF 0.4 keeps them in
``.zattrs`` (zarr format 2); NGFF 0.5 nests them under an ``"ome"`` key of ``zarr.json`` (zarr format 3).
A bare zarr array (no group) is read too; its axes must be given with ``dims=`` unless it is 2-D.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from dino_boc.errors import InputError, require
from dino_boc.io.axes import ZReduction, check_t, check_z, match_names, parse_dims, to_kyx
from dino_boc.io.formats import check_exists, reading
from dino_boc.io.fs import zarr_store

__all__ = ["read_ngff", "ngff_axes"]

_AXIS_NAMES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}
_AXIS_TYPES = {"channel": "C", "time": "T"}


def read_ngff(
    path: str | os.PathLike,
    *,
    dims: str | None = None,
    z: ZReduction = "max",
    t: int = 0,
    level: int = 0,
) -> tuple[np.ndarray, list[str] | None]:
    """Read one resolution level of an OME-Zarr image as (K, H, W) in the stored dtype.

    Args:
        path: the image group folder (``image.ome.zarr``, or ``plate.zarr/A/1/0`` inside a plate).
        dims: axes overriding ``multiscales[0].axes``, e.g. ``"CZYX"``.
        z: Z reduction, ``"max"``, ``"mean"`` or a slice index.
        t: time point to keep (only that point is loaded).
        level: index into ``multiscales[0].datasets`` (0 = full resolution).

    Returns:
        (array (K, H, W), channel names from ``omero.channels[].label`` or ``None``).

    Raises:
        ImageReadError: missing folder or unreadable zarr data.
        InputError: a plate/well group, no ``multiscales``, ``level`` out of range, axes that do not fit.
        MissingExtraError: zarr is not installed.
    """
    zarr = require("zarr", "io")
    check_exists(path, folder=True)
    check_z(z)
    check_t(t)
    source = str(path)
    with reading(path, "zarr"):
        node = zarr.open(store=zarr_store(path), mode="r")
        if isinstance(node, zarr.Array):
            array, axes, names = node[...], None, None
        else:
            attrs = _ome_attrs(node.attrs.asdict(), source)
            dataset, axes, names = _pick_level(attrs, level, source)
            stored = node[dataset]
            axes = _dims_or(dims, axes, stored.shape)
            selection, axes = _select_t(stored.shape, axes, t)
            array = stored[selection]
    if axes is None:
        if dims is None and array.ndim != 2:
            raise InputError(
                f"{source}: zarr data of shape {array.shape} without axes metadata; pass dims=, e.g. dims='CYX'"
            )
        axes = parse_dims(dims, array.shape) if dims is not None else "YX"
    out = to_kyx(np.asarray(array), axes, z=z, t=0, source=source)
    return out, match_names(names, out.shape[0], source)


def _dims_or(dims: str | None, axes: str | None, shape: tuple[int, ...]) -> str | None:
    """``dims`` validated against ``shape`` when given, else the metadata's axes."""
    return parse_dims(dims, shape) if dims is not None else axes


def _ome_attrs(attrs: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    if isinstance(attrs.get("ome"), Mapping):  # NGFF 0.5
        attrs = attrs["ome"]
    if "plate" in attrs or "well" in attrs:
        kind = "plate" if "plate" in attrs else "well"
        raise InputError(
            f"{source} is an OME-Zarr {kind}, not an image; point at one field, e.g. {source}/A/1/0, "
            "or pass a glob such as 'plate.zarr/*/*/*'"
        )
    if not attrs.get("multiscales"):
        raise InputError(f"{source}: zarr group without 'multiscales' metadata is not an OME-Zarr image")
    return attrs


def _pick_level(attrs: Mapping[str, Any], level: int, source: str) -> tuple[str, str | None, list[str] | None]:
    multiscale = attrs["multiscales"][0]
    datasets = multiscale.get("datasets") or []
    if not isinstance(level, (int, np.integer)) or not 0 <= level < len(datasets):
        raise InputError(
            f"{source}: level={level!r} but the image has {len(datasets)} resolution level(s) (0..{len(datasets) - 1})"
        )
    omero = attrs.get("omero") or {}
    channels = omero.get("channels") if isinstance(omero, Mapping) else None
    names = [str(ch.get("label", "")) for ch in channels] if channels else None
    if names and not all(names):
        names = None
    return str(datasets[level]["path"]), ngff_axes(multiscale), names


def ngff_axes(multiscale: Mapping[str, Any]) -> str | None:
    """Axes letters of a ``multiscales`` entry: from ``axes`` (NGFF >= 0.3), ``TCZYX`` for 0.1/0.2.

    Axis entries are names (0.3) or ``{"name", "type"}`` objects (0.4+); names ``t c z y x`` map to
    ``TCZYX``, other names by type (``channel`` -> C, ``time`` -> T), anything else to ``Q`` (unknown).
    """
    axes = multiscale.get("axes")
    if axes is None:
        return "TCZYX" if str(multiscale.get("version", "")) in ("0.1", "0.2") else None
    letters = []
    for axis in axes:
        name = axis if isinstance(axis, str) else str(axis.get("name", ""))
        kind = None if isinstance(axis, str) else axis.get("type")
        letters.append(_AXIS_NAMES.get(name.lower()) or _AXIS_TYPES.get(str(kind)) or "Q")
    return "".join(letters)


def _select_t(shape: tuple[int, ...], axes: str | None, t: int) -> tuple[tuple, str | None]:
    """Index only the wanted time point so a long time series is not loaded whole."""
    if axes is None or len(axes) != len(shape) or "T" not in axes:
        return (...,), axes
    i = axes.index("T")
    size = shape[i]
    if not -size <= t < size:
        raise InputError(f"t={t} is out of range: the image's axes {axes!r} have {size} time points")
    selection = tuple(int(t) % size if j == i else slice(None) for j in range(len(shape)))
    return selection, axes.replace("T", "")
