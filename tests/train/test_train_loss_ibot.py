"""iBOT masked-patch loss against an explicit per-image masked mean."""

from __future__ import annotations

import pytest
import torch

from dino_boc.errors import InputError
from dino_boc.train.losses import IBOTPatchLoss, masked_patch_weights
from dino_boc.train.masking import sample_masks


def _ibot_reference(student: torch.Tensor, teacher: torch.Tensor, masks: torch.Tensor, temp: float) -> float:
    """Dense (B, N, P) inputs: per image, the mean CE over its masked patches; then the mean over all B images."""
    b, n, _ = student.shape
    per_image = []
    for i in range(b):
        ces = []
        for j in range(n):
            if masks[i, j]:
                log_p = torch.log_softmax(student[i, j].double() / temp, dim=-1)
                ces.append(-(teacher[i, j].double() * log_p).sum().item())
        per_image.append(sum(ces) / len(ces) if ces else 0.0)
    return sum(per_image) / b


def test_ibot_loss_matches_per_image_masked_mean():
    g = torch.Generator().manual_seed(0)
    b, n, p = 6, 16, 5
    student = torch.randn(b, n, p, generator=g)
    teacher = torch.softmax(torch.randn(b, n, p, generator=g) * 2, dim=-1)
    masks = torch.rand(b, n, generator=g) < 0.3
    masks[0] = False  # an unmasked image still counts in the denominator
    masks[1, :] = False
    masks[1, 3] = True  # a single masked patch weighs as much as a whole image
    loss = IBOTPatchLoss(p)(student[masks], teacher[masks], masks)
    assert loss.item() == pytest.approx(_ibot_reference(student, teacher, masks, 0.1), rel=1e-5)


def test_ibot_loss_with_weights_from_the_mask_sampler():
    g = torch.Generator().manual_seed(1)
    batch = sample_masks(8, (4, 4), generator=g)
    p = 4
    student = torch.randn(8, 16, p, generator=g, requires_grad=True)
    teacher = torch.softmax(torch.randn(8, 16, p, generator=g), dim=-1)
    loss = IBOTPatchLoss(p, student_temp=0.2)(
        student[batch.masks], teacher[batch.masks], batch.masks, weights=batch.weights
    )
    assert loss.item() == pytest.approx(_ibot_reference(student.detach(), teacher, batch.masks, 0.2), rel=1e-5)
    loss.backward()
    assert (student.grad[~batch.masks] == 0).all()  # only masked patches get a gradient


def test_masked_patch_weights():
    masks = torch.tensor([[True, True, False, True], [False, False, False, False], [False, True, False, False]])
    torch.testing.assert_close(masked_patch_weights(masks), torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0]))


def test_ibot_teacher_probs_centre_is_patch_mean():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(9, 6, generator=g)
    loss_fn = IBOTPatchLoss(6, center_momentum=0.9)
    probs = loss_fn.teacher_probs(logits, 0.05)
    torch.testing.assert_close(probs.sum(-1), torch.ones(9))
    torch.testing.assert_close(loss_fn.centering.center[0], 0.1 * logits.mean(0))
    sk = IBOTPatchLoss(6, centering="sinkhorn_knopp").teacher_probs(logits, 0.05)
    torch.testing.assert_close(sk.sum(-1), torch.ones(9))


def test_ibot_rejects_misaligned_tokens():
    masks = torch.tensor([[True, False], [True, True]])
    with pytest.raises(InputError, match="tokens\\[masks\\]"):
        IBOTPatchLoss(3)(torch.zeros(2, 3), torch.zeros(2, 3), masks)
