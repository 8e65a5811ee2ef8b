"""Training data: which items each iteration sees, and the multi-crop batches built from them.

Everything random here is a pure function of ``(seed, iteration, position in the global batch)``, so a
batch is the same whatever the number of processes, DataLoader workers, or whether the run was resumed:
the data-loader position IS the iteration.

* **Items.** BoC (``unit="channel"``): an item is ONE channel of one image, and every (image, channel)
  pair is an item. HA / Channel-ViT (``unit="image"``): an item is a whole image.
* **Order** (:class:`SampleIndex`). The items form an endless stream cut into global batches. With
  ``balance="none"`` the stream is a concatenation of epochs, each a fresh permutation of all items: the
  first ``epoch_length`` positions cover every item exactly once. With ``balance="sources"`` every source
  gets the same share (each epoch is ``S * n_max`` positions: the largest source's items once, smaller
  sources cycled through their own successive permutations).
* **Ranks.** Rank r of W takes positions ``r, r + W, r + 2W, ...`` of each global batch (the
  interleaving of ``DistributedSampler``); the global batch size must be a multiple of W.
* **Batches** (:class:`BatchBuilder`). Each sample is read, its channels mapped to [0, 1], and turned into
  2 global + 8 local crops (:mod:`dino_boc.train.augment`), seeded by its stream position; crops are
  stacked crop-major (all samples' crop 0, then crop 1, ...) as DINOv2. iBOT masks cover
  ``mask_sample_probability`` of the global-crop images of the GLOBAL batch with ratios stratified over
  it. HA / Channel-ViT batches need one channel count: sources with different K are then drawn one
  source per batch; HCS keeps one random channel subset per batch.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch

from dino_boc.errors import ConfigError, InputError
from dino_boc.preprocess import to_float_tensor
from dino_boc.preprocess.channels import sample_channels
from dino_boc.preprocess.intensity import percentile_rescale
from dino_boc.train.augment import MultiCropAugmentation, MultiCropConfig
from dino_boc.train.masking import MaskingGenerator, stratified_masks
from dino_boc.train.sources import ImageSource

__all__ = [
    "Item", "SampleIndex", "Batch", "BatchBuilder", "BatchDataset", "make_loader", "rank_positions", "seeded",
    "iters_per_epoch", "to_unit_range",
]

logger = logging.getLogger(__name__)

Unit = Literal["channel", "image"]
Item = tuple[int, int, int]
"""``(source, image, channel)``; channel is -1 for whole-image items."""


def seeded(seed: int, *keys: int) -> int:
    """A 63-bit seed mixing ``seed`` and integer keys (numpy ``SeedSequence``); stable across platforms."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(k) & 0xFFFFFFFFFFFF for k in keys]])
    lo, hi = (int(w) for w in state.generate_state(2, dtype=np.uint32))
    return (lo | (hi << 32)) & ((1 << 63) - 1)


