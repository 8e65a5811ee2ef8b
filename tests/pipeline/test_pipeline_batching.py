"""ShapeBatcher: one shape per forward pass, full batches, bounded buffers, every input back exactly once."""

from __future__ import annotations

import numpy as np
import torch

from dino_boc.pipeline.batching import Finished, ShapeBatcher
from dino_boc.pipeline.dataset import Loaded


class Recorder:
    """A forward function that returns, per tensor, its first pixel (so results can be traced back)."""

    def __init__(self):
        self.calls = []

    def __call__(self, tensors):
        assert len({tuple(t.shape) for t in tensors}) == 1, "a forward pass mixed shapes"
        self.calls.append((len(tensors), tuple(tensors[0].shape)))
        return [(t[0, 0, 0].item(), None, None) for t in tensors]


def make_items(rng, n):
    items = []
    for i in range(n):
        k = int(rng.choice([1, 3, 5]))
        size = int(rng.choice([8, 16]))
        parts = int(rng.integers(0, 4)) if i % 5 == 0 else 1
        t = torch.zeros(parts, k, size, size)
        t[:, 0, 0, 0] = torch.arange(parts) + 100 * i  # a tag per (input, part)
        items.append(Loaded(i, t, [f"c{j}" for j in range(k)], [{}] * parts))
    return items


def test_every_input_comes_back_once_with_its_own_results():
    rng = np.random.default_rng(0)
    forward = Recorder()
    batcher = ShapeBatcher(forward, batch_size=12, max_buffered=40)
    items = make_items(rng, 60)
    done = []
    peak = 0
    for item in items:
        done += batcher.put(item)
        peak = max(peak, batcher.buffered)
    done += batcher.flush()
    assert batcher.buffered == 0
    assert sorted(d.item.index for d in done) == list(range(60))
    for d in done:
        assert isinstance(d, Finished)
        assert [r[0] for r in d.results] == [100 * d.item.index + j for j in range(d.item.tensors.shape[0])]
    assert peak <= 40  # bounded: partial queues run once more than max_buffered channel-images wait
    for n, shape in forward.calls:
        assert n * shape[0] <= max(12, shape[0])  # at most batch_size channel-images (one image if K > 12)


def test_full_batches_run_as_soon_as_they_fill():
    forward = Recorder()
    batcher = ShapeBatcher(forward, batch_size=9)  # 3 images of 3 channels per pass
    outs = [batcher.put(Loaded(i, torch.full((1, 3, 8, 8), float(i)), ["a", "b", "c"], [{}])) for i in range(7)]
    assert [len(o) for o in outs] == [0, 0, 3, 0, 0, 3, 0]
    assert forward.calls == [(3, (3, 8, 8)), (3, (3, 8, 8))]
    assert [d.item.index for d in batcher.flush()] == [6] and forward.calls[-1] == (1, (3, 8, 8))


class PerChannel:
    """A Bag-of-Channels stand-in: per channel, its first pixel as the token (cls (1, K, 1), mean (K, 1))."""

    def __init__(self):
        self.calls = []

    def __call__(self, tensors):
        self.calls.append(sum(t.shape[0] for t in tensors))
        return [(t[:, 0, 0].numpy()[None, :, None], None, t[:, 0, 0].numpy()[:, None]) for t in tensors]


def test_an_image_with_far_more_channels_than_the_batch_is_split_and_joined_in_order():
    forward = PerChannel()
    batcher = ShapeBatcher(forward, batch_size=8, split_channels=True)
    wide = torch.zeros(2, 30, 8, 8)
    wide[:, :, 0, 0] = torch.arange(60, dtype=torch.float32).reshape(2, 30)  # a tag per (tile, channel)
    narrow = torch.zeros(1, 3, 8, 8)
    narrow[0, :, 0, 0] = torch.tensor([-1.0, -2.0, -3.0])
    done = batcher.put(Loaded(0, wide, [f"c{j}" for j in range(30)], [{}], reduce="mean"))
    done += batcher.put(Loaded(1, narrow, ["a", "b", "c"], [{}]))
    done += batcher.flush()
    assert max(forward.calls) <= 8  # no pass holds more than batch_size channel-images
    by_index = {d.item.index: d.results for d in done}
    for j in range(2):
        cls, glob, mean = by_index[0][j]
        np.testing.assert_array_equal(cls[0, :, 0], np.arange(30) + 30 * j)
        np.testing.assert_array_equal(mean[:, 0], np.arange(30) + 30 * j)
        assert glob is None
    np.testing.assert_array_equal(by_index[1][0][0][0, :, 0], [-1, -2, -3])
