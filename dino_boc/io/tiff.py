"""TIFF and OME-TIFF through tifffile: axes from the file's metadata, channel names from OME-XML or ImageJ.

Axes come from tifffile's first series (``series.axes``), whatever kind of file tifffile recognised:
OME-TIFF gives e.g. ``TCZYX``, ImageJ hyperstacks ``ZCYX``/``CYX``, Micro-Manager MMStack and NDTiff files
``TRZCYX`` (``R``: stage position), files written by ``tifffile.imwrite(..., metadata={'axes': 'CYX'})``
their own axes, RGB files ``YXS``. A plain multi-page TIFF without such metadata has an unknown leading
axis (``Q``/``I``) and is refused unless ``dims=`` says what it is (channels or z-planes cannot be told
apart). An OME-TIFF holding several images of one shape (one per stage position) reads image
``position``.

Compressed files (LZW, Deflate, Zstd, JPEG, JPEG-XL, ...) are decoded by ``imagecodecs``, installed with
dino-boc; when it is missing the error says ``pip install imagecodecs`` rather than blaming the file.

Channel names come from OME-XML ``Channel/@Name``, else from ImageJ slice labels only when those are
names: one label per channel, the same at every Z/T plane, distinct, and not Bio-Formats' per-plane
labels such as ``c:1/4 t:75/132 - experiment.nd2 (series 1)``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from dino_boc.errors import ImageReadError, InputError, MissingExtraError
from dino_boc.io.axes import (
    DEFAULT_Z, POSITION_AXES, ZReduction, check_position, check_t, check_z, match_names, parse_dims, to_kyx,
)
from dino_boc.io.budget import DEFAULT_MAX_PIXELS, read_tiff_planes
from dino_boc.io.formats import CODEC_HINT, check_exists, reading
from dino_boc.io.fs import open_bytes

__all__ = ["read_tiff", "tiff_positions", "ome_channel_names", "imagej_channel_names", "check_codec"]

logger = logging.getLogger(__name__)

# tifffile logs (rather than raises) when an IFD chain points past the end of the file or a tag is
# corrupt, and then returns fewer pages than the file claims: we treat those records as read failures.
_CORRUPTION_HINTS = ("invalid page offset", "corrupt", "truncat")
# series kinds tifffile falls back to when a file's own metadata (ImageJ, OME, ...) does not fit its pages
_FALLBACK_KINDS = ("generic", "uniform", "shaped")
# Bio-Formats / Fiji per-plane labels: "c:1/4", "z:3/10", "t:75/132" (also "c=1/4")
_PLANE_LABEL = re.compile(r"(?:^|[\s(])[czt][:=]\s*\d+\s*/\s*\d+", re.IGNORECASE)


class _TifffileErrors(logging.Handler):
    """Collects tifffile's ERROR records emitted by this thread while a file is read."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_errors() -> Iterator[_TifffileErrors]:
    """Collect tifffile's ERROR records during a read, even where the user silenced tifffile's logger.

    (Not with ``logging.disable``: then no record is made. Reads in threads share the logger's settings.)
    """
    tiff_logger = logging.getLogger("tifffile")
    handler = _TifffileErrors()
    level, propagate = tiff_logger.level, tiff_logger.propagate
    if not tiff_logger.isEnabledFor(logging.ERROR):  # silenced: record for us, show nobody
        tiff_logger.setLevel(logging.ERROR)
        tiff_logger.propagate = False
    tiff_logger.addHandler(handler)
    try:
        yield handler
    finally:
        tiff_logger.removeHandler(handler)
        tiff_logger.setLevel(level)
        tiff_logger.propagate = propagate


