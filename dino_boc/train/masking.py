"""Block-wise masks for the iBOT loss (BEiT / DINOv2 ``MaskingGenerator`` semantics).

A mask is grown from rectangular blocks of at least 4 patches with aspect ratio in (0.3, 1/0.3) until it
covers the requested number of patches (or no block fits). For a batch, a fraction ``mask_probability``
(0.5) of the global-crop images is masked; their mask ratios are stratified over ``[0.1, 0.5]`` — image i
of n draws its ratio uniformly in the i-th of n equal sub-intervals, as DINOv2's collate — and the order
of images is then shuffled. Randomness comes from a ``torch.Generator`` so a seed reproduces the masks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dino_boc.errors import ConfigError
from dino_boc.train.losses.ibot import masked_patch_weights

__all__ = ["MaskingGenerator", "MaskBatch", "sample_masks", "stratified_masks"]


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(generator: torch.Generator | None, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]`` (both inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


class MaskingGenerator:
    """Draws one block-wise mask on an ``(h, w)`` patch grid.

    Args:
        grid: patch grid ``(h, w)`` (or one int for a square grid), e.g. ``(14, 14)`` for 224 px / 16.
        max_num_patches: most patches one block may add; default ``(h // 2) * w``, the released training's
            ``0.5 * img // p * img // p`` (``dinov2/train/train.py:170-173``, evaluated left to right, so
            floored) for a square crop of ``img = h * p`` pixels: half the grid on even grids, less on odd
            ones (21 instead of 24.5 on a 7 x 7 grid).
        min_num_patches: fewest patches of a block's target area (4).
        min_aspect: smallest block aspect ratio (0.3); the largest is ``max_aspect`` or ``1 / min_aspect``.

    Raises:
        ConfigError: an empty grid or a non-positive aspect ratio.
    """

    def __init__(
        self,
        grid: tuple[int, int] | int,
        *,
        max_num_patches: float | None = None,
        min_num_patches: int = 4,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ) -> None:
        self.height, self.width = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"mask grid is {grid}; expected a positive (h, w) patch grid")
        if min_aspect <= 0 or (max_aspect is not None and max_aspect <= 0):
            raise ConfigError(f"mask aspect ratios must be > 0; got {min_aspect}, {max_aspect}")
        self.num_patches = self.height * self.width
        self.min_num_patches = min_num_patches
        self.max_num_patches = float((self.height // 2) * self.width) if max_num_patches is None else max_num_patches
        max_aspect = max_aspect or 1.0 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))

    def _add_block(self, mask: np.ndarray, max_new: float, generator: torch.Generator | None) -> int:
        """Try (10 times) to add one rectangle of new masked patches; return how many were added."""
        for _ in range(10):
            area = _uniform(generator, self.min_num_patches, max_new)
            aspect = math.exp(_uniform(generator, *self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w >= self.width or h >= self.height:
                continue
            top = _randint(generator, 0, self.height - h)
            left = _randint(generator, 0, self.width - w)
            block = mask[top : top + h, left : left + w]
            new = h * w - int(block.sum())
            if 0 < new <= max_new:
                block[...] = True
                return new
        return 0

    def __call__(self, num_masking_patches: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """A bool ``(h, w)`` mask with at most ``num_masking_patches`` True entries (fewer if no block fits)."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < num_masking_patches:
            added = self._add_block(mask, min(num_masking_patches - count, self.max_num_patches), generator)
            if added == 0:
                break
            count += added
        return torch.from_numpy(mask)


@dataclass(frozen=True)
class MaskBatch:
    """Masks of a batch of global-crop images and what the iBOT loss needs from them.

    Attributes:
        masks: bool ``(B, N)``, True = patch replaced by the mask token in the student.
        weights: float32 ``(M,)``, ``1 / n_b`` for each masked patch (row-major order of ``masks``).
        indices: long ``(M,)`` flat indices of the masked patches into ``masks.flatten()``.
        ratios: float32 ``(B,)`` requested mask ratio of each image (0 for unmasked images).
    """

    masks: torch.Tensor
    weights: torch.Tensor
    indices: torch.Tensor
    ratios: torch.Tensor

    @property
    def n_masked(self) -> int:
        """M, the number of masked patches in the batch."""
        return int(self.indices.numel())


