"""Teacher centring for the DINO and iBOT losses, written once: EMA centre and Sinkhorn-Knopp.

The teacher's head outputs (logits over P prototypes) become target distributions in one of two ways:

* ``"centering"`` (DINO): subtract an exponential moving average of the mean teacher logit, divide by the
  teacher temperature, softmax. The centre is updated *after* it is used, with the mean of the batch
  (over every process when a reduce hook is given or torch.distributed is initialised).
* ``"sinkhorn_knopp"`` (SwAV / DINOv2 option): a few Sinkhorn-Knopp iterations turn ``exp(logits / T)``
  into an assignment whose rows sum to 1 and whose prototypes are used roughly equally across the batch.

Distributed training only needs sums across processes, so both take a ``reduce`` hook: a function that
sums a tensor over processes and returns it (in place is fine). The default, :func:`all_reduce_sum`,
calls ``torch.distributed.all_reduce`` only when a process group is initialised, else does nothing.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dino_boc.errors import ConfigError, InputError

__all__ = ["Reduce", "CenteringMode", "all_reduce_sum", "sinkhorn_knopp", "TeacherCentering", "CenteredLoss"]

Reduce = Callable[[torch.Tensor], torch.Tensor]
"""Sums a tensor over processes and returns the sum (the identity on one process)."""

CenteringMode = Literal["centering", "sinkhorn_knopp"]
CENTERING_MODES: tuple[str, ...] = ("centering", "sinkhorn_knopp")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes in place when torch.distributed is initialised; return it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def sinkhorn_knopp(
    logits: torch.Tensor,
    teacher_temp: float,
    *,
    n_iterations: int = 3,
    reduce: Reduce | None = None,
) -> torch.Tensor:
    """Sinkhorn-Knopp normalisation of teacher logits into soft assignments.

    Starting from ``Q = exp(logits / teacher_temp)``, alternately rescales every prototype's total mass to
    ``1/P`` and every sample's to ``1/M`` (M summed over processes), and returns ``M * Q``: each row sums
    to 1 and, as the iterations go, each prototype receives about ``M/P`` of the total mass.

    Args:
        logits: teacher head outputs ``(M, P)``: M samples (CLS tokens or masked patches) on this process.
        teacher_temp: temperature dividing the logits before ``exp``.
        n_iterations: number of row+column rescalings (3 in DINOv2).
        reduce: sums a tensor over processes; defaults to :func:`all_reduce_sum`.

    Returns:
        float32 ``(M, P)``, rows summing to 1.
    """
    reduce = all_reduce_sum if reduce is None else reduce
    q = torch.exp(logits.float() / teacher_temp).t()  # (P, M)
    n_protos = q.shape[0]
    n_samples = reduce(torch.tensor(float(q.shape[1]), device=q.device))
    q = q / reduce(q.sum())
    for _ in range(n_iterations):
        q = q / reduce(q.sum(dim=1, keepdim=True)) / n_protos  # each prototype: mass 1/P
        q = q / q.sum(dim=0, keepdim=True) / n_samples  # each sample: mass 1/M
    return (q * n_samples).t()


class TeacherCentering(nn.Module):
    """Turns teacher logits into target distributions: EMA centring + softmax, or Sinkhorn-Knopp.

    One instance per loss (DINO and iBOT keep separate centres). The centre is a persistent buffer, so it
    is saved and restored with the loss module's ``state_dict``.

    Args:
        out_dim: number of prototypes P.
        mode: ``"centering"`` or ``"sinkhorn_knopp"``.
        momentum: EMA momentum of the centre (0.9 in DINOv2): ``c <- m c + (1 - m) mean(logits)``.
        sinkhorn_iterations: iterations for ``"sinkhorn_knopp"``.
        reduce: sums a tensor over processes; defaults to :func:`all_reduce_sum`.

    Raises:
        ConfigError: unknown mode, momentum outside [0, 1] or out_dim < 1.
    """

    def __init__(
        self,
        out_dim: int,
        *,
        mode: CenteringMode = "centering",
        momentum: float = 0.9,
        sinkhorn_iterations: int = 3,
        reduce: Reduce | None = None,
    ) -> None:
        super().__init__()
        if mode not in CENTERING_MODES:
            raise ConfigError(f"centering mode {mode!r} is unknown; expected one of {CENTERING_MODES}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"center momentum is {momentum}; expected a value in [0, 1] (DINOv2 uses 0.9)")
        if out_dim < 1:
            raise ConfigError(f"out_dim is {out_dim}; expected the number of prototypes (>= 1)")
        self.mode = mode
        self.momentum = float(momentum)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.reduce = all_reduce_sum if reduce is None else reduce
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def forward(self, logits: torch.Tensor, teacher_temp: float, *, update: bool = True) -> torch.Tensor:
        """Target distributions for teacher logits ``(M, P)``; returns float32 ``(M, P)`` rows summing to 1.

        In ``"centering"`` mode the current centre is used, then (``update=True``) moved towards the batch
        mean. Sinkhorn-Knopp keeps no state.
        """
        if logits.ndim != 2 or logits.shape[1] != self.center.shape[1]:
            raise InputError(
                f"teacher logits have shape {tuple(logits.shape)}; expected (M, {self.center.shape[1]}) — "
                "flatten crops and batch into M before centring"
            )
        if self.mode == "sinkhorn_knopp":
            return sinkhorn_knopp(logits, teacher_temp, n_iterations=self.sinkhorn_iterations, reduce=self.reduce)
        probs = F.softmax((logits.float() - self.center) / teacher_temp, dim=-1)
        if update:
            self.update(logits)
        return probs

    @torch.no_grad()
    def update(self, logits: torch.Tensor) -> None:
        """Move the centre towards the mean of ``logits`` ``(M, P)`` over all processes (skip if M = 0 everywhere)."""
        stats = torch.cat([logits.float().sum(dim=0), logits.new_full((1,), logits.shape[0], dtype=torch.float32)])
        stats = self.reduce(stats)
        count = stats[-1]
        batch_center = (stats[:-1] / count.clamp(min=1.0)).unsqueeze(0)
        # no device sync: an empty batch (count 0 on every process) leaves the centre unchanged
        m = torch.where(count > 0, self.momentum, 1.0).to(self.center.dtype)
        self.center.copy_(self.center * m + batch_center * (1.0 - m))


class CenteredLoss(nn.Module):
    """Base of the DINO and iBOT losses: a student temperature and a :class:`TeacherCentering`.

    Args:
        out_dim: P, the number of prototypes.
        student_temp: temperature of the student softmax.
        center_momentum: EMA momentum of the centre (``centering="centering"``).
        centering: ``"centering"`` or ``"sinkhorn_knopp"``.
        sinkhorn_iterations: iterations of Sinkhorn-Knopp.
        reduce: sums over processes; default :func:`all_reduce_sum`.
    """

    def __init__(
        self,
        out_dim: int,
        *,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: CenteringMode = "centering",
        sinkhorn_iterations: int = 3,
        reduce: Reduce | None = None,
    ) -> None:
        super().__init__()
        self.student_temp = float(student_temp)
        self.centering = TeacherCentering(
            out_dim, mode=centering, momentum=center_momentum, sinkhorn_iterations=sinkhorn_iterations, reduce=reduce
        )
