"""Stochastic depth: the same rate on every block (DINOv2's ``drop_path_uniform: true``) or timm's ramp."""

from __future__ import annotations

import pytest
import torch

from dino_boc.models import ModelConfig, build_model

TINY = dict(embed_dim=32, depth=4, num_heads=2, patch_size=8, img_size=16, init_values=0.1)


def _rates(model) -> list[tuple[float, float]]:
    return [
        (getattr(b.drop_path1, "drop_prob", 0.0), getattr(b.drop_path2, "drop_prob", 0.0))
        for b in model.backbone.blocks
    ]


@pytest.mark.parametrize("arch", ["boc", "ha"])
def test_uniform_by_default_linear_on_request(arch):
    uniform = build_model(ModelConfig(arch=arch, drop_path_rate=0.2, **TINY))
    assert ModelConfig().drop_path_uniform
    assert _rates(uniform) == [(pytest.approx(0.2), pytest.approx(0.2))] * 4
    ramp = build_model(ModelConfig(arch=arch, drop_path_rate=0.2, drop_path_uniform=False, **TINY))
    want = [0.2 * i / 3 for i in range(4)]  # linspace(0, rate, L)
    assert [r[0] for r in _rates(ramp)] == pytest.approx(want) and [r[1] for r in _rates(ramp)] == pytest.approx(want)
    none = build_model(ModelConfig(arch=arch, drop_path_rate=0.0, **TINY))
    assert _rates(none) == [(0.0, 0.0)] * 4


def test_every_block_drops_its_residuals_at_the_same_rate():
    # rate 1: a dropped residual branch leaves the block's input unchanged. Uniform: every block, the first
    # included, is the identity in training; the linear ramp keeps block 0 at rate 0.
    torch.manual_seed(0)
    x = torch.randn(3, 5, 32)
    uniform = build_model(ModelConfig(drop_path_rate=1.0, **TINY)).train()
    ramp = build_model(ModelConfig(drop_path_rate=1.0, drop_path_uniform=False, **TINY)).train()
    for blk in uniform.backbone.blocks:
        torch.testing.assert_close(blk(x), x, rtol=0, atol=0)
    assert not torch.allclose(ramp.backbone.blocks[0](x), x)
    torch.testing.assert_close(ramp.backbone.blocks[-1](x), x, rtol=0, atol=0)
    uniform.eval()
    assert not torch.allclose(uniform.backbone.blocks[0](x), x)  # inference never drops


def test_the_rule_does_not_change_inference_or_saved_weights():
    torch.manual_seed(0)
    a = build_model(ModelConfig(drop_path_rate=0.1, **TINY)).eval()
    torch.manual_seed(0)
    b = build_model(ModelConfig(drop_path_rate=0.1, drop_path_uniform=False, **TINY)).eval()
    assert a.state_dict().keys() == b.state_dict().keys()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(a.backbone.forward_features(x), b.backbone.forward_features(x))