def _generator(seed: int, *keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(seeded(seed, *keys))


# tags of the random streams
_T_ORDER, _T_SOURCE, _T_CROP, _T_MASK, _T_HCS, _T_GROUP = 1, 2, 3, 4, 5, 6


def rank_positions(batch_size: int, rank: int, world_size: int) -> list[int]:
    """Positions of the global batch that rank ``rank`` takes: ``rank, rank + W, ...`` (DistributedSampler).

    Raises:
        ConfigError: ``batch_size`` not a multiple of ``world_size``.
    """
    if batch_size % world_size:
        raise ConfigError(
            f"train.batch_size={batch_size} is the GLOBAL batch size and must be a multiple of the "
            f"{world_size} processes; use e.g. train.batch_size={max(1, batch_size // world_size) * world_size}"
        )
    return list(range(rank, batch_size, world_size))


class SampleIndex:
    """Maps positions of the endless item stream to items ``(source, image, channel)``.

    Args:
        sources: the image sources.
        unit: ``"channel"`` (BoC) or ``"image"`` (HA, Channel-ViT).
        balance: ``"none"`` or ``"sources"``.
        seed: seeds the permutations.
        batch_size: global batch size (used when batches must come from one source).
        group_by_source: draw each global batch from a single source (HA / Channel-ViT sources with
            different channel counts). Default: when ``unit="image"`` and the channel counts differ.

    Raises:
        ConfigError: no sources or an empty one.
    """

    def __init__(
        self,
        sources: Sequence[ImageSource],
        *,
        unit: Unit,
        balance: str = "none",
        seed: int = 0,
        batch_size: int = 1,
        group_by_source: bool | None = None,
    ) -> None:
        if not sources:
            raise ConfigError("no data sources; set data.sources (a list of {path: ...}) or pass sources=")
        self.unit, self.balance, self.seed, self.batch_size = unit, balance, int(seed), int(batch_size)
        self.sources = list(sources)
        # items of each source: cumulative channel counts (BoC) or image counts
        self._offsets: list[np.ndarray] = []
        sizes = []
        for s in self.sources:
            ch = s.channels
            if len(ch) == 0:
                raise ConfigError(f"data source {s.name!r} has no images")
            counts = ch if unit == "channel" else np.ones_like(ch)
            self._offsets.append(np.concatenate([[0], np.cumsum(counts)]))
            sizes.append(int(counts.sum()))
        self.sizes = np.array(sizes, dtype=np.int64)
        ks = {int(k) for s in self.sources for k in np.unique(s.channels)}
        if group_by_source is None:
            group_by_source = unit == "image" and len(ks) > 1
        if group_by_source:
            for s in self.sources:
                if len(np.unique(s.channels)) > 1:
                    raise ConfigError(
                        f"source {s.name!r} mixes images with {sorted(np.unique(s.channels).tolist())} channels; "
                        "HA / Channel-ViT batches need one channel count: split it into one source per count"
                    )
        self.group_by_source = bool(group_by_source)
        self._perms: OrderedDict[tuple, np.ndarray] = OrderedDict()

    # ------------------------------------------------------------------ sizes
    @property
    def n_items(self) -> int:
        """Items over all sources (each (image, channel) pair for BoC)."""
        return int(self.sizes.sum())

    @property
    def epoch_length(self) -> int:
        """Stream positions per epoch."""
        if self.group_by_source:
            return int(self._batches_per_source().sum()) * self.batch_size
        if self.balance == "sources":
            return int(len(self.sources) * self.sizes.max())
        return self.n_items

    # ------------------------------------------------------------------ permutations
    def _perm(self, *key: int) -> np.ndarray:
        if key not in self._perms:
            n = key[-1]
            rng = np.random.Generator(np.random.PCG64(seeded(self.seed, _T_ORDER, *key[:-1])))
            self._perms[key] = rng.permutation(n)
            while len(self._perms) > 8:
                self._perms.popitem(last=False)
        return self._perms[key]

    def _source_item(self, s: int, t: int) -> int:
        """Item at position ``t`` of source ``s``'s own stream (successive permutations of its items)."""
        n = int(self.sizes[s])
        return int(self._perm(_T_SOURCE, s, t // n, n)[t % n])

    def _to_item(self, s: int, local: int) -> Item:
        off = self._offsets[s]
        image = int(np.searchsorted(off, local, side="right") - 1)
        channel = local - int(off[image]) if self.unit == "channel" else -1
        return s, image, channel

    def item(self, p: int) -> Item:
        """The item at stream position ``p`` (mixed batches)."""
        e, q = divmod(int(p), self.epoch_length)
        if self.balance == "sources":
            n_max = int(self.sizes.max())
            slot = int(self._perm(e, self.epoch_length)[q])
            s, r = divmod(slot, n_max)
            return self._to_item(s, self._source_item(s, e * n_max + r))
        flat = int(self._perm(e, self.n_items)[q])
        s = int(np.searchsorted(np.cumsum(self.sizes), flat, side="right"))
        return self._to_item(s, flat - int(self.sizes[:s].sum()))

    # ------------------------------------------------------------------ grouped batches
    def _batches_per_source(self) -> np.ndarray:
        b = np.maximum(1, self.sizes // self.batch_size)
        return np.full_like(b, b.max()) if self.balance == "sources" else b

    def _group(self, it: int) -> tuple[int, int]:
        """(source, how many batches that source gave before) of iteration ``it`` when grouped."""
        per = self._batches_per_source()
        total = int(per.sum())
        e, q = divmod(int(it), total)
        order = np.repeat(np.arange(len(per)), per)[self._perm(_T_GROUP, e, total)]
        s = int(order[q])
        return s, e * int(per[s]) + int((order[:q] == s).sum())

    def batch_items(self, it: int, positions: Sequence[int] | None = None) -> list[tuple[int, Item]]:
        """``(stream position, item)`` for the given positions (default all) of iteration ``it``'s global batch."""
        positions = range(self.batch_size) if positions is None else positions
        if self.group_by_source:
            s, c = self._group(it)
            out = []
            for j in positions:
                t = c * self.batch_size + j
                out.append((it * self.batch_size + j, self._to_item(s, self._source_item(s, t))))
            return out
        return [(it * self.batch_size + j, self.item(it * self.batch_size + j)) for j in positions]


@dataclass
class Batch:
    """One rank's share of a global batch, crop-major.

    Attributes:
        global_crops: float32 ``(G·B, K, Sg, Sg)``.
        local_crops: float32 ``(L·B, K, Sl, Sl)`` or None without local crops.
        masks: bool ``(G·B, K, N)`` iBOT masks of the global crops, or None without iBOT.
        channel_ids: int64 ``(B, K)`` Channel-ViT ids, or None.
        iteration: the iteration this batch belongs to.
        items: the ``(source, image, channel)`` of each of the B samples.
    """

    global_crops: torch.Tensor
    local_crops: torch.Tensor | None
    masks: torch.Tensor | None
    channel_ids: torch.Tensor | None
    iteration: int
    items: list[Item] = field(default_factory=list)

    @property
    def size(self) -> int:
        """B, the samples of this rank."""
        return len(self.items)

    def pin_memory(self) -> "Batch":
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return Batch(pin(self.global_crops), pin(self.local_crops), pin(self.masks), pin(self.channel_ids),
                     self.iteration, self.items)

    def to(self, device: torch.device) -> "Batch":
        mv = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(mv(self.global_crops), mv(self.local_crops), mv(self.masks), mv(self.channel_ids),
                     self.iteration, self.items)


def to_unit_range(x: torch.Tensor, mode: str, *, percentiles=(0.1, 99.9), scale: float = 255.0) -> torch.Tensor:
    """Map each channel of ``(K, H, W)`` to [0, 1] before augmentation (see ``DataConfig.intensity``)."""
    if mode == "divide":
        return x / scale
    if mode == "percentile":
        return percentile_rescale(x, percentiles[0], percentiles[1])
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


class BatchBuilder:
    """Builds :class:`Batch` objects for one rank; picklable, used inside DataLoader workers.

    Args:
        index: the sample index.
        crops: multi-crop settings.
        patch_size: model patch size (mask grid = global crop size / patch size).
        rank, world_size: this process and the number of processes.
        seed: seeds crops, masks and HCS.
        intensity, percentiles, scale: see :class:`~dino_boc.train.config.DataConfig`.
        mask_probability, mask_ratio: iBOT masking of the global crops; ``mask_probability=0`` disables.
        mask_mode: ``"shared"`` or ``"per_channel"``.
        hcs: hierarchical channel sampling per batch (image items only).
        channel_ids: build Channel-ViT ids.
    """

    def __init__(
        self,
        index: SampleIndex,
        crops: MultiCropConfig,
        *,
        patch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        intensity: str = "divide",
        percentiles: tuple[float, float] = (0.1, 99.9),
        scale: float = 255.0,
        mask_probability: float = 0.5,
        mask_ratio: tuple[float, float] = (0.1, 0.5),
        mask_mode: str = "shared",
        hcs: bool = False,
        channel_ids: bool = False,
    ) -> None:
        if crops.global_size % patch_size or crops.local_size % patch_size:
            raise ConfigError(
                f"crop sizes {crops.global_size} / {crops.local_size} must be multiples of the patch size {patch_size}"
            )
        self.index, self.crops, self.seed = index, crops, int(seed)
        self.augment = MultiCropAugmentation(crops)
        self.positions = rank_positions(index.batch_size, rank, world_size)
        self.grid = crops.global_size // patch_size
        self.intensity, self.percentiles, self.scale = intensity, percentiles, scale
        self.mask_probability, self.mask_ratio, self.mask_mode = mask_probability, mask_ratio, mask_mode
        self.hcs, self.channel_ids = hcs and index.unit == "image", channel_ids
        self.mask_generator = MaskingGenerator(self.grid)  # block limit (grid // 2) * grid, as released
        self._saturating: set[int] = set()  # sources already warned about values above ``scale``

    def _image(self, item: Item) -> tuple[torch.Tensor, np.ndarray]:
        s, i, c = item
        source = self.index.sources[s]
        arr = source.read(i)
        if c >= 0:
            arr = arr[c : c + 1]
        k = arr.shape[0]
        ids = np.asarray(source.channel_ids if source.channel_ids is not None else range(k), dtype=np.int64)
        if len(ids) != k:
            raise InputError(f"source {source.name!r}: {len(ids)} channel_ids for images with {k} channels")
        if self.intensity == "divide" and s not in self._saturating and arr.size and float(arr.max()) > self.scale:
            self._saturating.add(s)
            logger.warning(
                "source %r: pixel values up to %g exceed data.scale=%g, so with data.intensity=divide (the "
                "released /255) they saturate at 1 in the training views; for 12/16-bit or float images set "
                "data.intensity=minmax (or data.scale=65535)", source.name, float(arr.max()), self.scale,
            )
        x = to_float_tensor(arr)
        return to_unit_range(x, self.intensity, percentiles=self.percentiles, scale=self.scale), ids

    def _hcs_subset(self, it: int, k: int) -> list[int] | None:
        if not self.hcs:
            return None
        _, chosen = sample_channels(torch.arange(k), _generator(self.seed, _T_HCS, it))  # HCS, one draw per batch
        return chosen

    def masks(self, it: int, k: int) -> torch.Tensor | None:
        """bool ``(G·B, K, N)`` for this rank, drawn over the global batch (see the module docstring)."""
        if self.mask_probability <= 0:
            return None
        gb, g_crops = self.index.batch_size, self.crops.n_global
        masks, _ = stratified_masks(
            g_crops * gb, self.mask_generator, mask_probability=self.mask_probability, ratio_range=self.mask_ratio,
            order_generator=_generator(self.seed, _T_MASK, it),
            image_generator=lambda flat: _generator(self.seed, _T_MASK, it, flat + 1),
            images=[g * gb + j for g in range(g_crops) for j in self.positions],
            n_channels=k, per_channel=self.mask_mode != "shared",
        )
        return masks

    def __call__(self, it: int) -> Batch:
        """This rank's share of iteration ``it``'s global batch."""
        pairs = self.index.batch_items(it, self.positions)
        images, ids = zip(*(self._image(item) for _, item in pairs))
        ks = {im.shape[0] for im in images}
        if len(ks) > 1:
            raise InputError(f"iteration {it}: samples with {sorted(ks)} channels in one batch; split the sources")
        k = ks.pop()
        subset = self._hcs_subset(it, k)
        if subset is not None:
            images = [im[subset] for im in images]
            ids = [i[subset] for i in ids]
            k = len(subset)
        g_crops: list[list[torch.Tensor]] = [[] for _ in range(self.crops.n_global)]
        l_crops: list[list[torch.Tensor]] = [[] for _ in range(self.crops.n_local)]
        for (p, _), im in zip(pairs, images):
            mc = self.augment(im, generator=_generator(self.seed, _T_CROP, p))
            for c, t in enumerate(mc.global_crops):
                g_crops[c].append(t)
            for c, t in enumerate(mc.local_crops):
                l_crops[c].append(t)
        global_crops = torch.stack([t for crop in g_crops for t in crop])
        local_crops = torch.stack([t for crop in l_crops for t in crop]) if self.crops.n_local else None
        return Batch(
            global_crops=global_crops,
            local_crops=local_crops,
            masks=self.masks(it, k),
            channel_ids=torch.from_numpy(np.stack(ids)) if self.channel_ids else None,
            iteration=it,
            items=[item for _, item in pairs],
        )


class BatchDataset(torch.utils.data.Dataset):
    """Map-style dataset whose element ``i`` is the batch of iteration ``start + i`` (a worker builds it)."""

    def __init__(self, builder: BatchBuilder, start: int, stop: int) -> None:
        self.builder, self.start, self.stop = builder, int(start), int(stop)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> Batch:
        return self.builder(self.start + i)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _identity(x):
    return x


def make_loader(
    builder: BatchBuilder, *, start: int, stop: int, num_workers: int = 0, prefetch_factor: int = 2,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader yielding the batches of iterations ``start .. stop - 1`` in order.

    Workers each build whole batches; the loader never touches the global torch RNG (own generator), so
    the run's randomness does not depend on when it was (re)started.
    """
    kwargs = {}
    if num_workers > 0:
        kwargs = {"prefetch_factor": prefetch_factor, "persistent_workers": False, "worker_init_fn": _worker_init}
    return torch.utils.data.DataLoader(
        BatchDataset(builder, start, stop),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )


def iters_per_epoch(index: SampleIndex, batch_size: int) -> int:
    """Default epoch length in iterations: stream positions per epoch / global batch, at least 1."""
    per = index.epoch_length / batch_size
    return max(1, math.ceil(per) if index.group_by_source else int(per))

