"""Parameter groups on a small timm ViT: lr decay per layer, patch-embed multiplier, weight-decay exclusions."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from dino_boc.errors import ConfigError
from dino_boc.train.heads import DINOHead
from dino_boc.train.optim import apply_schedules, build_optimizer, layer_id, param_groups

DEPTH = 3


def _vit() -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=32, patch_size=8, in_chans=1, embed_dim=32, depth=DEPTH, num_heads=2, init_values=1e-5, num_classes=0
    )
    vit.mask_token = nn.Parameter(torch.zeros(1, 32))  # as the DINOv2 backbone
    return vit


def _student() -> nn.ModuleDict:
    return nn.ModuleDict({"backbone": _vit(), "dino_head": DINOHead(32, 50, hidden_dim=16, bottleneck_dim=8)})


def _expected(name: str, param: torch.Tensor, rule: str) -> tuple[float, float, bool]:
    """(lr multiplier, wd multiplier, last layer) from the rules, written independently of the module."""
    short = name.removeprefix("backbone.")
    if short.startswith(("patch_embed.", "cls_token", "pos_embed", "mask_token")):
        layer = 0
    elif short.startswith("blocks."):
        layer = int(short.split(".")[1]) + 1
    else:  # final norm, heads
        layer = DEPTH + 1
    lr = 0.9 ** (DEPTH + 1 - layer) * (0.2 if short.startswith("patch_embed.") else 1.0)
    if rule == "dinov2":  # released dinov2/utils/param_groups.py:80, word for word
        no_decay = name.endswith(".bias") or "norm" in name or "gamma" in name
    else:
        no_decay = param.ndim == 1 or short in ("cls_token", "pos_embed", "mask_token")
    return lr, 0.0 if no_decay else 1.0, "last_layer" in name


def _by_name(groups: list[dict]) -> dict[str, tuple[float, float, bool]]:
    out = {}
    for g in groups:
        for n in g["names"]:
            assert n not in out
            out[n] = (g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"])
    return out


@pytest.mark.parametrize("rule", ["dinov2", "timm"])
@pytest.mark.parametrize("make", [_vit, _student], ids=["vit", "student"])
def test_multipliers_per_parameter(make, rule):
    model = make()
    got = _by_name(param_groups(model, weight_decay_rule=rule))
    params = dict(model.named_parameters())
    assert set(got) == set(params)
    for name, p in params.items():
        lr, wd, last = _expected(name, p, rule)
        assert got[name][0] == pytest.approx(lr), name
        assert got[name][1:] == (wd, last), name


def test_some_named_multipliers():
    got = _by_name(param_groups(_student()))
    assert got["backbone.blocks.2.attn.qkv.weight"] == (pytest.approx(0.9), 1.0, False)
    assert got["backbone.blocks.0.ls1.gamma"] == (pytest.approx(0.9**3), 0.0, False)
    assert got["backbone.patch_embed.proj.weight"] == (pytest.approx(0.9**4 * 0.2), 1.0, False)
    # released default: the tokens are decayed; the learnt prototype norms sit with the last layer, decayed
    for token in ("pos_embed", "cls_token", "mask_token"):
        assert got[f"backbone.{token}"] == (pytest.approx(0.9**4), 1.0, False)
    assert got["dino_head.last_layer.weight_v"] == (pytest.approx(1.0), 1.0, True)
    assert got["dino_head.last_layer.weight_g"] == (pytest.approx(1.0), 1.0, True)
    assert got["dino_head.mlp.0.bias"] == (pytest.approx(1.0), 0.0, False)
    assert got["backbone.norm.weight"][1] == got["backbone.blocks.0.norm1.weight"][1] == 0.0
    timm = _by_name(param_groups(_student(), weight_decay_rule="timm"))
    assert timm["backbone.pos_embed"][1] == timm["backbone.cls_token"][1] == timm["backbone.mask_token"][1] == 0.0
    with pytest.raises(ConfigError, match="weight_decay_rule"):
        param_groups(_student(), weight_decay_rule="deit")


def test_layer_ids_and_frozen_parameters():
    assert layer_id("backbone.blocks.11.mlp.fc1.weight", 24) == 12
    assert layer_id("cls_token", 24) == 0 and layer_id("norm.weight", 24) == 25
    model = _vit()
    model.blocks[0].requires_grad_(False)
    names = {n for g in param_groups(model) for n in g["names"]}
    assert not any(n.startswith("blocks.0.") for n in names)
    # no decay at all when lr_decay is 1
    assert {g["lr_multiplier"] for g in param_groups(model, lr_decay=1.0, patch_embed_lr_mult=1.0)} == {1.0}
    with pytest.raises(ConfigError, match="lr_decay"):
        param_groups(model, lr_decay=1.5)


def test_apply_schedules_and_frozen_last_layer():
    model = _student()
    opt = build_optimizer(model)
    apply_schedules(opt, lr=1e-3, wd=0.04, last_layer_lr=0.0)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx((0.0 if g["is_last_layer"] else 1e-3) * g["lr_multiplier"])
        assert g["weight_decay"] == pytest.approx(0.04 * g["wd_multiplier"])
    last = model["dino_head"].last_layer.weight_v.detach().clone()
    qkv = model["backbone"].blocks[0].attn.qkv.weight.detach().clone()
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    model["dino_head"](model["backbone"](x)).square().mean().backward()
    opt.step()
    torch.testing.assert_close(model["dino_head"].last_layer.weight_v, last)  # lr 0 while frozen
    assert not torch.equal(model["backbone"].blocks[0].attn.qkv.weight, qkv)


def test_names_listed_by_no_weight_decay_are_not_decayed():
    class WithTable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.zeros(4, 8))
            self.proj = nn.Linear(8, 8)

        def no_weight_decay(self) -> set[str]:
            return {"table"}

    model = nn.ModuleDict({"inner": WithTable()})
    got = _by_name(param_groups(model, weight_decay_rule="timm"))
    assert got["inner.table"][1] == 0.0 and got["inner.proj.weight"][1] == 1.0
    assert _by_name(param_groups(model))["inner.table"][1] == 1.0  # the released rule ignores the list


def test_one_layer_rule_for_models_optimiser_and_ha_channel_cls():
    # every learned input token is layer 0 (DINOv2's get_vit_lr_decay_rate, timm's stem): HA's channel CLS too
    import dino_boc

    ha = dino_boc.create_model("ha", seed=0, embed_dim=32, depth=3, num_heads=2, patch_size=8, img_size=32)
    assert layer_id("backbone.channel_cls_token", 3) == 0 == ha.layer_id("channel_cls_token")
    decay = 0.5
    groups = param_groups(nn.ModuleDict({"backbone": ha}), lr_decay=decay, num_layers=3)
    mult = {n: g["lr_multiplier"] for g in groups for n in g["names"]}
    for name, _ in ha.named_parameters():
        parts = name.split(".")
        expected_layer = (0 if any(p.endswith(("cls_token", "pos_embed", "mask_token")) or p == "patch_embed" for p in parts)
                          else int(parts[2]) + 1 if parts[:2] == ["backbone", "blocks"] else 4)
        expected = decay ** (4 - expected_layer) * (0.2 if "patch_embed" in parts else 1.0)
        assert mult["backbone." + name] == pytest.approx(expected), name
