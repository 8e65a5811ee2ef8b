"""OME-Zarr (OME-NGFF) images through the zarr library (zarr-python 2.16+ or 3).

An OME-Zarr image is a zarr group whose attributes hold ``multiscales`` (one entry per image; its
``datasets`` list one array path per resolution level, full resolution first, and ``axes`` name the
axes) and optionally ``omero`` (``channels[].label`` are the channel names). NGFF 0.4 keeps them in
``.zattrs`` (zarr format 2); NGFF 0.5 nests them under an ``"ome"`` key of ``zarr.json`` (zarr format 3).
A bare zarr array (no group) is read too; its axes must be given with ``dims=`` unless it is 2-D.

An HCS plate (NGFF ``plate`` metadata: ``rows``, ``columns``, ``wells[].path`` such as ``A/1``; each well
group's ``well.images[].path`` lists its fields) is expanded by :func:`plate_fields` into one image per
field, with its plate, well and field as metadata.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dino_boc.errors import ImageReadError, InputError, require
from dino_boc.io.axes import DEFAULT_Z, ZReduction, check_t, check_z, match_names, parse_dims, to_kyx
from dino_boc.io.budget import DEFAULT_MAX_PIXELS, check_budget
from dino_boc.io.formats import check_exists, reading
from dino_boc.io.fs import zarr_store

__all__ = ["read_ngff", "ngff_axes", "is_plate", "plate_fields"]

_AXIS_NAMES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}
_AXIS_TYPES = {"channel": "C", "time": "T"}


def read_ngff(
    path: str | os.PathLike,
    *,
    dims: str | None = None,
    z: ZReduction = DEFAULT_Z,
    t: int = 0,
    level: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, list[str] | None]:
    """Read one resolution level of an OME-Zarr image as (K, H, W) in the stored dtype.

    Args:
        path: the image group folder (``image.ome.zarr``, or ``plate.zarr/A/1/0`` inside a plate).
        dims: axes overriding ``multiscales[0].axes``, e.g. ``"CZYX"``.
        z: Z reduction, ``"max"``, ``"mean"`` or a slice index.
        t: time point to keep (only that point is loaded).
        level: index into ``multiscales[0].datasets`` (0 = full resolution).
        max_pixels: most values loaded at once (the chosen time point of the level), checked from the
            array's metadata before loading; None: no limit.

    Returns:
        (array (K, H, W), channel names from ``omero.channels[].label`` or ``None``).

    Raises:
        ImageReadError: missing folder or unreadable zarr data.
        InputError: a plate/well group, no ``multiscales``, ``level`` out of range, axes that do not fit.
        ResourceLimitError: the level declares more values than ``max_pixels``.
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
            check_budget(node.shape, node.dtype, max_pixels, source=source, what="loading")
            array, axes, names = node[...], None, None
        else:
            attrs = _ome_attrs(node.attrs.asdict(), source)
            dataset, axes, names = _pick_level(attrs, level, source)
            stored = node[dataset]
            axes = _dims_or(dims, axes, stored.shape)
            selection, axes = _select_t(stored.shape, axes, t)
            if len(selection) == len(stored.shape):  # only the chosen time point is loaded
                kept = tuple(n for n, s in zip(stored.shape, selection) if not isinstance(s, int))
            else:
                kept = stored.shape
            check_budget(kept, stored.dtype, max_pixels, source=source, what="loading")
            array = stored[selection]
    if axes is None:
        if dims is None and array.ndim != 2:
            raise InputError(
                f"{source}: zarr data of shape {array.shape} without axes metadata; pass dims=, e.g. dims='CYX'"
            )
        axes = parse_dims(dims, array.shape) if dims is not None else "YX"
    out = to_kyx(np.asarray(array), axes, z=z, t=0, source=source)
    return out, match_names(names, out.shape[0], source)


def _group_attrs(path: str | os.PathLike) -> Mapping[str, Any]:
    """The OME attributes of a zarr group (NGFF 0.5's ``ome`` key unwrapped), ``{}`` for an array or no zarr."""
    zarr = require("zarr", "io")
    with reading(path, "zarr"):
        node = zarr.open(store=str(path), mode="r")
        if isinstance(node, zarr.Array):
            return {}
        attrs = node.attrs.asdict()
    return attrs["ome"] if isinstance(attrs.get("ome"), Mapping) else attrs


def is_plate(path: str | os.PathLike) -> bool:
    """True when ``path`` is an OME-Zarr HCS plate or well group."""
    attrs = _group_attrs(path)
    return "plate" in attrs or "well" in attrs


def plate_fields(path: str | os.PathLike) -> list[tuple[str, dict[str, str]]]:
    """Every field (image) of an OME-Zarr HCS plate, or of one well, with its metadata.

    Args:
        path: the plate folder (``plate.ome.zarr``) or one well (``plate.ome.zarr/A/1``).

    Returns:
        ``(image folder, {"Metadata_Plate", "Metadata_Well", "Metadata_Site"})`` per field, in the
        plate's well order then the well's image order. The plate is ``plate.name`` (else the folder
        name without ``.zarr``), the well its row name + column name as the plate names them (``A`` +
        ``1`` -> ``A1``; ``B`` + ``03`` -> ``B03``), the site the field's path in its well (``0``, ``1``...).

    Raises:
        InputError: a group that is neither plate nor well, or a well listing no images.
    """
    source = str(path)
    attrs = _group_attrs(path)
    if "plate" in attrs:
        plate = attrs["plate"]
        name = str(plate.get("name") or _stem(Path(source).name))
        wells = [str(w["path"]) for w in plate.get("wells") or []]
        base = Path(source)
    elif "well" in attrs:
        base = Path(source).parent.parent
        wells = [f"{Path(source).parent.name}/{Path(source).name}"]
        name = _plate_name_above(base)
    else:
        raise InputError(f"{source}: zarr group without 'plate' or 'well' metadata is not an OME-Zarr HCS plate")
    out = []
    for well in wells:
        well_attrs = _group_attrs(base / well).get("well") or {}
        images = [str(im["path"]) for im in well_attrs.get("images") or []]
        if not images:
            raise InputError(f"{source}: well {well!r} lists no images in its 'well' metadata; re-write the plate")
        row, _, col = well.partition("/")
        for image in images:
            meta = {"Metadata_Plate": name, "Metadata_Well": f"{row}{col}", "Metadata_Site": image}
            out.append((str(base / well / image), meta))
    return out


def _stem(name: str) -> str:
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _plate_name_above(base: Path) -> str:
    try:
        plate = _group_attrs(base).get("plate") or {}
    except ImageReadError:  # a well outside a readable plate still has a folder name
        plate = {}
    return str(plate.get("name") or _stem(base.name))


def _dims_or(dims: str | None, axes: str | None, shape: tuple[int, ...]) -> str | None:
    """``dims`` validated against ``shape`` when given, else the metadata's axes."""
    return parse_dims(dims, shape) if dims is not None else axes


def _ome_attrs(attrs: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    if isinstance(attrs.get("ome"), Mapping):  # NGFF 0.5
        attrs = attrs["ome"]
    if "plate" in attrs or "well" in attrs:
        kind = "plate" if "plate" in attrs else "well"
        raise InputError(
            f"{source} is an OME-Zarr {kind}, not an image; pass it to dino_boc.io.collect_sources (or the "
            f"CLI) to read every field with its well and site, or point at one field, e.g. {source}/A/1/0"
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
