"""The DINO projection head, shared by the DINO (CLS) and iBOT (patch) losses.

``D -> hidden -> hidden -> bottleneck`` MLP with GELU, L2 normalisation, then a weight-normalised linear
layer onto P prototypes. As in the released DINOv2 (``dinov2/layers/dino_head.py:27-28``) the per-prototype
norm ``g`` starts at 1 and is trained (with the last layer's lr and weight decay); ``learn_last_layer_norm=False``
fixes it at 1 instead (DINOv1's ``norm_last_layer=True``: the logits are then cosine similarities). The last
layer's parameters are named ``last_layer.weight_g`` / ``last_layer.weight_v`` as in DINOv2 checkpoints; the
optimiser recognises ``last_layer`` to give it lr 0 during the first epoch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dino_boc.errors import ConfigError

__all__ = ["DINOHead", "WeightNormLinear"]


class WeightNormLinear(nn.Module):
    """Bias-free linear layer ``W = g * v / ||v||`` (norm per output row), as ``torch.nn.utils.weight_norm``.

    Args:
        in_features: input size.
        out_features: output size (prototypes).
        learn_norm: if True (default, released DINOv2) ``g`` is a parameter initialised to 1; if False a
            buffer fixed at 1.
    """

    def __init__(self, in_features: int, out_features: int, *, learn_norm: bool = True) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # nn.Linear's default initialisation
        if learn_norm:
            self.weight_g = nn.Parameter(torch.ones(out_features, 1))
        else:  # a buffer: saved under the same key, never optimised, no mixed requires_grad for FSDP
            self.register_buffer("weight_g", torch.ones(out_features, 1))

    @property
    def weight(self) -> torch.Tensor:
        """The effective ``(out_features, in_features)`` weight."""
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., in_features)`` -> ``(..., out_features)``."""
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """DINO head: MLP (GELU), L2 normalisation, weight-normalised prototypes.

    Args:
        in_dim: token size D of the backbone.
        out_dim: number of prototypes P (65536 in the paper; a few thousand suffice for small runs).
        hidden_dim: MLP hidden size (2048).
        bottleneck_dim: size before the prototypes (256).
        n_layers: MLP layers (3); 1 means a single linear map to the bottleneck.
        learn_last_layer_norm: learn the prototype norms ``g`` (default, released DINOv2) instead of fixing
            them at 1 (DINOv1's ``norm_last_layer=True``).

    Raises:
        ConfigError: a non-positive size.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        learn_last_layer_norm: bool = True,
    ) -> None:
        super().__init__()
        sizes = {"in_dim": in_dim, "out_dim": out_dim, "hidden_dim": hidden_dim, "bottleneck_dim": bottleneck_dim}
        bad = {k: v for k, v in sizes.items() if v < 1}
        if bad or n_layers < 1:
            raise ConfigError(f"DINO head sizes must be >= 1; got {bad or {'n_layers': n_layers}}")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, learn_norm=learn_last_layer_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., D)`` tokens -> ``(..., P)`` prototype logits (``g_p`` x cosine to prototype p)."""
        x = self.mlp(x)
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12
        x = F.normalize(x, p=2, dim=-1, eps=eps)
        return self.last_layer(x)
