"""Teacher centring: EMA centre and Sinkhorn-Knopp against computations written from their equations."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from dino_boc.errors import ConfigError, InputError
from dino_boc.train.losses.centering import TeacherCentering, sinkhorn_knopp


def _sinkhorn_reference(logits: np.ndarray, temp: float, n_iterations: int) -> np.ndarray:
    """Sinkhorn-Knopp with explicit loops over prototypes and samples (float64)."""
    m, p = logits.shape
    q = np.exp(logits / temp)
    q = q / q.sum()
    for _ in range(n_iterations):
        for k in range(p):  # each prototype gets total mass 1/P
            q[:, k] = q[:, k] / q[:, k].sum() / p
        for i in range(m):  # each sample gets total mass 1/M
            q[i, :] = q[i, :] / q[i, :].sum() / m
    return q * m


class _ThreadSum:
    """Sums tensors across n threads: a stand-in for all_reduce across n processes."""

    def __init__(self, n: int) -> None:
        self.barrier = threading.Barrier(n, timeout=30)  # a failing thread breaks the barrier, no hang
        self.slots: dict[int, torch.Tensor] = {}

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        me = threading.get_ident()
        self.slots[me] = t.clone()
        self.barrier.wait()
        total = sum(self.slots[k] for k in sorted(self.slots))
        self.barrier.wait()  # every thread has read the slots before any writes the next call's
        t.copy_(total)
        return t


def _run_split(fn, parts):
    """Run ``fn(part, reduce)`` in one thread per part with a shared thread-sum; return the results in order."""
    reduce = _ThreadSum(len(parts))
    out: list = [None] * len(parts)

    def work(i):
        out[i] = fn(parts[i], reduce)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(parts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_sinkhorn_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 7, generator=g)
    for n_it in (1, 3, 10):
        got = sinkhorn_knopp(logits, 0.1, n_iterations=n_it)
        ref = _sinkhorn_reference(logits.double().numpy(), 0.1, n_it)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-6)


def test_sinkhorn_marginals_uniform():
    g = torch.Generator().manual_seed(1)
    m, p = 64, 16
    q = sinkhorn_knopp(torch.randn(m, p, generator=g), 0.5, n_iterations=50)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(m))  # each sample: a distribution
    torch.testing.assert_close(q.sum(dim=0), torch.full((p,), m / p), rtol=1e-3, atol=1e-3)  # prototypes used equally
    q3 = sinkhorn_knopp(torch.randn(m, p, generator=g), 0.5)  # default 3 iterations: rows exact, columns close
    torch.testing.assert_close(q3.sum(dim=1), torch.ones(m))
    assert (q3.sum(dim=0) / (m / p) - 1).abs().max() < 0.2


def test_sinkhorn_split_over_processes_equals_whole():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(20, 9, generator=g)
    whole = sinkhorn_knopp(logits, 0.2)
    parts = _run_split(lambda x, r: sinkhorn_knopp(x, 0.2, reduce=r), [logits[:8], logits[8:]])
    torch.testing.assert_close(torch.cat(parts), whole)


def test_ema_centre_and_softmax_follow_the_equations():
    g = torch.Generator().manual_seed(3)
    x1, x2 = torch.randn(6, 5, generator=g), torch.randn(4, 5, generator=g)
    c = TeacherCentering(5, momentum=0.9)
    p1 = c(x1, 0.04)
    exp1 = torch.exp(x1 / 0.04)
    torch.testing.assert_close(p1, exp1 / exp1.sum(dim=1, keepdim=True))  # centre starts at 0
    c1 = 0.1 * x1.mean(dim=0)
    torch.testing.assert_close(c.center[0], c1)
    p2 = c(x2, 0.07)
    shifted = (x2 - c1) / 0.07
    exp2 = torch.exp(shifted - shifted.max(dim=1, keepdim=True).values)
    torch.testing.assert_close(p2, exp2 / exp2.sum(dim=1, keepdim=True))  # used the centre of the previous batch
    torch.testing.assert_close(c.center[0], 0.9 * c1 + 0.1 * x2.mean(dim=0))
    before = c.center.clone()
    c(x2, 0.07, update=False)
    torch.testing.assert_close(c.center, before)
    assert "center" in c.state_dict()


def test_centre_update_split_over_processes_uses_global_mean():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(10, 3, generator=g)
    whole = TeacherCentering(3)
    whole.update(x)

    def step(part, reduce):
        c = TeacherCentering(3, reduce=reduce)
        c.update(part)
        return c.center.clone()

    for center in _run_split(step, [x[:3], x[3:]]):  # unequal sizes: the mean is over all 10 rows
        torch.testing.assert_close(center, whole.center)


def test_empty_batch_keeps_centre():
    c = TeacherCentering(4)
    c.update(torch.ones(2, 4))
    before = c.center.clone()
    c.update(torch.zeros(0, 4))
    torch.testing.assert_close(c.center, before)


def test_centering_rejects_bad_settings_and_shapes():
    with pytest.raises(ConfigError, match="centering mode"):
        TeacherCentering(4, mode="softmax")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="momentum"):
        TeacherCentering(4, momentum=1.5)
    with pytest.raises(InputError, match="expected \\(M, 4\\)"):
        TeacherCentering(4)(torch.zeros(2, 5), 0.1)
