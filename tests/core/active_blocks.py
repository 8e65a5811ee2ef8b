"""Shared by the core and weights tests: make a tiny model's blocks matter."""

from __future__ import annotations

import torch


def with_active_blocks(model):
    """Set every LayerScale gamma to seeded values in [0.5, 1.5] (in place; returns the model).

    At their initial 1e-5 the blocks barely change the tokens, and a comparison of features could not
    tell a wrong attention or MLP from a right one.
    """
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for blk in model.backbone.blocks:
            for ls in (blk.ls1, blk.ls2):
                ls.gamma.copy_(0.5 + torch.rand(ls.gamma.shape, generator=gen))
    return model
