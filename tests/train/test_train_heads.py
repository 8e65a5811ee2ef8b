"""DINO head: architecture, prototype norms (learnt as DINOv2, or fixed), forward written out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dino_boc.errors import ConfigError
from dino_boc.train.heads import DINOHead


def test_default_sizes_are_the_papers():
    head = DINOHead(64)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 2048), (2048, 2048), (2048, 256)]
    assert sum(isinstance(m, nn.GELU) for m in head.mlp) == 2
    assert head.last_layer.weight_v.shape == (65536, 256)


def test_forward_matches_hand_computation_and_fixed_norm_prototypes_have_unit_norm():
    torch.manual_seed(0)
    head = DINOHead(16, 40, hidden_dim=32, bottleneck_dim=8, learn_last_layer_norm=False)
    x = torch.randn(5, 16)
    l1, l2, l3 = (m for m in head.mlp if isinstance(m, nn.Linear))
    h = torch.nn.functional.gelu(x @ l1.weight.T + l1.bias)
    h = torch.nn.functional.gelu(h @ l2.weight.T + l2.bias)
    h = h @ l3.weight.T + l3.bias
    h = h / h.norm(dim=-1, keepdim=True)
    v = head.last_layer.weight_v
    protos = v / v.norm(dim=1, keepdim=True)
    out = head(x)
    torch.testing.assert_close(out, h @ protos.T)
    assert out.shape == (5, 40) and out.abs().max() <= 1 + 1e-6  # cosines
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(40))
    # works on token tensors of any leading shape
    assert head(torch.randn(2, 3, 16)).shape == (2, 3, 40)


def test_prototype_norms_are_trainable_and_start_at_one_by_default():
    # released dinov2/layers/dino_head.py:27-28: weight_norm(nn.Linear(..., bias=False)); weight_g.fill_(1)
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4)
    params = dict(head.named_parameters())
    assert params["last_layer.weight_g"].requires_grad and params["last_layer.weight_g"].shape == (10, 1)
    torch.testing.assert_close(params["last_layer.weight_g"].detach(), torch.ones(10, 1))
    # W = g * v / ||v|| per prototype row: compare with torch's own weight norm on the same g and v
    with torch.no_grad():
        params["last_layer.weight_g"].copy_(torch.linspace(0.5, 2.0, 10)[:, None])
    ref = torch.nn.utils.parametrizations.weight_norm(nn.Linear(4, 10, bias=False), dim=0)
    with torch.no_grad():
        ref.parametrizations.weight.original0.copy_(params["last_layer.weight_g"])
        ref.parametrizations.weight.original1.copy_(params["last_layer.weight_v"])
    z = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    torch.testing.assert_close(head.last_layer(z), ref(z))
    # and g receives a gradient
    head.last_layer(z).square().sum().backward()
    assert params["last_layer.weight_g"].grad is not None and params["last_layer.weight_g"].grad.abs().sum() > 0


def test_fixed_norm_keeps_the_same_checkpoint_keys():
    fixed = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4, learn_last_layer_norm=False)
    names = dict(fixed.named_parameters())
    assert "last_layer.weight_v" in names and "last_layer.weight_g" not in names
    assert {"last_layer.weight_g", "last_layer.weight_v"} <= set(fixed.state_dict())  # DINOv2 checkpoint keys
    torch.testing.assert_close(fixed.state_dict()["last_layer.weight_g"], torch.ones(10, 1))
    learnt = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4)
    learnt.load_state_dict(fixed.state_dict())  # same keys either way


def test_single_layer_head_and_bad_sizes():
    head = DINOHead(8, 10, n_layers=1, bottleneck_dim=4)
    assert [type(m) for m in head.mlp] == [nn.Linear]
    with pytest.raises(ConfigError, match="sizes must be >= 1"):
        DINOHead(8, 0)
