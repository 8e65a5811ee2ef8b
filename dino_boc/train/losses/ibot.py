"""iBOT masked-patch loss: the student predicts, at masked positions, the teacher's targets for the unmasked crop.

Only the masked patches of the global crops enter. Each crop image is weighted equally whatever the number
of its masked patches (DINOv2's per-sample weighting): a patch of image b weighs ``1 / n_b`` where ``n_b`` is
the number of masked patches of b, and the sum is divided by the number of images B (masked or not):

    L = - 1/B * sum_b 1/n_b * sum_{i masked in b} sum_p t_{b,i,p} log softmax(s_{b,i} / tau_s)_p.

Tokens are passed already gathered at the masked positions, in the row-major order of ``masks``
(``tokens[masks]`` for tokens ``(B, N, D)``), so the head only runs on the M masked patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dino_boc.errors import InputError
from dino_boc.train.losses.centering import CenteredLoss

__all__ = ["IBOTPatchLoss", "masked_patch_weights"]


def masked_patch_weights(masks: torch.Tensor) -> torch.Tensor:
    """Per-masked-patch weights ``1 / n_b`` in the order of ``masks.nonzero()``.

    Args:
        masks: bool ``(B, N)``, True where a patch is masked.

    Returns:
        float32 ``(M,)`` with M = ``masks.sum()``.
    """
    per_image = 1.0 / masks.sum(dim=-1).clamp(min=1).float()
    return per_image.unsqueeze(-1).expand_as(masks)[masks]


class IBOTPatchLoss(CenteredLoss):
    """Cross-entropy between teacher targets and student predictions on masked patches, per-image weighted.

    Args:
        out_dim: number of prototypes P of the (shared) head.
        student_temp: student softmax temperature (0.1).
        center_momentum: EMA momentum of the patch centre (0.9); separate from the DINO centre.
        centering: ``"centering"`` or ``"sinkhorn_knopp"``.
        sinkhorn_iterations: iterations of Sinkhorn-Knopp.
        reduce: sums a tensor over processes; default: torch.distributed when initialised.

    Use: ``t = loss.teacher_probs(teacher_logits[masks], teacher_temp)``, then
    ``loss(student_logits[masks], t, masks, weights=batch_weights)``.
    """

    @torch.no_grad()
    def teacher_probs(
        self, teacher_logits: torch.Tensor, teacher_temp: float, *, update_center: bool = True
    ) -> torch.Tensor:
        """Targets ``(M, P)`` float32 from the teacher logits ``(M, P)`` of the masked patches."""
        return self.centering(teacher_logits, teacher_temp, update=update_center)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_probs: torch.Tensor,
        masks: torch.Tensor,
        *,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The weighted masked-patch cross-entropy, a scalar with gradient.

        Args:
            student_logits: ``(M, P)`` student head outputs at the masked patches (``tokens[masks]`` order).
            teacher_probs: ``(M, P)`` from :meth:`teacher_probs`.
            masks: bool ``(B, N)`` of the global-crop images, M = ``masks.sum()``.
            weights: ``(M,)``; default :func:`masked_patch_weights` of ``masks``.

        Raises:
            InputError: shapes that disagree with the number of masked patches.
        """
        m = int(masks.sum())
        if student_logits.shape != teacher_probs.shape or student_logits.ndim != 2 or student_logits.shape[0] != m:
            raise InputError(
                f"iBOT inputs: student {tuple(student_logits.shape)}, teacher {tuple(teacher_probs.shape)}, "
                f"{m} masked patches; expected both (M, P) with M = masks.sum() — gather tokens with tokens[masks]"
            )
        if weights is None:
            weights = masked_patch_weights(masks)
        log_p = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        per_patch = -(teacher_probs.to(log_p.dtype) * log_p).sum(dim=-1)
        return (per_patch * weights.to(per_patch.dtype)).sum() / masks.shape[0]
