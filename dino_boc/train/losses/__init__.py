"""DINOv2 training losses: DINO (CLS), iBOT (masked patches), KoLeo, and the shared teacher centring.

Each loss takes its inputs explicitly and returns a scalar; none calls ``backward`` or hard-wires an
all-reduce (a ``reduce`` hook, defaulting to torch.distributed when initialised, sums the centring
statistics across processes).
"""

from __future__ import annotations

from dino_boc.train.losses.centering import TeacherCentering, all_reduce_sum, sinkhorn_knopp
from dino_boc.train.losses.dino import DINOLoss
from dino_boc.train.losses.ibot import IBOTPatchLoss, masked_patch_weights
from dino_boc.train.losses.koleo import KoLeoLoss, koleo_loss

__all__ = [
    "DINOLoss",
    "IBOTPatchLoss",
    "KoLeoLoss",
    "TeacherCentering",
    "all_reduce_sum",
    "koleo_loss",
    "masked_patch_weights",
    "sinkhorn_knopp",
]
