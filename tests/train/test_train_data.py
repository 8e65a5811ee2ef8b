"""Training data: BoC channel coverage, rank sharding, balanced sources, batch shapes and masks."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from train_helpers import random_images

from dino_boc.errors import ConfigError, InputError
from dino_boc.train.augment import MultiCropConfig
from dino_boc.train.data import BatchBuilder, SampleIndex, rank_positions, to_unit_range
from dino_boc.train.sources import ArraySource

CROPS = MultiCropConfig(global_size=16, local_size=8, n_local=2)


def _pairs(source: ArraySource) -> list[tuple[int, int]]:
    return [(i, c) for i in range(len(source)) for c in range(int(source.channels[i]))]


def test_boc_epoch_covers_every_image_channel_pair_exactly_once():
    src = ArraySource(random_images(7, channels=[1, 3, 2, 5, 1, 4, 2], size=8), name="mixed")
    expected = _pairs(src)  # 18 (image, channel) pairs, written out independently
    index = SampleIndex([src], unit="channel", balance="none", seed=3, batch_size=6)
    assert index.n_items == len(expected) == index.epoch_length == 18
    seen = [item for it in range(3) for _, item in index.batch_items(it)]
    assert sorted((i, c) for s, i, c in seen) == sorted(expected)
    nxt = [(i, c) for it in range(3, 6) for _, (s, i, c) in index.batch_items(it)]
    assert sorted(nxt) == sorted(expected)  # the next epoch again covers each pair once ...
    assert nxt != [(i, c) for s, i, c in seen]  # ... in a new order


def test_boc_coverage_when_the_batch_does_not_divide_the_epoch():
    src = ArraySource(random_images(5, channels=[2, 1, 3, 1, 2], size=8))
    index = SampleIndex([src], unit="channel", seed=0, batch_size=4)  # 9 pairs, batches straddle epochs
    stream = [item for it in range(5) for _, item in index.batch_items(it)]
    for epoch in range(2):
        chunk = stream[epoch * 9:(epoch + 1) * 9]
        assert sorted((i, c) for _, i, c in chunk) == sorted(_pairs(src))


def test_ranks_take_disjoint_interleaved_shares_of_the_global_batch():
    src = ArraySource(random_images(6, channels=2, size=8))
    index = SampleIndex([src], unit="channel", seed=1, batch_size=6)
    assert rank_positions(6, 0, 3) == [0, 3] and rank_positions(6, 2, 3) == [2, 5]
    whole = index.batch_items(4)
    shares = [index.batch_items(4, rank_positions(6, r, 2)) for r in range(2)]
    merged = sorted(shares[0] + shares[1])
    assert merged == sorted(whole)
    assert {p for p, _ in shares[0]}.isdisjoint({p for p, _ in shares[1]})
    with pytest.raises(ConfigError, match="multiple of the 4 processes"):
        rank_positions(6, 0, 4)


def test_balanced_sources_get_equal_shares_per_epoch():
    big = ArraySource(random_images(9, size=8), name="big")
    small = ArraySource(random_images(3, size=8, seed=1), name="small")
    index = SampleIndex([big, small], unit="channel", balance="sources", seed=0, batch_size=6)
    assert index.epoch_length == 18  # 2 sources x 9 items of the largest
    items = [item for it in range(3) for _, item in index.batch_items(it)]
    per_source = Counter(s for s, _, _ in items)
    assert per_source == {0: 9, 1: 9}
    assert sorted(i for s, i, _ in items if s == 0) == list(range(9))  # largest source: each once
    assert Counter(i for s, i, _ in items if s == 1) == {0: 3, 1: 3, 2: 3}  # smaller one cycled evenly


def test_image_items_are_grouped_by_source_when_channel_counts_differ():
    a = ArraySource(random_images(4, channels=3, size=8), name="3ch")
    b = ArraySource(random_images(6, channels=2, size=8, seed=2), name="2ch")
    index = SampleIndex([a, b], unit="image", balance="none", seed=0, batch_size=2)
    assert index.group_by_source
    sources_of = [{s for _, (s, _, _) in index.batch_items(it)} for it in range(index.epoch_length // 2)]
    assert all(len(s) == 1 for s in sources_of)
    assert Counter(next(iter(s)) for s in sources_of) == {0: 2, 1: 3}
    mixed = ArraySource(random_images(3, channels=[1, 2, 1], size=8))
    with pytest.raises(ConfigError, match="split it into one source per count"):
        SampleIndex([mixed, a], unit="image", batch_size=2)


def test_batch_shapes_masks_and_world_size_invariance():
    src = ArraySource(random_images(8, channels=2, size=20))
    index = SampleIndex([src], unit="channel", seed=5, batch_size=4)
    kw = {"patch_size": 8, "seed": 5, "mask_probability": 0.5, "mask_ratio": (0.1, 0.5)}
    whole = BatchBuilder(index, CROPS, **kw)(2)
    g, b, n = 2, 4, (16 // 8) ** 2
    assert whole.global_crops.shape == (g * b, 1, 16, 16) and whole.local_crops.shape == (2 * b, 1, 8, 8)
    assert whole.masks.shape == (g * b, 1, n) and whole.masks.dtype == torch.bool
    assert int(whole.masks.flatten(1).any(1).sum()) <= int(g * b * 0.5)
    assert whole.masks.flatten(1).sum(1).max() <= int(n * 0.5)
    # each crop is self-normalised per channel
    torch.testing.assert_close(whole.global_crops.mean(dim=(-2, -1)), torch.zeros(g * b, 1), atol=1e-4, rtol=0)
    # two ranks together build exactly the single-process batch (crops and masks), interleaved
    parts = [BatchBuilder(index, CROPS, rank=r, world_size=2, **kw)(2) for r in range(2)]
    for r, part in enumerate(parts):
        pos = rank_positions(4, r, 2)
        rows = [c * 4 + p for c in range(g) for p in pos]
        torch.testing.assert_close(part.global_crops, whole.global_crops[rows], rtol=0, atol=0)
        assert torch.equal(part.masks, whole.masks[rows])
        local_rows = [c * 4 + p for c in range(2) for p in pos]
        torch.testing.assert_close(part.local_crops, whole.local_crops[local_rows], rtol=0, atol=0)
    again = BatchBuilder(index, CROPS, **kw)(2)
    assert torch.equal(again.global_crops, whole.global_crops)  # a pure function of (seed, iteration)


def test_hcs_and_channel_ids_for_joint_models():
    src = ArraySource(random_images(6, channels=4, size=20), channel_ids=[3, 1, 0, 2])
    index = SampleIndex([src], unit="image", seed=0, batch_size=3)
    builder = BatchBuilder(index, CROPS, patch_size=8, seed=0, hcs=True, channel_ids=True, mask_mode="per_channel")
    ks = set()
    for it in range(8):
        batch = builder(it)
        k = batch.global_crops.shape[1]
        ks.add(k)
        assert batch.channel_ids.shape == (3, k)
        assert (batch.channel_ids == batch.channel_ids[:1]).all()  # one channel subset for the whole batch
        assert set(batch.channel_ids[0].tolist()) <= {0, 1, 2, 3}
        assert batch.masks.shape == (6, k, 4)
    assert len(ks) > 1  # the subset size varies between batches


def test_shared_masks_cover_the_same_patches_in_every_channel():
    src = ArraySource(random_images(4, channels=3, size=32))
    index = SampleIndex([src], unit="image", seed=0, batch_size=4)
    crops = MultiCropConfig(global_size=32, local_size=16, n_local=0)
    batch = BatchBuilder(index, crops, patch_size=8, seed=0, mask_mode="shared")(0)
    assert batch.local_crops is None
    assert torch.equal(batch.masks, batch.masks[:, :1].expand_as(batch.masks))
    assert batch.masks.any()


def test_intensity_mapping_to_unit_range():
    x = torch.tensor([[[100.0, 300.0], [200.0, 500.0]], [[7.0, 7.0], [7.0, 7.0]]])
    y = to_unit_range(x, "minmax")
    torch.testing.assert_close(y[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(y[1], torch.zeros(2, 2))  # a constant channel becomes 0
    torch.testing.assert_close(to_unit_range(x, "divide", scale=100.0), x / 100.0)
    p = to_unit_range(x[:1], "percentile", percentiles=(0.0, 100.0))
    torch.testing.assert_close(p, y[:1])


def test_released_divide_by_255_views_and_a_warning_when_values_exceed_the_scale(caplog):
    # default: x / 255 (released Div255); 16-bit values above 255 saturate, and the run says so once
    images = random_images(4, channels=1, size=24)  # uint16 up to 4000
    index = SampleIndex([ArraySource(images, name="sixteen")], unit="channel", balance="none", seed=0, batch_size=2)
    builder = BatchBuilder(index, MultiCropConfig(global_size=16, local_size=8, n_local=0), patch_size=8,
                           mask_probability=0.0)
    x, _ = builder._image((0, 0, 0))
    torch.testing.assert_close(x, torch.from_numpy(images[0].astype("float32")) / 255.0)
    with caplog.at_level("WARNING", logger="dino_boc.train.data"):
        builder._image((0, 1, 0))
        builder._image((0, 2, 0))
    warnings = [r for r in caplog.records if "exceed data.scale=255" in r.getMessage()]
    assert len(warnings) == 1 and "data.intensity=minmax" in warnings[0].getMessage()
    eight = [im // 16 for im in images]  # values <= 250: no warning
    caplog.clear()
    quiet = BatchBuilder(SampleIndex([ArraySource(eight)], unit="channel", balance="none", seed=0, batch_size=2),
                         MultiCropConfig(global_size=16, local_size=8, n_local=0), patch_size=8, mask_probability=0.0)
    with caplog.at_level("WARNING", logger="dino_boc.train.data"):
        quiet._image((0, 0, 0))
    assert not caplog.records


def test_file_sources_are_read_with_the_io_readers(tmp_path):
    import tifffile

    from dino_boc.train.config import SourceConfig
    from dino_boc.train.sources import build_source

    images = random_images(3, channels=[2, 2, 2], size=16)
    for i, im in enumerate(images):
        tifffile.imwrite(tmp_path / f"field_{i}.tif", im, photometric="minisblack")
    src = build_source(SourceConfig(path=str(tmp_path), dims="CYX"))
    assert len(src) == 3 and src.channels.tolist() == [2, 2, 2]
    for i in range(3):
        assert (src.read(i) == images[i]).all()
    index = SampleIndex([src], unit="channel", seed=0, batch_size=3)
    assert sorted((i, c) for it in range(2) for _, (_, i, c) in index.batch_items(it)) == _pairs(src)
    tifffile.imwrite(tmp_path / "field_3.tif", random_images(1, channels=3, size=16)[0], photometric="minisblack")
    src = build_source(SourceConfig(path=str(tmp_path), dims="CYX"))  # probes the first image only
    with pytest.raises(InputError, match="split images with different channel counts"):
        src.read(3)


def test_rgba_png_fields_train_as_four_channels(tmp_path):
    # issue 14 #8: a 4-stain RGBA PNG (HPA-FoV style) is four BoC items per image, as the released decoder
    iio = pytest.importorskip("imageio.v3")
    import numpy as np

    from dino_boc.train.config import SourceConfig
    from dino_boc.train.sources import build_source

    rng = np.random.default_rng(0)
    fields = [rng.integers(0, 256, size=(16, 16, 4), dtype=np.uint8) for _ in range(2)]
    for i, f in enumerate(fields):
        iio.imwrite(tmp_path / f"hpa_{i}.png", f)
    src = build_source(SourceConfig(path=str(tmp_path)))
    assert src.channels.tolist() == [4, 4]
    for i in range(2):
        assert (src.read(i) == np.moveaxis(fields[i], -1, 0)).all()
    index = SampleIndex([src], unit="channel", seed=0, batch_size=8)
    assert sorted((i, c) for _, (_, i, c) in index.batch_items(0)) == [(i, c) for i in range(2) for c in range(4)]
