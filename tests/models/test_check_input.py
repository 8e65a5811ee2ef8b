"""One input check (EmbeddingModel._check_input) for every family: the iBOT masks shape (B, K, N)."""

from __future__ import annotations

import pytest
import torch

from dino_boc.errors import InputError
from dino_boc.models import create_model

SMALL = dict(embed_dim=32, depth=2, num_heads=2, patch_size=8, img_size=32)
FAMILIES = {
    "boc": {},
    "ha": {},
    "channel_vit": {"max_channels": 4},
    "fixed": {"in_chans": 3, "channel_names": ("a", "b", "c")},
}


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_masks_of_another_shape_are_refused_by_every_family(arch):
    model = create_model(arch, seed=0, **SMALL, **FAMILIES[arch])
    x = torch.randn(2, 3, 32, 16)  # N = 4 x 2 = 8 patches per channel
    for bad in (torch.zeros(2, 3, 9, dtype=torch.bool), torch.zeros(2, 8, dtype=torch.bool),
                torch.zeros(2, 3, 4, 2, dtype=torch.bool)):
        with pytest.raises(InputError, match=r"masks has shape .*; expected \(B, K, N\) = \(2, 3, 8\)"):
            model.forward_tokens(x, masks=bad)
    masks = torch.zeros(2, 3, 8, dtype=torch.bool)
    masks[:, :, :4] = True
    with torch.no_grad():
        plain, masked = model.forward_tokens(x), model.forward_tokens(x, masks=masks)
    assert plain.patch.shape == masked.patch.shape and not torch.allclose(plain.patch, masked.patch)
