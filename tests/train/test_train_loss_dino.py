"""DINO CLS loss against explicit loops over (teacher crop, student crop) pairs."""

from __future__ import annotations

import math

import pytest
import torch

from dino_boc.errors import InputError
from dino_boc.train.losses import DINOLoss


def _log_softmax_rows(x: torch.Tensor) -> list[list[float]]:
    out = []
    for row in x.tolist():
        top = max(row)
        lse = top + math.log(sum(math.exp(v - top) for v in row))
        out.append([v - lse for v in row])
    return out


def _dino_reference(student: torch.Tensor, teacher: torch.Tensor, student_temp: float) -> float:
    """Mean over pairs (g, c != g) of the batch-mean cross-entropy, written with Python loops."""
    n_global, n_crops = teacher.shape[0], student.shape[0]
    total, n_pairs = 0.0, 0
    for g in range(n_global):
        for c in range(n_crops):
            if c == g:
                continue
            log_p = _log_softmax_rows(student[c] / student_temp)
            ce = [-sum(t * lp for t, lp in zip(t_row, lp_row)) for t_row, lp_row in zip(teacher[g].tolist(), log_p)]
            total += sum(ce) / len(ce)
            n_pairs += 1
    return total / n_pairs


def _random_probs(shape, generator):
    return torch.softmax(torch.randn(*shape, generator=generator) * 3, dim=-1)


def test_dino_loss_matches_pair_loops():
    g = torch.Generator().manual_seed(0)
    n_global, n_local, b, p = 2, 3, 4, 6
    student = torch.randn(n_global + n_local, b, p, generator=g)
    teacher = _random_probs((n_global, b, p), g)
    loss = DINOLoss(p)(student, teacher)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(_dino_reference(student, teacher, 0.1), rel=1e-5)
    # the same crops as a list; a student temperature other than the default
    loss_list = DINOLoss(p, student_temp=0.2)(list(student), teacher)
    assert loss_list.item() == pytest.approx(_dino_reference(student, teacher, 0.2), rel=1e-5)


def test_same_crop_pairs_are_left_out():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(4, 3, 5, generator=g)
    teacher = _random_probs((2, 3, 5), g)
    loss_fn = DINOLoss(5)
    pairs = loss_fn.pair_losses(student, teacher)
    assert pairs.shape == (2, 4)
    expected = (pairs.sum() - pairs[0, 0] - pairs[1, 1]) / 6
    torch.testing.assert_close(loss_fn(student, teacher), expected)
    # changing student crop 0 moves the loss only through the pair (teacher 1, student 0)
    bumped = student.clone()
    bumped[0] += torch.randn(3, 5, generator=g)
    new_pairs = loss_fn.pair_losses(bumped, teacher)
    assert not torch.isclose(new_pairs[0, 0], pairs[0, 0])
    torch.testing.assert_close(
        loss_fn(bumped, teacher) - loss_fn(student, teacher), (new_pairs[1, 0] - pairs[1, 0]) / 6
    )


def test_dino_loss_equals_dinov2_local_plus_global_terms():
    """DINOv2 splits the same sum into a local-crops term and a global-crops term with swapped teachers."""
    g = torch.Generator().manual_seed(2)
    b, p, n_local = 3, 8, 4
    s_glob = torch.randn(2, b, p, generator=g)
    s_loc = torch.randn(n_local, b, p, generator=g)
    t = _random_probs((2, b, p), g)
    n_terms = 2 * 1 + 2 * n_local
    ce = lambda tt, ss: -(tt * torch.log_softmax(ss / 0.1, dim=-1)).sum(-1).mean()  # noqa: E731
    local = sum(ce(t[i], s_loc[j]) for j in range(n_local) for i in range(2)) / n_terms
    glob = 2 * ce(torch.cat([t[1], t[0]]), torch.cat([s_glob[0], s_glob[1]])) / n_terms
    got = DINOLoss(p)(torch.cat([s_glob, s_loc]), t)
    torch.testing.assert_close(got, local + glob)


def test_teacher_probs_centre_and_gradients():
    g = torch.Generator().manual_seed(3)
    p = 7
    loss_fn = DINOLoss(p, center_momentum=0.9)
    teacher_logits = torch.randn(2, 4, p, generator=g)
    probs = loss_fn.teacher_probs(teacher_logits, 0.04)
    assert probs.shape == (2, 4, p) and not probs.requires_grad
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4))
    torch.testing.assert_close(loss_fn.centering.center[0], 0.1 * teacher_logits.reshape(8, p).mean(0))
    student = torch.randn(6, 4, p, generator=g, requires_grad=True)
    loss_fn(student, probs).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    sk = DINOLoss(p, centering="sinkhorn_knopp").teacher_probs(list(teacher_logits), 0.07)
    torch.testing.assert_close(sk.sum(-1), torch.ones(2, 4))


def test_dino_loss_rejects_mismatched_shapes():
    loss_fn = DINOLoss(5)
    with pytest.raises(InputError, match="do not match"):
        loss_fn(torch.zeros(4, 3, 5), torch.zeros(2, 2, 5))
    with pytest.raises(InputError, match="expected \\(crops, B, P\\)"):
        loss_fn(torch.zeros(3, 5), torch.zeros(2, 3, 5))
    with pytest.raises(InputError, match="at least two crops"):
        loss_fn(torch.zeros(1, 3, 5), torch.full((1, 3, 5), 0.2))
