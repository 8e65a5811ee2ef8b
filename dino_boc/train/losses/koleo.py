"""KoLeo regulariser (Kozachenko-Leonenko entropy estimator; Sablayrolles et al., 2019).

Spreads the L2-normalised student CLS tokens of a batch apart: ``L = - mean_i log(min_{j != i} ||x_i - x_j||)``.
DINOv2 applies it to each global crop's batch separately (not across two crops of the same image) and
weighs it by 0.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dino_boc.errors import InputError

__all__ = ["KoLeoLoss", "koleo_loss"]


def koleo_loss(x: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo loss of a batch of vectors.

    Args:
        x: ``(B, D)`` features (e.g. student CLS tokens of one global crop); normalised to unit length here.
        eps: added inside the distance and the log so that duplicate vectors give a finite loss.

    Returns:
        Scalar ``- mean_b log(d_b + eps)`` with ``d_b`` the distance from ``x_b`` to its nearest neighbour.

    Raises:
        InputError: fewer than 2 vectors, or not 2-D.
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"KoLeo needs a (B, D) batch with B >= 2; got shape {tuple(x.shape)} — use a batch of >= 2")
    with torch.autocast(device_type=x.device.type, enabled=False):
        z = F.normalize(x.float(), p=2, dim=-1, eps=eps)
        with torch.no_grad():
            dots = z @ z.t()
            dots.fill_diagonal_(-2.0)  # below any cosine: never one's own neighbour
            nearest = dots.argmax(dim=1)
        dist = F.pairwise_distance(z, z[nearest], p=2, eps=eps)
        return -torch.log(dist + eps).mean()


class KoLeoLoss(nn.Module):
    """Module form of :func:`koleo_loss` (no state)."""

    def __init__(self, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, D)``; returns the scalar KoLeo loss."""
        return koleo_loss(x, eps=self.eps)