def read_tiff(
    path: str | os.PathLike,
    *,
    dims: str | None = None,
    z: ZReduction = DEFAULT_Z,
    t: int = 0,
    level: int = 0,
    position: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, list[str] | None]:
    """Read a TIFF/OME-TIFF/ImageJ/Micro-Manager TIFF as (K, H, W) in the file's dtype.

    Args:
        path: the file.
        dims: axes of the stored array overriding the metadata, e.g. ``"CYX"``; its length must equal the
            number of axes tifffile reports for the first series.
        z: Z reduction, ``"max"``, ``"mean"`` or a slice index.
        t: time point to keep.
        level: pyramid level (0 = full resolution) of a pyramidal (sub-IFD) TIFF.
        position: stage position: index along an ``R``/``P`` axis (Micro-Manager), or the image of an
            OME-TIFF holding one image per position.
        max_pixels: values that may be decoded at once (see :mod:`dino_boc.io.budget`); a stack over it
            is read plane by plane when Z/T reduction brings it within; None: no limit.

    Returns:
        (array (K, H, W), channel names or ``None``).

    Raises:
        ImageReadError: missing, corrupt or truncated file; an OME-TIFF whose XML lists planes the file lacks.
        InputError: axes that cannot be read as (K, H, W) (pass ``dims=``), ``level`` or ``position`` out
            of range.
        MissingExtraError: the file's compression needs ``imagecodecs``, which is not installed.
        ResourceLimitError: the header declares more values than ``max_pixels``.
    """
    check_exists(path)
    check_z(z)
    check_t(t)
    check_position(position, allow_each=False)
    source = str(path)
    with _tifffile_errors() as handler, reading(path, "tifffile"), tifffile.TiffFile(open_bytes(path)) as tif:
        series, position = _pick_series(tif, position, source)
        levels = series.levels
        if not 0 <= level < len(levels):
            raise InputError(
                f"{source}: level={level} but the file has {len(levels)} resolution level(s) (0..{len(levels) - 1})"
            )
        _check_consistent(tif, series, source)
        _check_planes(tif, series, source)
        check_codec(levels[level].keyframe.compression, source)
        selected = None
        if dims is None:  # only this time point and position's pages, when that fits the budget
            selected = _read_selected(tif, levels[level], t=t, position=position, max_pixels=max_pixels)
        if selected is not None:
            array, axes = selected
            t = position = 0
        else:  # whole, or Z/T reduced plane by plane when over the budget
            axes = levels[level].axes if dims is None else parse_dims(dims, levels[level].shape)
            array, axes = read_tiff_planes(levels[level], axes, z=z, t=t, max_pixels=max_pixels, source=source)
        if tif.is_ome:
            names = ome_channel_names(tif.ome_metadata, image=tif.series.index(series))
        else:
            names = None
        if names is None and tif.is_micromanager:
            names = _micromanager_channel_names(tif.micromanager_metadata)
        if names is None and tif.is_imagej:
            names = imagej_channel_names(tif.imagej_metadata, axes, array.shape)
    bad = [m for m in handler.messages if any(h in m.lower() for h in _CORRUPTION_HINTS)]
    if bad:
        raise ImageReadError(
            f"cannot read {source!r} with tifffile: {bad[0]}. The file is corrupt or truncated; re-copy it"
        )
    out = to_kyx(array, axes, z=z, t=t, position=position, source=source)
    return out, match_names(names, out.shape[0], source)


def _read_selected(tif, series, *, t: int, position: int, max_pixels: int | None
                   ) -> tuple[np.ndarray, str] | None:
    """Read only the pages of time point ``t`` and stage ``position`` of a series (memory: one T, one position).

    Works when the series' leading axes enumerate its pages (ImageJ, OME, Micro-Manager, ...) and the
    selection fits ``max_pixels``; otherwise None, and the caller reads the series whole or plane by plane.

    Returns:
        (array, axes): the selected T/position axes are kept with length 1; or None.
    """
    axes, shape = series.axes, tuple(series.shape)
    page_shape = tuple(series.keyframe.shape)
    n_lead = len(shape) - len(page_shape)
    lead_axes, lead_shape = axes[:n_lead], shape[:n_lead]
    picks = {"T": t, **{letter: position for letter in POSITION_AXES}}
    if n_lead <= 0 or shape[n_lead:] != page_shape or int(np.prod(lead_shape)) != len(series.pages) or not any(
        a in picks for a in lead_axes
    ):
        return None
    ranges = []
    for a, size in zip(lead_axes, lead_shape):
        if a in picks:
            i = picks[a]
            if not -size <= i < size:
                what = "t" if a == "T" else "position"
                raise InputError(f"{what}={i} is out of range: the image's axes {axes!r} have {size} along that axis")
            ranges.append([int(i) % size])
        else:
            ranges.append(range(size))
    selected = [len(r) for r in ranges]
    if max_pixels is not None and math.prod(selected) * math.prod(page_shape) > max_pixels:
        return None
    keys = np.ravel_multi_index(np.meshgrid(*ranges, indexing="ij"), lead_shape).ravel().tolist()
    if any(series.pages[k] is None for k in keys):
        return None
    array = tif.asarray(key=keys, series=series)
    return array.reshape(tuple(selected) + page_shape), axes


def tiff_positions(path: str | os.PathLike) -> int:
    """Number of stage positions in a TIFF: the length of its ``R``/``P`` axis, or its OME images of one shape.

    Raises:
        ImageReadError: missing or unreadable file.
    """
    check_exists(path)
    with reading(path, "tifffile"), tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        for letter in POSITION_AXES:
            if letter in series.axes:
                return int(series.shape[series.axes.index(letter)])
        return len(_position_series(tif))


def _position_series(tif) -> list:
    """OME-TIFF images that are stage positions: every series with the first one's shape and axes."""
    first = tif.series[0]
    if not tif.is_ome or first.kind.lower() != "ome":
        return [first]
    return [s for s in tif.series if s.shape == first.shape and s.axes == first.axes]


