"""Which reader handles a path: file suffixes, OME-Zarr folders, and turning reader failures into errors.

Every reader in :mod:`dino_boc.io` goes through :func:`reading`, so a corrupt or truncated file always
surfaces as :class:`~dino_boc.errors.ImageReadError` naming the file and the reader's own complaint.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from dino_boc.errors import DinoBocError, ImageReadError, MissingExtraError, ResourceLimitError
from dino_boc.io.fs import is_url, url_exists

__all__ = [
    "Format",
    "TIFF_SUFFIXES",
    "ZARR_SUFFIXES",
    "PIXEL_SUFFIXES",
    "NUMPY_SUFFIXES",
    "VENDOR_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "format_of",
    "is_zarr_dir",
    "check_exists",
    "reading",
    "CODEC_HINT",
]

CODEC_HINT = "Install the decoders with: pip install imagecodecs"

Format = Literal["tiff", "zarr", "pixels", "numpy", "vendor"]

TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".btf", ".lsm")
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
PIXEL_SUFFIXES = (".png", ".jpg", ".jpeg")
NUMPY_SUFFIXES = (".npy",)
VENDOR_SUFFIXES = (".czi", ".nd2", ".lif", ".dv", ".r3d", ".oib", ".oif", ".oir", ".ims", ".vsi", ".ics", ".sld")
SUPPORTED_SUFFIXES = TIFF_SUFFIXES + ZARR_SUFFIXES + PIXEL_SUFFIXES + NUMPY_SUFFIXES + VENDOR_SUFFIXES

_ZARR_MARKERS = (".zattrs", ".zgroup", ".zarray", "zarr.json")
_BY_FORMAT: dict[Format, tuple[str, ...]] = {
    "tiff": TIFF_SUFFIXES,
    "zarr": ZARR_SUFFIXES,
    "pixels": PIXEL_SUFFIXES,
    "numpy": NUMPY_SUFFIXES,
    "vendor": VENDOR_SUFFIXES,
}


def is_zarr_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder with zarr metadata (v2 ``.zattrs``/``.zgroup``/``.zarray``, v3 ``zarr.json``)."""
    if is_url(path):  # i17: a remote zarr group has one of the marker objects under its prefix
        return any(url_exists(f"{str(path).rstrip('/')}/{marker}") for marker in _ZARR_MARKERS)
    p = Path(path)
    return p.is_dir() and any((p / marker).is_file() for marker in _ZARR_MARKERS)


def format_of(path: str | os.PathLike) -> Format | None:
    """The reader for ``path`` from its suffix (case-insensitive), or ``None`` if no reader handles it.

    A folder with zarr metadata is ``"zarr"`` whatever its name (e.g. ``plate.zarr/A/1/0``).
    A URL is judged by its suffix first (no request), then by zarr marker objects.
    """
    if not is_url(path) and is_zarr_dir(path):
        return "zarr"
    name = Path(path).name.lower()
    for fmt, suffixes in _BY_FORMAT.items():
        if name.endswith(suffixes):
            return fmt
    if is_url(path) and is_zarr_dir(path):  # i17
        return "zarr"
    return None


def check_exists(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Raise :class:`ImageReadError` if ``path`` is missing (or is a folder where a file is expected)."""
    if is_url(path):  # i17: a missing object fails when fetched (io.fs names the URL)
        return
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"no such file: {str(p)!r}; check the path (relative paths start at {os.getcwd()!r})")
    if folder and not p.is_dir():
        raise ImageReadError(f"{str(p)!r} is a file; a zarr image is a folder")
    if not folder and p.is_dir():
        raise ImageReadError(
            f"{str(p)!r} is a folder, not an image file and not an OME-Zarr image; "
            "to read every image in a folder use dino_boc.io.collect_sources"
        )


@contextlib.contextmanager
def reading(path: str | os.PathLike, reader: str) -> Iterator[None]:
    """Turn whatever a third-party reader raises into :class:`ImageReadError` naming the file.

    Our own errors (wrong axes, zero channels, ...) pass through unchanged. A missing decoder (the reader
    names ``imagecodecs``, or a decoder module cannot be imported) is :class:`MissingExtraError` naming the
    ``pip install``, never "corrupt".

    Args:
        path: the file being read, for the message.
        reader: the library doing the reading, e.g. ``"tifffile"``.

    Raises:
        ImageReadError: the reader failed; the message has its complaint.
        MissingExtraError: a decoder the file needs is not installed.
    """
    try:
        yield
    except DinoBocError:
        raise
    except MemoryError:
        raise
    except PermissionError as exc:  # not a damaged file: say what it is
        raise ImageReadError(
            f"cannot read {str(path)!r}: permission denied ({exc.filename or path}); the file is not readable by this "
            "user: check its permissions"
        ) from exc
    except Exception as exc:  # a reader of arbitrary files fails in arbitrary ways; we name the file and go on
        if type(exc).__name__ == "DecompressionBombError":  # Pillow's own pixel limit (about 179 M pixels)
            raise ResourceLimitError(
                f"{str(path)!r}: {exc} ({reader} refuses to decode it); embed a smaller export, or a TIFF of it"
            ) from exc
        if isinstance(exc, ImportError) or "imagecodecs" in str(exc):
            raise MissingExtraError(
                f"cannot decode {str(path)!r} with {reader}: {type(exc).__name__}: {exc}. A decoder is missing "
                f"(the file is not damaged). {CODEC_HINT}"
            ) from exc
        raise ImageReadError(
            f"cannot read {str(path)!r} with {reader}: {type(exc).__name__}: {exc}. "
            "The file is probably corrupt or truncated (an interrupted copy?); re-copy or re-export it"
        ) from exc
