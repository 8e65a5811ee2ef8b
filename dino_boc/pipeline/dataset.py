"""A torch ``Dataset`` over input records: read, select channels, crop cells or tiles, pre-process.

``InputDataset[i]`` runs in a DataLoader worker and never raises for a bad input: it returns a
:class:`Loaded` (the tensors the model will see, with their metadata rows) or a :class:`Failed`
(the reason as ``"ErrorClass: message"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Literal, Union

import numpy as np
import torch

from dino_boc.errors import InputError, ResourceLimitError
from dino_boc.io import ImageRecord, read_image
from dino_boc.io.fs import storage_options
from dino_boc.outputs import metadata_row
from dino_boc.pipeline.inputs import image_key
from dino_boc.pipeline.options import TOKEN_WARNING, EmbedOptions, ReadOptions
from dino_boc.preprocess import PreprocessConfig, prepare_image
from dino_boc.preprocess.cells import check_label_image, crop_object, object_centroids
from dino_boc.preprocess.channels import rename_channels, resolve_channels
from dino_boc.preprocess.tiles import tile_image

__all__ = ["Loaded", "Failed", "InputDataset", "CellTensors", "prepare_field", "identity_collate"]

logger = logging.getLogger(__name__)


@dataclass
class Loaded:
    """One input, pre-processed.

    Attributes:
        index: position of the input in the run's input list.
        tensors: float32 ``(n, K, H, W)``: the image (n = 1), its tiles, or its cells (n may be 0); for
            cells a :class:`CellTensors`, which makes each crop when it is indexed.
        channel_names: the K channel names.
        rows: metadata rows: one per cell, or one for the image (also when tiled).
        reduce: ``"mean"``: average the n tiles' tokens into the one row; ``"none"``: one row per tensor.
        source: the input's id (its path), for messages.
    """

    index: int
    tensors: torch.Tensor
    channel_names: list[str]
    rows: list[dict[str, Any]]
    reduce: Literal["none", "mean"] = "none"
    source: str = ""

    def pin_memory(self) -> "Loaded":  # called by the DataLoader's pin-memory thread on CUDA
        return replace(self, tensors=self.tensors.pin_memory())


class CellTensors:
    """The pre-processed crops of one field's objects, ``(n, K, S', S')``, made when indexed.

    A field may hold tens of thousands of objects: making every crop at once would hold
    ``n x K x S x S`` floats (a field with an object per pixel took 9.7 GB). This holds the field and its
    label image; ``cells[j]`` crops and pre-processes object ``j`` only, so the batcher makes one batch
    of crops at a time. ``shape`` and indexing are those of the stacked tensor it replaces.
    """

    def __init__(self, image: np.ndarray, labels: np.ndarray, ids: np.ndarray, centroids: np.ndarray, size: int, *,
                 mask_outside: bool, preprocess: PreprocessConfig, patch_size: int) -> None:
        self.image, self.labels, self.ids, self.centroids = image, labels, ids, centroids
        self.size, self.mask_outside = size, mask_outside
        self.preprocess, self.patch_size = preprocess, patch_size
        first = self[0] if len(ids) else torch.zeros((image.shape[0], 1, 1))
        self.shape = torch.Size((len(ids), *first.shape))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, j: int) -> torch.Tensor:
        crop = crop_object(self.image, self.labels, int(self.ids[j]), self.centroids[j], self.size,
                           mask_outside=self.mask_outside)
        return prepare_field(crop, self.preprocess, self.patch_size, fit=False)

    def pin_memory(self) -> "CellTensors":
        return self  # crops are made (and copied to the device) batch by batch


@dataclass
class Failed:
    """An input that could not be embedded: ``reason`` is ``"ErrorClass: message"``."""

    index: int
    path: str
    reason: str


Item = Union[Loaded, Failed]


def identity_collate(item: Item) -> Item:
    """The DataLoader's per-item conversion: keep the item as it is (module level: picklable)."""
    return item


def prepare_field(image: np.ndarray, cfg: PreprocessConfig, patch_size: int, *, fit: bool) -> torch.Tensor:
    """:func:`dino_boc.preprocess.prepare_image` (``fit``: the centre crop to the patch when no crop is set).

    Returns:
        float32 ``(K, H', W')``.
    """
    return prepare_image(image, cfg, patch_size, fit=fit)


