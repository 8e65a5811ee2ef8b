"""Image readers: files -> numpy (K, H, W) in the file's dtype + channel names.

``read_image`` reads one TIFF/OME-TIFF, OME-Zarr, PNG/JPEG, ``.npy`` or (with bioio) vendor file;
``collect_sources`` turns folders, globs, path lists, LoadData CSVs and path tables into
:class:`ImageRecord` objects whose ``.read()`` gives the same ``(array, names)`` pair; ``iter_sources``
gives the same records streamed (folders a directory at a time, object stores a page of keys at a time).

Example:
    >>> from dino_boc.io import read_image, collect_sources
    >>> array, names = read_image("field.ome.tif")               # (K, H, W), e.g. ['DNA', 'RNA', ...]
    >>> array, _ = read_image("stack.tif", dims="ZYX", z="max")  # a z-stack of one channel
    >>> records = collect_sources("plate1/load_data.csv")        # one record per field, one file per channel
"""

from dino_boc.io.axes import ZReduction
from dino_boc.io.formats import SUPPORTED_SUFFIXES, format_of
from dino_boc.io.loaddata import read_loaddata
from dino_boc.io.options import ReadOptions
from dino_boc.io.read import read_image
from dino_boc.io.record import ImageRecord
from dino_boc.io.sources import collect_sources, iter_sources
from dino_boc.io.tape import fold_tape, unfold_tape

__all__ = [
    "read_image",
    "ReadOptions",
    "ImageRecord",
    "collect_sources",
    "iter_sources",
    "read_loaddata",
    "unfold_tape",
    "fold_tape",
    "format_of",
    "SUPPORTED_SUFFIXES",
    "ZReduction",
]
