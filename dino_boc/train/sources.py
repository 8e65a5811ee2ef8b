"""Training image sources: in-memory arrays, stacks of single-channel crops, and files read by :mod:`dino_boc.io`.

A source knows how many images it has, how many channels each has (without reading them all when
possible) and reads image ``i`` as a numpy ``(K, H, W)`` array. Sources are picklable, so DataLoader
workers read from them directly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from dino_boc.errors import ConfigError, InputError

__all__ = ["ImageSource", "ArraySource", "FileSource", "build_source", "load_stack"]

logger = logging.getLogger(__name__)


class ImageSource:
    """Base class: ``len(source)`` images, ``source.channels`` ``(n_images,)`` int, ``source.read(i)`` -> ``(K, H, W)``.

    Attributes:
        name: label in logs and metrics.
        channel_ids: Channel-ViT channel-embedding ids of the image channels, or None for ``0..K-1``.
    """

    name: str = ""
    channel_ids: tuple[int, ...] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    _channels: np.ndarray  # set by a subclass's __init__

    @property
    def channels(self) -> np.ndarray:
        """``(n_images,)`` int64: K of every image."""
        return self._channels

    def read(self, i: int) -> np.ndarray:
        """Image ``i`` as ``(K, H, W)`` in its stored dtype."""
        raise NotImplementedError


class ArraySource(ImageSource):
    """Images held in memory.

    Args:
        images: ``(N, K, H, W)``, a stack of single-channel images ``(N, H, W)`` (K = 1 each), or a
            sequence of ``(K, H, W)`` arrays (K and size may differ between images).
        name: label of the source.
        channel_ids: Channel-ViT ids of the K channels (all images then need the same K).

    Raises:
        InputError: arrays that are not 3-D (per image) or have no pixels.
    """

    def __init__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        *,
        name: str = "array",
        channel_ids: Sequence[int] | None = None,
    ) -> None:
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[:, None]
        if isinstance(images, np.ndarray) and images.ndim != 4:
            raise InputError(
                f"images array has shape {images.shape}; expected (N, K, H, W) or a stack (N, H, W) of "
                "single-channel images"
            )
        self.images = images
        for i in range(len(images)):
            shape = np.shape(images[i])
            if len(shape) != 3 or min(shape) < 1:
                raise InputError(f"image {i} of source {name!r} has shape {shape}; expected (K, H, W) with pixels")
        self._channels = np.array([np.shape(images[i])[0] for i in range(len(images))], dtype=np.int64)
        self.name = name
        self.channel_ids = None if channel_ids is None else tuple(int(c) for c in channel_ids)

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int) -> np.ndarray:
        return np.asarray(self.images[i])


def load_stack(path: str | Path) -> np.ndarray:
    """Read a stack of single-channel images ``(N, H, W)`` from a ``.npy`` (memory-mapped) or TIFF file.

    Raises:
        InputError: a file that does not hold a 3-D stack.
    """
    path = Path(path)
    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
    else:
        import tifffile

        arr = tifffile.imread(path)
    if arr.ndim != 3:
        raise InputError(
            f"{path} holds an array of shape {arr.shape}; a stack source needs (N, H, W) single-channel images "
            "— use kind: files for multi-channel images"
        )
    return arr


class FileSource(ImageSource):
    """Images read from files with :func:`dino_boc.io.collect_sources` records (each ``record.read()``).

    Args:
        records: the :class:`~dino_boc.io.ImageRecord` list.
        name: label of the source.
        channels: K of every image, or None to probe.
        probe: ``"first"`` reads the first image and assumes its K for all (checked on every read);
            ``"all"`` reads every image once now.
        channel_ids: Channel-ViT ids of the channels.

    Raises:
        ConfigError: no images.
    """

    def __init__(
        self,
        records: Sequence,
        *,
        name: str,
        channels: int | None = None,
        probe: str = "first",
        channel_ids: Sequence[int] | None = None,
    ) -> None:
        if not records:
            raise ConfigError(f"data source {name!r} has no images; check its path")
        self.records = list(records)
        self.name = name
        self.channel_ids = None if channel_ids is None else tuple(int(c) for c in channel_ids)
        if channels is not None:
            self._channels = np.full(len(self.records), int(channels), dtype=np.int64)
        elif probe == "all":
            self._channels = np.array([r.read()[0].shape[0] for r in self.records], dtype=np.int64)
        else:
            k = self.records[0].read()[0].shape[0]
            self._channels = np.full(len(self.records), k, dtype=np.int64)
        self._probe = probe if channels is None else "given"

    def __len__(self) -> int:
        return len(self.records)

    def read(self, i: int) -> np.ndarray:
        array, _ = self.records[i].read()
        if array.shape[0] != self._channels[i]:
            raise InputError(
                f"{self.records[i].id}: {array.shape[0]} channels, but source {self.name!r} expects "
                f"{self._channels[i]} ({'probed from its first image' if self._probe == 'first' else 'configured'}); "
                "split images with different channel counts into separate sources, or set probe: all"
            )
        return array


def _is_stack(path: str) -> bool:
    p = Path(path)
    name = p.name.lower()
    return p.suffix == ".npy" or (p.suffix in (".tif", ".tiff") and ("crops" in name or "stack" in name))


def build_source(cfg) -> ImageSource:
    """The :class:`ImageSource` of a :class:`~dino_boc.train.config.SourceConfig`."""
    kind = cfg.kind
    if kind == "auto":
        kind = "stack" if _is_stack(cfg.path) else "files"
    name = cfg.name or str(cfg.path)
    if kind == "stack":
        return ArraySource(load_stack(cfg.path), name=name, channel_ids=cfg.channel_ids)
    from dino_boc.io import collect_sources

    records = collect_sources(cfg.path, dims=cfg.dims, channel_width=cfg.channel_width)
    return FileSource(records, name=name, channels=cfg.channels, probe=cfg.probe, channel_ids=cfg.channel_ids)
