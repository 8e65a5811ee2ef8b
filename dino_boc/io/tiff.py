"""TIFF and OME-TIFF through tifffile: axes from the file's metadata, channel names from OME-XML or ImageJ.

Axes come from tifffile's first series (``series.axes``): OME-TIFF gives e.g. ``TCZYX``, ImageJ hyperstacks
``ZCYX``/``CYX``, files written by ``tifffile.imwrite(..., metadata={'axes': 'CYX'})`` their own axes, RGB
files ``YXS``. A plain multi-page TIFF without such metadata has an unknown leading axis (``Q``/``I``) and
is refused unless ``dims=`` says what it is (channels or z-planes cannot be told apart).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from dino_boc.errors import ImageReadError, InputError
from dino_boc.io.axes import ZReduction, check_t, check_z, match_names, parse_dims, to_kyx
from dino_boc.io.formats import check_exists, reading
from dino_boc.io.fs import open_bytes

__all__ = ["read_tiff", "ome_channel_names", "imagej_channel_names"]

logger = logging.getLogger(__name__)

# tifffile logs (rather than raises) when an IFD chain points past the end of the file or a tag is
# corrupt, and then returns fewer pages than the file claims: we treat those records as read failures.
_CORRUPTION_HINTS = ("invalid page offset", "corrupt", "truncat")


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
    z: ZReduction = "max",
    t: int = 0,
    level: int = 0,
) -> tuple[np.ndarray, list[str] | None]:
    """Read a TIFF/OME-TIFF/ImageJ TIFF as (K, H, W) in the file's dtype.

    Args:
        path: the file.
        dims: axes of the stored array overriding the metadata, e.g. ``"CYX"``; its length must equal the
            number of axes tifffile reports for the first series.
        z: Z reduction, ``"max"``, ``"mean"`` or a slice index.
        t: time point to keep.
        level: pyramid level (0 = full resolution) of a pyramidal (sub-IFD) TIFF.

    Returns:
        (array (K, H, W), channel names or ``None``).

    Raises:
        ImageReadError: missing, corrupt or truncated file.
        InputError: axes that cannot be read as (K, H, W) (pass ``dims=``), ``level`` out of range.
    """
    check_exists(path)
    check_z(z)
    check_t(t)
    source = str(path)
    with _tifffile_errors() as handler, reading(path, "tifffile"), tifffile.TiffFile(open_bytes(path)) as tif:
        series = tif.series[0]
        levels = series.levels
        if not 0 <= level < len(levels):
            raise InputError(
                f"{source}: level={level} but the file has {len(levels)} resolution level(s) (0..{len(levels) - 1})"
            )
        _check_consistent(tif, series, source)
        array = levels[level].asarray()
        axes = levels[level].axes
        if tif.is_ome:
            names = ome_channel_names(tif.ome_metadata)
        else:
            names = imagej_channel_names(tif.imagej_metadata, axes, array.shape)
    bad = [m for m in handler.messages if any(h in m.lower() for h in _CORRUPTION_HINTS)]
    if bad:
        raise ImageReadError(
            f"cannot read {source!r} with tifffile: {bad[0]}. The file is corrupt or truncated; re-copy it"
        )
    if dims is not None:
        axes = parse_dims(dims, array.shape)
    out = to_kyx(array, axes, z=z, t=t, source=source)
    return out, match_names(names, out.shape[0], source)


def _check_consistent(tif, series, source: str) -> None:
    """Metadata that promises a layout the pages do not deliver means a damaged file."""
    if tif.is_imagej and series.kind.lower() != "imagej":
        raise ImageReadError(
            f"cannot read {source!r}: its ImageJ metadata does not match its pages (truncated or corrupt file)"
        )
    is_ome_name = Path(source).name.lower().endswith((".ome.tif", ".ome.tiff"))
    if (is_ome_name or tif.is_ome) and series.kind.lower() != "ome":
        raise ImageReadError(
            f"cannot read {source!r}: named or marked OME-TIFF but its OME-XML is missing or does not match its "
            "pages (truncated or corrupt file); re-export it, or rename it to .tif to read it as a plain TIFF"
        )


def ome_channel_names(ome_xml: str | None) -> list[str] | None:
    """``Name`` of each ``Channel`` of the first ``Image`` in OME-XML, or ``None`` when any is missing."""
    if not ome_xml:
        return None
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        logger.debug("unparseable OME-XML; no channel names")
        return None
    image = next((el for el in root if el.tag.endswith("}Image") or el.tag == "Image"), None)
    if image is None:
        return None
    pixels = next((el for el in image if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    names = [ch.get("Name") for ch in pixels if ch.tag.endswith("Channel")]
    if not names or any(n is None or n == "" for n in names):
        return None
    return names


def imagej_channel_names(meta: dict | None, axes: str, shape: tuple[int, ...]) -> list[str] | None:
    """Channel names from ImageJ slice ``Labels`` (one per plane, channels fastest), or ``None``.

    ImageJ stores a label per plane in C, Z, T order with C varying fastest, so the first ``C`` labels
    are the names of the channels at the first Z and T.
    """
    if not meta:
        return None
    labels = meta.get("Labels")
    if isinstance(labels, str):  # ImageJ writes a single label as a plain string
        labels = [labels]
    if not isinstance(labels, (list, tuple)):
        return None
    if "C" not in axes.upper():  # one channel: its label names it; several labels are Z/T planes
        return [str(labels[0])] if len(labels) == 1 else None
    n_channels = shape[axes.upper().index("C")]
    if len(labels) < n_channels:
        return None
    return [str(label) for label in labels[:n_channels]]