class InputDataset(torch.utils.data.Dataset):
    """Item ``i``: record ``i`` read, its channels selected and pre-processed, as :class:`Loaded` or :class:`Failed`.

    Args:
        records: the run's inputs.
        preprocess: the run's pre-processing (resize, crop, normalisation).
        patch_size: the model's patch; final sizes are multiples of it.
        read: read options (``channels``, ``channel_names``, ``max_pixels`` and ``storage_options`` are
            used here; the others are on the records). ``storage_options`` are set around each read, so
            they reach the readers in DataLoader workers, spawned ones included.
        embed: tiling and single-cell settings.
        masks: per record its label image path (single-cell mode), ``""`` when none matched; or None.
        fit: centre-crop fields whose size is not a multiple of the patch (when no crop is set).
    """

    def __init__(
        self,
        records: list[ImageRecord],
        *,
        preprocess: PreprocessConfig,
        patch_size: int,
        read: ReadOptions,
        embed: EmbedOptions,
        masks: list[str] | None = None,
        fit: bool = True,
    ) -> None:
        self.records = records
        self.preprocess = preprocess
        self.patch_size = patch_size
        self.channels = read.channels
        self.channel_names = read.channel_names
        self.max_pixels = read.max_pixels
        self.storage_options = read.storage_options
        self.embed = embed
        self.masks = masks
        self.fit = fit
        self._warned = False

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Item:
        record = self.records[index]
        threads = torch.get_num_threads()
        # small per-image tensor ops only lose to thread wake-ups; workers already run 1 thread, the main
        # process (num_workers=0) is set to 1 for the item and restored for the model
        torch.set_num_threads(1)
        try:
            with storage_options(self.storage_options):
                return self._load(index, record)
        except Exception as exc:  # any failure of one input (reader, decoder, bad values) is recorded; the run goes on
            logger.debug("input %d (%s) failed: %s", index, record.id, exc)
            return Failed(index, record.id, f"{type(exc).__name__}: {exc}")
        finally:
            torch.set_num_threads(threads)

    def _load(self, index: int, record: ImageRecord) -> Loaded:
        array, names = record.read()
        k = array.shape[0]
        selected = resolve_channels(self.channels, k, names)
        if selected != list(range(k)):
            array = array[selected]
            names = [names[i] for i in selected] if names else None
        names = rename_channels(names, array.shape[0], self.channel_names, source=record.id)
        path = record.paths[0] or record.id
        if self.masks is not None:
            return self._cells(index, record, array, names, path)
        row = metadata_row(path, names, record.metadata)
        if self.embed.tile is not None:
            tiles = tile_image(array, self.embed.tile)
            tensors = torch.stack([prepare_field(t, self.preprocess, self.patch_size, fit=False) for t in tiles])
            return Loaded(index, tensors, names, [row], reduce="mean", source=record.id)
        self._check_tokens(array.shape, record.id)
        tensor = prepare_field(array, self.preprocess, self.patch_size, fit=self.fit)
        return Loaded(index, tensor[None], names, [row], source=record.id)

    def _check_tokens(self, shape: tuple[int, ...], source: str) -> None:
        """Whole fields: refuse (errors-file row) above ``max_tokens`` patch tokens per channel-image; warn
        once above :data:`TOKEN_WARNING` when no resize/crop bounds the size."""
        k, h, w = shape
        cfg, p = self.preprocess, self.patch_size
        if cfg.crop is not None:
            h = w = cfg.crop
        elif cfg.resize is not None:
            h, w = (cfg.resize, int(cfg.resize * w / h)) if h <= w else (int(cfg.resize * h / w), cfg.resize)
        n = (h // p) * (w // p)
        hint = "pass --tile 224 (tile=224) to average the features of 224-pixel tiles, or --resize 512 (resize=512)"
        limit = self.embed.max_tokens
        if limit is not None and n > limit:
            raise ResourceLimitError(
                f"{source}: a {shape[1]}x{shape[2]} field embedded whole is {n:,} patch tokens per channel "
                f"({k} channels), "
                f"over max_tokens={limit:,} (attention costs grow with the square of it: hours per image); {hint}, "
                "or raise --max-tokens"
            )
        if n > TOKEN_WARNING and cfg.resize is None and cfg.crop is None and not self._warned:
            self._warned = True
            logger.warning(
                "%s: a %dx%d field is embedded whole: %s patch tokens per channel x %d channels = %s tokens per image, "
                "which can take minutes per image (shown once per run); %s", source, shape[1], shape[2],
                f"{n:,}", k, f"{n * k:,}", hint,
            )

    def _cells(self, index: int, record: ImageRecord, array: np.ndarray, names: list[str], path: str) -> Loaded:
        mask_path = self.masks[index]
        if not mask_path:
            stem = image_key(path)
            raise InputError(
                f"no label image for {record.id!r}: expected one named {stem}.tif, {stem}_masks.tif, "
                f"{stem}_cp_masks.png (or with another image suffix) among the masks"
            )
        labels, _ = read_image(mask_path, max_pixels=self.max_pixels)
        labels = check_label_image(labels, array.shape[1:], source=f"{path} (labels)")
        ids, centroids = object_centroids(labels)
        rows = [
            metadata_row(path, names, record.metadata, cell_label=int(lab), centroid=(float(cy), float(cx)))
            for lab, (cy, cx) in zip(ids, centroids)
        ]
        if not rows:
            logger.info("%s: its label image %s holds no object", record.id, mask_path)
            return Loaded(index, torch.zeros((0, array.shape[0], 1, 1)), names, [], source=record.id)
        cells = CellTensors(array, labels, ids, centroids, self.embed.cell_size, mask_outside=self.embed.mask_outside,
                            preprocess=self.preprocess, patch_size=self.patch_size)
        return Loaded(index, cells, names, rows, source=record.id)
