"""``ImageRecord``: one image to embed — a file, or one file per channel — with its metadata and read options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from dino_boc.errors import ChannelError, ImageReadError, InputError
from dino_boc.io.axes import ZReduction
from dino_boc.io.budget import DEFAULT_MAX_PIXELS
from dino_boc.io.fs import map_fetches
from dino_boc.io.illum import apply_illum, read_illum
from dino_boc.io.read import read_image

__all__ = ["ImageRecord", "MetadataValue"]

MetadataValue = Union[str, int, float]


@dataclass(frozen=True)
class ImageRecord:
    """One image to read: a single file, or one 2-D file per channel (CellProfiler LoadData).

    Attributes:
        id: identifier, unique within a :func:`~dino_boc.io.collect_sources` result (the path for files,
            ``<csv name>#<row>`` for LoadData rows).
        paths: one file, or one file per channel in channel order (``""`` marks a channel whose file is
            missing from its row; reading then fails with :class:`ImageReadError`).
        channel_names: names of the K channels; ``None`` uses the names in the file, if any.
        metadata: extra columns of the input table (plate, well, treatment, ...).
        dims, z, t, level, channel_width, position, max_pixels: read options, as in
            :func:`~dino_boc.io.read_image`.
        illum: per channel file, its illumination function (``.npy``, ``""`` for none): each plane is
            divided by it as CellProfiler's CorrectIlluminationApply does (see :mod:`dino_boc.io.illum`);
            None: no correction.
    """

    id: str
    paths: tuple[str, ...]
    channel_names: tuple[str, ...] | None = None
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict, hash=False)
    dims: str | None = None
    z: ZReduction = "max"
    t: int = 0
    level: int = 0
    channel_width: int | None = None
    position: int = 0
    illum: tuple[str, ...] | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        paths = (self.paths,) if isinstance(self.paths, str) else tuple(str(p) for p in self.paths)
        if not paths:
            raise InputError(f"ImageRecord {self.id!r} has no paths; give one file or one file per channel")
        object.__setattr__(self, "paths", paths)
        if self.channel_names is not None:
            names = tuple(str(n) for n in self.channel_names)
            if len(paths) > 1 and len(names) != len(paths):
                raise ChannelError(
                    f"ImageRecord {self.id!r}: {len(names)} channel names for {len(paths)} channel files; "
                    "give one per file"
                )
            object.__setattr__(self, "channel_names", names)
        if self.illum is not None:
            illum = tuple(str(p) for p in self.illum)
            if len(illum) != len(paths):
                raise InputError(
                    f"ImageRecord {self.id!r}: {len(illum)} illumination functions for {len(paths)} channel files; "
                    "give one per file (\"\" for none)"
                )
            object.__setattr__(self, "illum", illum)

    def read(self) -> tuple[np.ndarray, list[str] | None]:
        """Read the image.

        Returns:
            (array (K, H, W) in the files' dtype, channel names or ``None``).

        Raises:
            ImageReadError: a missing, unreadable or differently shaped file, a channel without file.
            InputError: axes that do not fit (pass ``dims``).
            ChannelError: ``channel_names`` whose count differs from the image's K.
        """
        if len(self.paths) == 1 and self.paths[0] and not self.illum:
            array, names = read_image(self.paths[0], **self._options())
        else:
            array, names = self._read_channels(), None
        if self.channel_names is None:
            return array, names
        if len(self.channel_names) != array.shape[0]:
            raise ChannelError(
                f"{self.id}: {len(self.channel_names)} channel names {list(self.channel_names)} for an image "
                f"with {array.shape[0]} channels (shape {array.shape}); give one name per channel"
            )
        return array, list(self.channel_names)

    def _options(self) -> dict:
        return {"dims": self.dims, "z": self.z, "t": self.t, "level": self.level, "channel_width": self.channel_width,
                "position": self.position, "max_pixels": self.max_pixels}

    def _read_channels(self) -> np.ndarray:
        """Stack one 2-D plane per file into (K, H, W), each divided by its illumination function if any."""
        names = self.channel_names or tuple(f"channel {i}" for i in range(len(self.paths)))
        illum = self.illum or ("",) * len(self.paths)
        planes = []
        for name, path in zip(names, self.paths):
            if not path:
                raise ImageReadError(f"{self.id}: no file for channel {name!r}; fill in its file name in the table")
        reads = map_fetches(lambda p: read_image(p, **self._options()), self.paths)  # URLs fetched concurrently
        for name, path, function, (plane, _) in zip(names, self.paths, illum, reads):
            if plane.shape[0] != 1:
                raise ImageReadError(
                    f"{self.id}: channel {name!r} file {path!r} holds {plane.shape[0]} planes (shape {plane.shape}); "
                    "with one file per channel each file must be a single 2-D plane"
                )
            if function:
                planes.append(apply_illum(plane[0], read_illum(function), source=f"{self.id} channel {name!r}"))
            else:
                planes.append(plane[0])
        shapes = {p.shape for p in planes}
        if len(shapes) > 1:
            detail = ", ".join(f"{n}: {p.shape}" for n, p in zip(names, planes))
            raise ImageReadError(
                f"{self.id}: channel files differ in size ({detail}); all channels must be (H, W) alike"
            )
        return np.stack(planes)
