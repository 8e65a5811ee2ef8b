"""All three architectures: save/load round trips, fine-tuning, gradient checkpointing, App. K feature forms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dino_boc
from dino_boc.models.hub_format import CONFIG_NAME

D = 64
TINY = dict(embed_dim=D, depth=2, num_heads=2, patch_size=8, img_size=32, init_values=None)
EXTRA = {"boc": {}, "ha": {}, "channel_vit": {"max_channels": 4, "channel_names": ("a", "b", "c", "d")}}
NEW_PARAMS = {"boc": set(), "ha": {"channel_cls_token"}, "channel_vit": {"channel_embed"}}
ARCHS = ["boc", "ha", "channel_vit"]


def make(arch: str, seed: int = 0):
    return dino_boc.create_model(arch, seed=seed, **TINY, **EXTRA[arch])


def images(k: int = 3, b: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (b, k, 32, 32)).astype(np.uint8)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(arch, tmp_path):
    model = make(arch)
    with torch.no_grad():  # weights that differ from a fresh init of the same seed
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert meta["model"]["arch"] == arch and meta["pretrained"] is False
    loaded = dino_boc.load_model(tmp_path / "m", device="cpu")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert NEW_PARAMS[arch] <= set(dict(loaded.named_parameters()))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = images(3)
    np.testing.assert_array_equal(dino_boc.embed(x, n_last_blocks=2, model=loaded), dino_boc.embed(x, n_last_blocks=2, model=model))


@pytest.mark.parametrize("arch", ARCHS)
def test_fine_tuning_step_changes_weights(arch):
    model = make(arch).train()
    assert model.training and model.backbone.training
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(x, n_last_blocks=2)
    loss = out.patch.pow(2).mean() + sum(t.pow(2).mean() for t in (out.cls, out.global_cls) if t is not None)
    loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert NEW_PARAMS[arch] <= changed
    assert {"backbone.blocks.0.attn.qkv.weight", "backbone.patch_embed.proj.weight", "backbone.norm.weight"} <= changed
    model.eval()
    assert not model.backbone.blocks[0].training


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_checkpointing_gives_the_same_gradients(arch):
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(2))
    grads = []
    for ckpt in (False, True):
        model = make(arch).train()
        model.set_grad_checkpointing(ckpt)
        out = model(x, n_last_blocks=1)
        ref = out.global_cls if out.global_cls is not None else out.cls
        (out.patch.sum() + ref.pow(2).sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_ids_and_no_weight_decay_cover_new_parameters(arch):
    model = make(arch)
    ids = {n: model.layer_id(n) for n, _ in model.named_parameters()}
    for n in NEW_PARAMS[arch] | {"backbone.cls_token", "backbone.pos_embed", "backbone.patch_embed.proj.weight"}:
        assert ids[n] == 0, n
    assert ids["backbone.blocks.1.mlp.fc1.weight"] == 2 and ids["backbone.norm.weight"] == 3
    assert NEW_PARAMS[arch] <= model.no_weight_decay() <= set(ids)


def test_boc_reduced_feature_forms():
    """App. K: BoC CLS averaged over channels (D wide) and BoC CLS only (K·D wide), L = 1."""
    model = make("boc")
    x = images(4)
    emb = dino_boc.embed_tokens(x, n_last_blocks=1, avgpool=False, model=model)
    mean = dino_boc.embed(x, n_last_blocks=1, avgpool=False, channel_pool="mean", model=model)
    assert mean.shape == (2, D)
    np.testing.assert_allclose(mean, emb.cls[:, 0].mean(axis=1), atol=1e-6)
    assert len(dino_boc.feature_names(model, 4, n_last_blocks=1, avgpool=False, channel_pool="mean")) == D
    cls_only = dino_boc.embed(x, n_last_blocks=1, avgpool=False, model=model)
    assert cls_only.shape == (2, 4 * D)
    np.testing.assert_array_equal(cls_only, emb.cls[:, 0].reshape(2, -1))