def stratified_masks(
    n_images: int,
    mask_generator: MaskingGenerator,
    *,
    mask_probability: float = 0.5,
    ratio_range: tuple[float, float] = (0.1, 0.5),
    order_generator: torch.Generator | None = None,
    image_generator: Callable[[int], torch.Generator | None] = lambda _: None,
    images: Sequence[int] | None = None,
    n_channels: int = 1,
    per_channel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks of some of the ``n_images`` global-crop images of a global batch (DINOv2's collate).

    ``int(n_images * mask_probability)`` images are masked: a permutation drawn from ``order_generator``
    gives image j its slot; slot ``s < n_masked`` draws its ratio uniformly in the s-th of ``n_masked``
    equal sub-intervals of ``ratio_range`` and its blocks from ``image_generator(j)``. Building only
    ``images`` (a rank's share) gives the same masks as building them all.

    Args:
        n_images: global-crop images of the whole (global) batch.
        mask_generator: the block generator of the crop's patch grid (N patches).
        mask_probability: fraction of images that get a mask.
        ratio_range: ``(min, max)`` mask ratio.
        order_generator: random source of the slot permutation.
        image_generator: random source of image j's ratio and blocks.
        images: which images to build (flat indices); default all.
        n_channels: K; each image gets a ``(K, N)`` mask.
        per_channel: a mask per channel instead of one shared by the K channels.

    Returns:
        bool ``(len(images), K, N)`` masks and float32 ``(len(images),)`` ratios (0 for unmasked images).

    Raises:
        ConfigError: a probability or ratio outside [0, 1], or ``min > max``.
    """
    lo, hi = ratio_range
    if not (0.0 <= mask_probability <= 1.0 and 0.0 <= lo <= hi <= 1.0):
        raise ConfigError(
            f"mask_probability={mask_probability}, ratio_range={ratio_range}; expected values in [0, 1] with min <= max"
        )
    images = range(n_images) if images is None else images
    n_masked = int(n_images * mask_probability)
    bounds = np.linspace(lo, hi, n_masked + 1)
    slots = torch.randperm(n_images, generator=order_generator).tolist()
    n = mask_generator.num_patches
    out = torch.zeros(len(images), n_channels, n, dtype=torch.bool)
    ratios = torch.zeros(len(images), dtype=torch.float32)
    for row, j in enumerate(images):
        slot = slots[j]
        if slot >= n_masked:
            continue
        gen = image_generator(j)
        ratio = _uniform(gen, bounds[slot], bounds[slot + 1])
        ratios[row] = ratio
        for c in range(n_channels if per_channel else 1):
            out[row, c if per_channel else slice(None)] = mask_generator(int(n * ratio), generator=gen).flatten()
    return out, ratios


def sample_masks(
    n_images: int,
    grid: tuple[int, int] | int,
    *,
    mask_probability: float = 0.5,
    ratio_range: tuple[float, float] = (0.1, 0.5),
    generator: torch.Generator | None = None,
    mask_generator: MaskingGenerator | None = None,
) -> MaskBatch:
    """Masks for ``n_images`` global-crop images (G crops x B samples, crop-major, as DINOv2), with what the
    iBOT loss needs; :func:`stratified_masks` (the training loader's sampler) on one generator.

    Args:
        n_images: number of global-crop images in the batch.
        grid: patch grid ``(h, w)`` of a global crop.
        mask_probability: fraction of images that get a mask (``int(n_images * p)`` of them).
        ratio_range: ``(min, max)`` mask ratio; stratified across the masked images.
        generator: random source; seed it for reproducible masks.
        mask_generator: block generator for ``grid``; default ``MaskingGenerator(grid)``.

    Raises:
        ConfigError: a probability or ratio outside [0, 1], or ``min > max``.
    """
    gen = mask_generator if mask_generator is not None else MaskingGenerator(grid)
    masks, ratios = stratified_masks(
        n_images, gen, mask_probability=mask_probability, ratio_range=ratio_range,
        order_generator=generator, image_generator=lambda _: generator,
    )
    masks_t = masks[:, 0]
    return MaskBatch(
        masks=masks_t,
        weights=masked_patch_weights(masks_t),
        indices=masks_t.flatten().nonzero().flatten(),
        ratios=ratios,
    )
