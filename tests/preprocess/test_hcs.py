"""Hierarchical channel sampling: m ~ U{1..K}, then m channels without replacement."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from dino_boc.errors import InputError
from dino_boc.preprocess.channels import HierarchicalChannelSampling, sample_channels


def test_sub_tensor_matches_the_indices():
    x = torch.arange(5.0)[:, None, None].expand(5, 4, 4).clone()  # channel c is filled with c
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        sub, idx = sample_channels(x, g)
        assert 1 <= len(idx) <= 5 and len(set(idx)) == len(idx) and idx == sorted(idx)
        assert sub.shape == (len(idx), 4, 4)
        assert torch.equal(sub[:, 0, 0], torch.tensor(idx, dtype=torch.float32))


def test_distribution_of_m_and_of_channels():
    k, n = 4, 4000
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(k, 2, 2)
    draws = [sample_channels(x, g)[1] for _ in range(n)]
    sizes = Counter(len(d) for d in draws)
    assert set(sizes) == {1, 2, 3, 4}
    for m in range(1, k + 1):  # uniform over 1..K: 1000 expected, sd ~27
        assert abs(sizes[m] - n / k) < 150, sizes
    # P(channel c drawn) = sum_m (1/K)(m/K) = (K+1)/(2K); same for every channel
    per_channel = Counter(c for d in draws for c in d)
    for c in range(k):
        assert abs(per_channel[c] / n - (k + 1) / (2 * k)) < 0.04, per_channel
    # among draws of size 2, every pair is equally likely (6 pairs)
    pairs = Counter(tuple(d) for d in draws if len(d) == 2)
    assert len(pairs) == 6 and max(pairs.values()) / min(pairs.values()) < 1.6


def test_reproducible_numpy_batches_and_order():
    arr = np.random.default_rng(0).random((2, 6, 3, 3)).astype(np.float32)
    a = sample_channels(arr, torch.Generator().manual_seed(5), dim=1)
    b = sample_channels(arr, torch.Generator().manual_seed(5), dim=1)
    assert a[1] == b[1] and isinstance(a[0], np.ndarray)
    np.testing.assert_array_equal(a[0], arr[:, a[1]])
    hcs = HierarchicalChannelSampling(seed=3, keep_order=False)
    orders = [hcs(arr[0])[1] for _ in range(30)]
    assert any(o != sorted(o) for o in orders)  # drawn order kept when asked
    assert [HierarchicalChannelSampling(seed=3)(arr[0])[1] for _ in range(2)] == [sorted(orders[0])] * 2


def test_single_channel_and_errors():
    sub, idx = sample_channels(torch.ones(1, 2, 2))
    assert idx == [0] and sub.shape == (1, 2, 2)
    with pytest.raises(InputError, match="0 channels"):
        sample_channels(torch.ones(0, 2, 2))
    with pytest.raises(InputError, match="dim=3"):
        sample_channels(torch.ones(2, 2, 2), dim=3)
