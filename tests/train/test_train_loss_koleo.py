"""KoLeo loss against brute-force nearest-neighbour distances."""

from __future__ import annotations

import math

import pytest
import torch

from dino_boc.errors import InputError
from dino_boc.train.losses import KoLeoLoss, koleo_loss


def _koleo_reference(x: torch.Tensor, eps: float = 1e-8) -> float:
    rows = [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in x.tolist()]
    logs = []
    for i, a in enumerate(rows):
        nearest = min(math.dist(a, b) for j, b in enumerate(rows) if j != i)
        logs.append(math.log(nearest + eps))
    return -sum(logs) / len(logs)


def test_koleo_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    for b, d in ((2, 3), (7, 5), (16, 8)):
        x = torch.randn(b, d, generator=g) * 3
        assert koleo_loss(x).item() == pytest.approx(_koleo_reference(x), rel=1e-5, abs=1e-6)
    x = torch.randn(10, 4, generator=g)
    assert KoLeoLoss()(x).item() == pytest.approx(_koleo_reference(x), rel=1e-5)


def test_koleo_is_scale_invariant_and_pushes_points_apart():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 6, generator=g)
    torch.testing.assert_close(koleo_loss(x), koleo_loss(5 * x))
    spread = torch.eye(6)  # orthogonal: nearest distance sqrt(2)
    clustered = torch.ones(6, 6) + 0.01 * torch.randn(6, 6, generator=g)
    assert koleo_loss(spread).item() == pytest.approx(-math.log(math.sqrt(2)), rel=1e-5)
    assert koleo_loss(clustered) > koleo_loss(spread)


def test_koleo_duplicates_stay_finite_with_gradient():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = koleo_loss(x)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_koleo_needs_two_vectors():
    with pytest.raises(InputError, match="B >= 2"):
        koleo_loss(torch.zeros(1, 4))