def _pick_series(tif, position: int, source: str):
    """(series to read, position left for the axes) for a stage position."""
    first = tif.series[0]
    if any(letter in first.axes for letter in POSITION_AXES):
        return first, position
    candidates = _position_series(tif)
    if not -len(candidates) <= position < len(candidates):
        raise InputError(
            f"{source}: position={position} but the file has {len(candidates)} stage position(s) "
            f"(0..{len(candidates) - 1})"
        )
    return candidates[position], 0


def check_codec(compression: int, source: str) -> None:
    """Raise :class:`MissingExtraError` when tifffile cannot decode ``compression`` here (no imagecodecs)."""
    try:
        tifffile.TIFF.DECOMPRESSORS[compression]
    except KeyError as exc:
        try:
            label = tifffile.COMPRESSION(compression).name
        except ValueError:
            label = str(compression)
        raise MissingExtraError(
            f"{source!r} is compressed with {label}, which needs the imagecodecs package to decode (the file is "
            f"not damaged). {CODEC_HINT}"
        ) from exc


def _check_consistent(tif, series, source: str) -> None:
    """Metadata that promises a layout the pages do not deliver means a damaged file.

    Any series kind tifffile reads with its own reader (``imagej``, ``ome``, ``mmstack``, ``ndtiff``, ...)
    is fine; only its fall-back kinds on a file flagged ImageJ or OME mean the metadata did not fit.
    """
    kind = series.kind.lower()
    if tif.is_imagej and kind in _FALLBACK_KINDS:
        raise ImageReadError(
            f"cannot read {source!r}: its ImageJ metadata does not match its pages (truncated or corrupt file)"
        )
    is_ome_name = Path(source).name.lower().endswith((".ome.tif", ".ome.tiff"))
    if (is_ome_name or tif.is_ome) and kind in _FALLBACK_KINDS:
        raise ImageReadError(
            f"cannot read {source!r}: named or marked OME-TIFF but its OME-XML is missing or does not match its "
            "pages (truncated or corrupt file); re-export it, or rename it to .tif to read it as a plain TIFF"
        )


def _check_planes(tif, series, source: str) -> None:
    """An OME-TIFF whose XML lists planes that are not in the file (tifffile would zero-fill them)."""
    if not tif.is_ome:
        return
    missing = sum(page is None for page in series.pages)
    if missing:
        raise ImageReadError(
            f"cannot read {source!r}: its OME-XML describes {len(series.pages)} planes but {missing} are missing "
            "from the file (an incomplete export or copy); re-export it"
        )


def _micromanager_channel_names(meta: dict | None) -> list[str] | None:
    """``Summary.ChNames`` of Micro-Manager metadata (the channel presets of the acquisition), or ``None``."""
    summary = (meta or {}).get("Summary") if isinstance(meta, dict) else None
    names = summary.get("ChNames") if isinstance(summary, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        return None
    return names


def ome_channel_names(ome_xml: str | None, *, image: int = 0) -> list[str] | None:
    """``Name`` of each ``Channel`` of ``Image`` number ``image`` in OME-XML, or ``None`` when any is missing."""
    if not ome_xml:
        return None
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        logger.debug("unparseable OME-XML; no channel names")
        return None
    images = [el for el in root if el.tag.endswith("}Image") or el.tag == "Image"]
    if not 0 <= image < len(images):
        return None
    pixels = next((el for el in images[image] if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    names = [ch.get("Name") for ch in pixels if ch.tag.endswith("Channel")]
    if not names or any(n is None or n == "" for n in names):
        return None
    return names


def imagej_channel_names(meta: dict | None, axes: str, shape: tuple[int, ...]) -> list[str] | None:
    """Channel names from ImageJ slice ``Labels`` when they are names, else ``None``.

    ImageJ stores a label per plane in C, Z, T order with C varying fastest. The labels name the channels
    only when every plane of a channel carries that channel's label (one consistent label per channel),
    the channels' labels differ, and none is a Bio-Formats/Fiji plane label (``c:1/4 t:75/132 - x.nd2``):
    those differ from file to file and would make every file's feature columns unique.
    """
    if not meta:
        return None
    labels = meta.get("Labels")
    if isinstance(labels, str):  # ImageJ writes a single label as a plain string
        labels = [labels]
    if not isinstance(labels, (list, tuple)) or not labels:
        return None
    labels = [str(label).strip() for label in labels]
    upper = axes.upper()
    n_channels = shape[upper.index("C")] if "C" in upper else 1
    if len(labels) % n_channels:
        return None
    names = labels[:n_channels]
    planes = [labels[i : i + n_channels] for i in range(0, len(labels), n_channels)]
    if any(plane != names for plane in planes):
        logger.debug("ImageJ slice labels differ between planes of one channel; not used as channel names")
        return None
    if len(set(names)) != n_channels or not all(names) or any(_PLANE_LABEL.search(n) for n in names):
        logger.debug("ImageJ slice labels %s are plane labels, not channel names; not used", names[:3])
        return None
    return names
