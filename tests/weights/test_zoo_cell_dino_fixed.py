"""Cell-DINO fixed-channel releases (``cell_dino_hpa_vitl16`` & co.): a tiny random checkpoint in the
release layout (chunked DINOv2 backbone keys with ``mask_token``, ``in_chans=4``) added under the registry
name, then its features against the released linear-evaluation recipe written here with a plain timm ViT:
÷255 -> centre crop 384 zero-padded -> per-channel self-normalisation -> CLS of the last 4 blocks + mean
patch token; channels given by name in any order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

import dino_boc
from dino_boc.errors import ChannelError
from dino_boc.models.config import ModelConfig
from dino_boc.weights.registry import HPA_CHANNELS, REGISTRY

from .conftest import chunk_keys

NAME = "cell-dino-hpa-vitl16"
D, DEPTH, PATCH, CROP = 128, 4, 8, 384


def release_vit() -> VisionTransformer:
    torch.manual_seed(0)
    net = VisionTransformer(img_size=32, patch_size=PATCH, in_chans=4, embed_dim=D, depth=DEPTH, num_heads=2,
                            init_values=1e-5, num_classes=0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net.eval()


def released_features(net: VisionTransformer, img_model_order: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(img_model_order.astype(np.float32)) / 255
    _, h, w = x.shape
    top, left = (CROP - h) // 2, (CROP - w) // 2
    x = F.pad(x, (left, CROP - w - left, top, CROP - h - top))  # CenterCrop(384) pads a smaller image
    x = (x - x.mean((-2, -1), keepdim=True)) / (x.std((-2, -1), unbiased=False, keepdim=True) + 1e-7)
    # DINOv2's interpolate_pos_encoding: scale_factor (48 + 0.1) / 4, bicubic, no antialias
    grid = net.pos_embed[:, 1:].reshape(1, 4, 4, D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(48.1 / 4, 48.1 / 4), mode="bicubic", antialias=False)
    pos = torch.cat([net.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 48 * 48, D)], 1)
    with torch.no_grad():
        t = net.patch_embed.proj(x[None]).flatten(2).transpose(1, 2)
        t = torch.cat([net.cls_token, t], 1) + pos
        outs = []
        for blk in net.blocks:
            t = blk(t)
            outs.append(net.norm(t))
        last4 = outs[-4:]
        feats = [o[:, 0] for o in last4] + [last4[-1][:, 1:].mean(1)]  # create_linear_input(avgpool=True)
    return torch.cat(feats, dim=-1)[0].numpy()


@pytest.fixture
def registered(tmp_path, monkeypatch):
    monkeypatch.setenv("DINO_BOC_CACHE", str(tmp_path / "cache"))
    real = REGISTRY[NAME]
    tiny = ModelConfig(arch="fixed", in_chans=4, channel_names=HPA_CHANNELS, embed_dim=D, depth=DEPTH, num_heads=2,
                       patch_size=PATCH, img_size=32)
    monkeypatch.setitem(REGISTRY, NAME, dataclasses.replace(real, config=tiny))
    net = release_vit()
    state = {k: v for k, v in net.state_dict().items()}
    state["mask_token"] = torch.zeros(1, D)
    path = tmp_path / "cell_dino_hpa_vitl16.pth"
    torch.save(chunk_keys(state, DEPTH, 2), path)
    return net, path


def test_added_release_gives_the_released_linear_feature_with_channels_by_name(registered):
    net, path = registered
    dino_boc.add_weights(path, name=NAME)
    model = dino_boc.load_model(NAME, device="cpu")
    assert model.config.arch == "fixed" and model.preprocess.crop == CROP and model.features.n_last_blocks == 4
    rng = np.random.default_rng(0)
    hpa = rng.integers(0, 256, size=(4, 100, 90)).astype(np.uint8)  # in the model's order
    user_order = ["ER", "nucleus", "microtubules", "protein"]
    shuffled = hpa[[HPA_CHANNELS.index(c) for c in user_order]]
    got = dino_boc.embed(shuffled, model=model, channels=user_order, precision="fp32")
    assert got.shape == (5 * D,) and len(dino_boc.feature_names(model, 4)) == 5 * D
    np.testing.assert_allclose(got, released_features(net, hpa), atol=2e-4, rtol=0)
    # 16-bit input: the released ÷255 whatever the dtype
    hpa16 = rng.integers(0, 65536, size=(4, 64, 80)).astype(np.uint16)
    np.testing.assert_allclose(dino_boc.embed(hpa16, model=model, channels=list(HPA_CHANNELS), precision="fp32"),
                               released_features(net, hpa16), atol=2e-4, rtol=0)


def test_missing_or_unnamed_channels_are_clear_errors(registered):
    _, path = registered
    dino_boc.add_weights(path, name=NAME)
    model = dino_boc.load_model(NAME, device="cpu")
    img = np.zeros((4, 32, 32), np.uint8)
    with pytest.raises(ChannelError, match=r"name your image's 4 channels"):
        dino_boc.embed(img, model=model, precision="fp32")
    with pytest.raises(ChannelError, match=r"missing \['ER'\]"):
        dino_boc.embed(img, model=model, channels=["DNA", "nucleus", "microtubules", "protein"])
    with pytest.raises(ChannelError, match=r"must name each of the image's 3 channels"):
        dino_boc.embed(img[:3], model=model, channels=["nucleus", "microtubules", "protein", "ER"])


def test_a_checkpoint_with_other_channels_is_refused(registered, tmp_path):
    _, path = registered
    state = torch.load(path, weights_only=True)
    state = {k: (v[:, :3] if k == "patch_embed.proj.weight" else v) for k, v in state.items()}
    torch.save(state, tmp_path / "three.pth")
    with pytest.raises(dino_boc.errors.WeightsError, match=r"takes 3 input channels.*registered with 4 channels"):
        dino_boc.add_weights(tmp_path / "three.pth", name=NAME)
