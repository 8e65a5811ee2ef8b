"""DINOv2 as bag of channels: a tiny random checkpoint in timm's DINOv2 Hub layout (a timm
``VisionTransformer`` with registers, ``no_embed_class``, RGB patch embedding, positions for 518 px), loaded
by file and by registry name through a 127.0.0.1 Hub then an offline cache, against CHAMMI-75's ``DinoV2``
recipe run on timm itself: Resize((224, 224), antialias=True) -> ÷ the image's max -> replicate to RGB ->
ImageNet normalisation -> ``forward_features`` CLS per channel, concatenated.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

import dino_boc
from dino_boc.weights.native import fold_rgb_patch_embed

from .zoo_hub import hub_server, run_python

D = 128
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def timm_dinov2(*, reg_tokens: int) -> VisionTransformer:
    torch.manual_seed(0)
    net = VisionTransformer(img_size=518, patch_size=14, embed_dim=D, depth=2, num_heads=2, init_values=1e-5,
                            reg_tokens=reg_tokens, no_embed_class=reg_tokens > 0, num_classes=0,
                            dynamic_img_size=True)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net.eval()


def published_features(net: VisionTransformer, img: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(img.astype(np.float32))[None]
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    x = x / x.amax(dim=(1, 2, 3), keepdim=True)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = [net.forward_features((x[:, c:c + 1].expand(-1, 3, -1, -1) - mean) / std)[:, 0] for c in range(x.shape[1])]
    return torch.cat(out, dim=1)[0].numpy()


def write_native(net: VisionTransformer, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture
def images():
    rng = np.random.default_rng(1)
    return (rng.integers(0, 256, size=(3, 96, 130)).astype(np.uint8),
            rng.integers(0, 65536, size=(2, 300, 260)).astype(np.uint16))


def test_folding_rgb_and_imagenet_into_one_channel_is_exact():
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(8, 3, 14, 14, generator=gen, dtype=torch.float64), torch.randn(8, generator=gen, dtype=torch.float64)
    x = torch.rand(2, 1, 28, 42, generator=gen, dtype=torch.float64)
    mean, std = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1), torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    expected = F.conv2d((x.expand(-1, 3, -1, -1) - mean) / std, w, b, stride=14)
    fw, fb = fold_rgb_patch_embed(w, b)
    torch.testing.assert_close(F.conv2d(x, fw, fb, stride=14), expected, rtol=1e-12, atol=1e-12)


def dinov2_positions_at_224(net: VisionTransformer) -> VisionTransformer:
    """The same weights with DINOv2's own ``interpolate_pos_encoding`` for 224 px done once here (no
    registers: ``scale_factor=(16 + 0.1) / 37``, bicubic, no antialias), in a timm model built for 224 px."""
    state = net.state_dict()
    grid = state["pos_embed"][:, 1:].reshape(1, 37, 37, D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic", antialias=False)
    state["pos_embed"] = torch.cat([state["pos_embed"][:, :1], grid.permute(0, 2, 3, 1).reshape(1, 256, D)], 1)
    out = VisionTransformer(img_size=224, patch_size=14, embed_dim=D, depth=2, num_heads=2, init_values=1e-5,
                            num_classes=0)
    out.load_state_dict(state)
    return out.eval()


@pytest.mark.parametrize("reg_tokens", [4, 0])
def test_native_file_gives_the_published_features(reg_tokens, images, tmp_path):
    net = timm_dinov2(reg_tokens=reg_tokens)
    model = dino_boc.load_model(write_native(net, tmp_path / "model.safetensors"), device="cpu")
    assert model.card["family"] == "timm_dinov2" and model.config.reg_tokens == reg_tokens
    # with registers timm's position resampling is DINOv2's (by size, antialias); without, DINOv2's offset
    reference = net if reg_tokens else dinov2_positions_at_224(net)
    for img in images:
        got = dino_boc.embed(img, model=model, precision="fp32")
        assert got.shape == (img.shape[0] * D,)
        np.testing.assert_allclose(got, published_features(reference, img), atol=1e-4, rtol=0)


def test_by_name_through_the_hub_then_offline(images, tmp_path):
    net = timm_dinov2(reg_tokens=4)
    native = write_native(net, tmp_path / "up" / "model.safetensors")
    files = {"model.safetensors": native.read_bytes(),
             "config.json": json.dumps({"architecture": "vit_small_patch14_reg4_dinov2"}).encode()}
    np.save(tmp_path / "u16.npy", images[1])
    code = """
import numpy as np, dino_boc
m = dino_boc.load_model("dinov2-vits14-reg4-boc", device="cpu")
np.save("f16.npy", dino_boc.embed(np.load("u16.npy"), model=m, precision="fp32"))
"""
    with hub_server({"timm/vit_small_patch14_reg4_dinov2.lvd142m": files}) as server:
        online = run_python(code, hf_home=tmp_path / "hf", endpoint=server.url, cwd=tmp_path)
        assert online.returncode == 0, online.stderr
    offline = run_python(code, hf_home=tmp_path / "hf", endpoint=None, cwd=tmp_path)
    assert offline.returncode == 0, offline.stderr
    np.testing.assert_allclose(np.load(tmp_path / "f16.npy"), published_features(net, images[1]), atol=1e-4, rtol=0)
