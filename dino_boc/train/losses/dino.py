"""DINO loss on the CLS token: cross-entropy between teacher targets and student predictions across crops.

Every global crop seen by the teacher is a target for every crop seen by the student (the G global crops
first, then the local crops), except the student's view of the *same* crop. With G = 2 global and 8 local
crops that is ``2 * 10 - 2 = 18`` pairs; the loss is the mean over pairs of the batch-mean cross-entropy

    L = 1 / |pairs| * sum_{(g, c), c != g} mean_b [ - sum_p t_{g,b,p} log softmax(s_{c,b} / tau_s)_p ],

which is DINOv2's ``dino_local_crops_loss + dino_global_crops_loss``. The teacher targets come from
:class:`~dino_boc.train.losses.centering.TeacherCentering` (EMA centre or Sinkhorn-Knopp).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from dino_boc.errors import InputError
from dino_boc.train.losses.centering import CenteredLoss

__all__ = ["DINOLoss"]


def _stack_crops(x: torch.Tensor | Sequence[torch.Tensor], what: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.stack(list(x))
    if t.ndim != 3:
        raise InputError(
            f"{what} has shape {tuple(t.shape)}; expected (crops, B, P) or a list of (B, P) tensors, one per crop"
        )
    return t


class DINOLoss(CenteredLoss):
    """DINO cross-entropy over (global teacher crop, student crop) pairs, excluding same-crop pairs.

    Args:
        out_dim: number of prototypes P of the head.
        student_temp: student softmax temperature (0.1).
        center_momentum: EMA momentum of the teacher centre (0.9).
        centering: ``"centering"`` (EMA centre + softmax) or ``"sinkhorn_knopp"``.
        sinkhorn_iterations: iterations of Sinkhorn-Knopp.
        reduce: sums a tensor over processes (for the centre / Sinkhorn); default: torch.distributed
            when initialised, else nothing.

    Use: ``t = loss.teacher_probs(teacher_logits, teacher_temp)`` once per step (no gradient, updates the
    centre), then ``loss(student_logits, t)``. If the loss stalls at ``log(P)`` the teacher has collapsed
    to uniform: lower the teacher temperature or check the centre momentum.
    """

    @torch.no_grad()
    def teacher_probs(
        self, teacher_logits: torch.Tensor | Sequence[torch.Tensor], teacher_temp: float, *, update_center: bool = True
    ) -> torch.Tensor:
        """Targets from the teacher's global-crop logits.

        Args:
            teacher_logits: ``(G, B, P)`` or a list of G tensors ``(B, P)``, crop-major.
            teacher_temp: teacher temperature (0.04 -> 0.07 over the warm-up).
            update_center: move the EMA centre towards this batch (``"centering"`` mode).

        Returns:
            float32 ``(G, B, P)``, each row a distribution over prototypes.
        """
        t = _stack_crops(teacher_logits, "teacher_logits")
        g, b, p = t.shape
        probs = self.centering(t.reshape(g * b, p), teacher_temp, update=update_center)
        return probs.reshape(g, b, p)

    def pair_losses(
        self, student_logits: torch.Tensor | Sequence[torch.Tensor], teacher_probs: torch.Tensor
    ) -> torch.Tensor:
        """Batch-mean cross-entropy of every (teacher crop g, student crop c) pair.

        Args:
            student_logits: ``(C, B, P)`` or a list of C tensors ``(B, P)``; the first G are the global
                crops in the teacher's order, then the local crops.
            teacher_probs: ``(G, B, P)`` from :meth:`teacher_probs`.

        Returns:
            ``(G, C)``; entry ``(g, g)`` is the same-crop pair, which :meth:`forward` leaves out.
        """
        s = _stack_crops(student_logits, "student_logits")
        if teacher_probs.ndim != 3 or s.shape[1:] != teacher_probs.shape[1:] or s.shape[0] < teacher_probs.shape[0]:
            raise InputError(
                f"student logits {tuple(s.shape)} and teacher targets {tuple(teacher_probs.shape)} do not match; "
                "expected (C, B, P) and (G, B, P) with C >= G (global crops first in both)"
            )
        log_p = F.log_softmax(s.float() / self.student_temp, dim=-1)
        return -torch.einsum("gbp,cbp->gc", teacher_probs.to(log_p.dtype), log_p) / s.shape[1]

    def forward(
        self, student_logits: torch.Tensor | Sequence[torch.Tensor], teacher_probs: torch.Tensor
    ) -> torch.Tensor:
        """Mean over the ``G * C - G`` cross-crop pairs of :meth:`pair_losses`; a scalar with gradient.

        Args:
            student_logits: ``(C, B, P)`` or a list of C tensors ``(B, P)``, global crops first.
            teacher_probs: ``(G, B, P)``.
        """
        pairs = self.pair_losses(student_logits, teacher_probs)
        g, c = pairs.shape
        keep = ~torch.eye(g, c, dtype=torch.bool, device=pairs.device)
        n_pairs = g * c - g
        if n_pairs == 0:
            raise InputError("the DINO loss needs at least two crops (one teacher crop and one other student crop)")
        return pairs[keep].sum() / n_pairs
