"""iBOT block masks: shapes, how many images are masked, ratio bounds and strata, weights, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dino_boc.errors import ConfigError
from dino_boc.train.masking import MaskingGenerator, sample_masks, stratified_masks


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_generator_masks_at_most_the_requested_patches():
    gen = MaskingGenerator((8, 10))
    assert gen.max_num_patches == 40  # half the grid
    g = _seeded(0)
    for k in (0, 4, 10, 25, 40):
        mask = gen(k, generator=g)
        assert mask.shape == (8, 10) and mask.dtype == torch.bool
        assert int(mask.sum()) <= k
        if k >= 10:
            assert int(mask.sum()) >= k // 2  # blocks of >= 4 patches fill most of the request
    assert not gen(0, generator=g).any()


def test_a_first_block_is_a_rectangle_with_bounded_aspect():
    g = _seeded(1)
    gen = MaskingGenerator(16, max_num_patches=12)
    rectangles = 0
    for _ in range(30):
        mask = gen(4, generator=g)  # mostly one block of 4 patches (1x4, 2x2, 4x1)
        rows, cols = np.nonzero(mask.numpy())
        assert 1 <= len(rows) <= 4
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        if h * w == len(rows):  # a single rectangular block
            rectangles += 1
            assert 0.25 <= h / w <= 4  # aspect in (0.3, 1 / 0.3) up to the rounding of small blocks
    assert rectangles >= 10


def test_half_of_the_images_are_masked_with_stratified_ratios():
    n_images, grid = 16, (8, 8)
    n = 64
    batch = sample_masks(n_images, grid, generator=_seeded(2))
    assert batch.masks.shape == (n_images, n) and batch.masks.dtype == torch.bool
    counts = batch.masks.sum(dim=1)
    masked = batch.ratios > 0
    assert int(masked.sum()) == n_images // 2
    assert int((counts > 0).sum()) == n_images // 2
    assert (counts[~masked] == 0).all()
    ratios = batch.ratios[masked]
    assert ((ratios >= 0.1) & (ratios <= 0.5)).all()
    assert (counts[masked] <= (n * ratios).floor()).all()
    assert (counts[masked] >= 1).all()
    # one image per stratum of linspace(0.1, 0.5, n_masked + 1)
    bounds = np.linspace(0.1, 0.5, n_images // 2 + 1)
    for i, r in enumerate(sorted(ratios.tolist())):
        assert bounds[i] - 1e-6 <= r <= bounds[i + 1] + 1e-6
    # the masked images are shuffled, not always the first half
    assert masked.tolist() != [True] * (n_images // 2) + [False] * (n_images // 2)


def test_weights_and_indices_for_the_ibot_loss():
    batch = sample_masks(10, (6, 6), mask_probability=0.5, ratio_range=(0.2, 0.4), generator=_seeded(3))
    flat = batch.masks.flatten()
    torch.testing.assert_close(batch.indices, torch.arange(flat.numel())[flat])
    assert batch.n_masked == int(flat.sum())
    expected = []
    for row in batch.masks:
        n_row = int(row.sum())
        expected += [1.0 / max(n_row, 1)] * n_row
    torch.testing.assert_close(batch.weights, torch.tensor(expected))
    assert batch.weights.sum().item() == pytest.approx(int((batch.masks.sum(1) > 0).sum()))


def test_masks_are_reproducible_with_a_seed():
    a = sample_masks(12, (7, 7), generator=_seeded(4))
    b = sample_masks(12, (7, 7), generator=_seeded(4))
    c = sample_masks(12, (7, 7), generator=_seeded(5))
    torch.testing.assert_close(a.masks, b.masks)
    torch.testing.assert_close(a.ratios, b.ratios)
    assert not torch.equal(a.masks, c.masks)


def test_other_probabilities_and_bad_settings():
    assert int((sample_masks(7, 8, mask_probability=1.0, generator=_seeded(6)).ratios > 0).sum()) == 7
    assert not sample_masks(7, 8, mask_probability=0.0, generator=_seeded(6)).masks.any()
    assert sample_masks(0, 8).masks.shape == (0, 64)
    with pytest.raises(ConfigError, match="mask_probability"):
        sample_masks(4, 8, mask_probability=1.5)
    with pytest.raises(ConfigError, match="min <= max"):
        sample_masks(4, 8, ratio_range=(0.5, 0.1))


@pytest.mark.parametrize("patch", [8, 14, 16])
@pytest.mark.parametrize("grid", [2, 3, 4, 5, 7, 13, 14])
def test_block_limit_is_the_released_floored_expression(grid, patch):
    # dinov2/train/train.py:170-173: max_num_patches=0.5 * img_size // patch_size * img_size // patch_size,
    # Python evaluates it left to right: ((0.5 * img) // p * img) // p
    img = grid * patch
    released = 0.5 * img // patch * img // patch
    assert MaskingGenerator(grid).max_num_patches == released
    if grid % 2:
        assert released < 0.5 * grid * grid  # odd grids: below half the grid (21 vs 24.5 on 7 x 7)


def test_no_block_exceeds_the_limit_on_an_odd_grid():
    gen = MaskingGenerator(7)  # limit 21
    g = _seeded(3)
    for _ in range(100):
        mask = np.zeros((7, 7), dtype=bool)
        assert gen._add_block(mask, min(49, gen.max_num_patches), g) <= 21


def test_a_ranks_share_of_the_images_equals_building_them_all():
    # what the training loader relies on: each rank builds only its images, and together they are the batch
    gen = MaskingGenerator(8)

    def build(images):
        return stratified_masks(10, gen, order_generator=_seeded(7), image_generator=lambda j: _seeded(100 + j),
                                images=images, n_channels=3, per_channel=True)

    whole, ratios = build(None)
    part, part_ratios = build([7, 2, 5])
    assert torch.equal(part, whole[[7, 2, 5]]) and torch.equal(part_ratios, ratios[[7, 2, 5]])
    assert whole.shape == (10, 3, 64) and int((ratios > 0).sum()) == 5
    assert (whole.flatten(1).any(1) == (ratios > 0)).all()
    masked = whole[ratios > 0]
    assert any(not torch.equal(m[0], m[c]) for m in masked for c in (1, 2))  # one mask per channel
