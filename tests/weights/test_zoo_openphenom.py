"""OpenPhenom (recursionpharma/OpenPhenom): a tiny random ``MAEModel`` state dict in its native layout
(``encoder.vit_backbone.*`` + decoder), saved both as its ``save_pretrained`` writes it (a torch archive
named ``model.safetensors``) and as real safetensors; loaded by file and by registry name through a
127.0.0.1 Hub then an offline cache, against ``predict()`` written here from the published code
(maes_microscopy ``vit.py``: channel-agnostic patch embedding, sin-cos positions; huggingface_mae.py: ÷255 +
InstanceNorm2d, ``forward_features``, mean of the patch tokens, or per channel).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import ParallelScalingBlock, VisionTransformer

import dino_boc

from .zoo_hub import hub_server, run_python

D, MAX_CH, REV = 128, 11, "c62ba2fad0889d6d7fd550ae7d865bb32a422e51"


def sincos(length: int) -> torch.Tensor:
    """generate_2d_sincos_pos_embeddings(D, length, num_modality=11), from its equations."""
    h, w = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    freq = 1.0 / 10000.0 ** (np.arange(D // 4) / (D // 4))
    hw, ww = np.outer(h.ravel(), freq), np.outer(w.ravel(), freq)
    table = np.concatenate([np.sin(hw), np.cos(hw), np.sin(ww), np.cos(ww)], axis=1)
    table = np.tile(table, (MAX_CH, 1))
    return torch.from_numpy(np.concatenate([np.zeros((1, D)), table])[None].astype(np.float32))


def published_encoder() -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=256, patch_size=16, in_chans=1, embed_dim=D, depth=2, num_heads=2,
                            qkv_bias=False, qk_norm=True, init_values=1e-4, block_fn=ParallelScalingBlock,
                            class_token=True, num_classes=0, global_pool="avg", fc_norm=None)
    vit.pos_embed = torch.nn.Parameter(sincos(16), requires_grad=False)
    with torch.no_grad():
        for n, p in vit.named_parameters():
            if n != "pos_embed":
                p.add_(torch.randn_like(p) * 0.05)
    return vit.eval()


def predict(vit: VisionTransformer, img256: torch.Tensor, *, channelwise: bool) -> np.ndarray:
    x = img256.float()[None] / 255.0
    x = torch.nn.InstanceNorm2d(x.shape[1], affine=False, track_running_stats=False)(x)
    with torch.no_grad():
        t = torch.stack([vit.patch_embed.proj(x[:, i:i + 1]) for i in range(x.shape[1])], dim=2)
        t = t.flatten(2).transpose(1, 2)  # ChannelAgnosticPatchEmbed
        t = torch.cat([vit.cls_token, t], dim=1)
        t = t + vit.pos_embed[:, :t.shape[1]]  # ChannelAgnosticViT._pos_embed
        out = vit.norm(vit.blocks(vit.norm_pre(t)))  # forward_features
    if channelwise:
        return out[:, 1:].reshape(1, x.shape[1], 256, D).mean(2).reshape(-1).numpy()
    return out[:, 1:].mean(1)[0].numpy()


def native_state(vit: VisionTransformer) -> dict[str, torch.Tensor]:
    state = {f"encoder.vit_backbone.{k}": v.clone() for k, v in vit.state_dict().items()}
    gen = torch.Generator().manual_seed(3)
    state["decoder.blocks.0.norm1.weight"] = torch.randn(64, generator=gen)
    state["encoder_decoder_proj.weight"] = torch.randn(64, D, generator=gen)
    state["decoder_pred.weight"] = torch.randn(256, 64, generator=gen)
    return state


@pytest.fixture
def vit():
    return published_encoder()


@pytest.fixture
def image():
    return np.random.default_rng(2).integers(0, 65536, size=(3, 200, 240)).astype(np.uint16)


def resized(img: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(img.astype(np.float32))[None]
    return F.interpolate(x, size=(256, 256), mode="bicubic", align_corners=False, antialias=True)[0]


@pytest.mark.parametrize("form", ["save_pretrained", "safetensors"])
def test_native_file_gives_predict(form, vit, image, tmp_path):
    path = tmp_path / "model.safetensors"
    if form == "save_pretrained":  # OpenPhenom's own save_pretrained: a torch archive under this name
        torch.save({"state_dict": native_state(vit)}, path)
    else:
        save_file({k: v.contiguous() for k, v in native_state(vit).items()}, str(path))
    model = dino_boc.load_model(path, device="cpu")
    assert model.config.arch == "ca_mae" and model.config.max_channels == MAX_CH
    pooled = dino_boc.embed(image, model=model, precision="fp32")
    assert pooled.shape == (D,)
    np.testing.assert_allclose(pooled, predict(vit, resized(image), channelwise=False), atol=2e-4, rtol=0)
    if form == "safetensors":
        return  # the other form checks the channel-wise feature and 8-bit input
    channelwise = dino_boc.embed(image, model=model, channel_pool="concat", precision="fp32")
    np.testing.assert_allclose(channelwise, predict(vit, resized(image), channelwise=True), atol=2e-4, rtol=0)
    u8 = (image // 256).astype(np.uint8)  # an 8-bit image: the same recipe
    np.testing.assert_allclose(dino_boc.embed(u8, model=model, precision="fp32"), predict(vit, resized(u8), channelwise=False),
                               atol=2e-4, rtol=0)


def test_decoder_keys_are_dropped_and_foreign_keys_named(vit, tmp_path):
    state = native_state(vit)
    state["projection_head.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "model.safetensors")
    with pytest.raises(dino_boc.errors.WeightsError, match=r"not part of OpenPhenom's MAEModel: \['projection_head"):
        dino_boc.load_model(tmp_path / "model.safetensors", device="cpu")


def test_by_name_through_the_hub_then_offline(vit, image, tmp_path):
    up = tmp_path / "up.safetensors"
    torch.save({"state_dict": native_state(vit)}, up)
    files = {"model.safetensors": up.read_bytes(), "huggingface_mae.py": b"raise SystemExit('never run')\n",
             "config.json": json.dumps({"model_type": "MAE"}).encode(), "LICENSE": b"non-commercial\n"}
    np.save(tmp_path / "img.npy", image)
    code = """
import numpy as np, dino_boc
m = dino_boc.load_model("openphenom-vits16", device="cpu")
assert m.card["revision"] == "%s", m.card
np.save("f.npy", dino_boc.embed(np.load("img.npy"), model=m, precision="fp32"))
""" % REV
    with hub_server({"recursionpharma/OpenPhenom": files}) as server:
        online = run_python(code, hf_home=tmp_path / "hf", endpoint=server.url, cwd=tmp_path)
        assert online.returncode == 0, online.stderr
    assert "NON-COMMERCIAL" in online.stderr  # the licence is shown on load
    assert any(f"/resolve/{REV}/model.safetensors" in r for r in server.requests)  # the pinned revision
    assert not any("huggingface_mae" in r for r in server.requests)
    offline = run_python(code, hf_home=tmp_path / "hf", endpoint=None, cwd=tmp_path)
    assert offline.returncode == 0, offline.stderr
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), predict(vit, resized(image), channelwise=False),
                               atol=2e-4, rtol=0)


def test_the_dataset_pipeline_gives_the_same_default_feature(vit, image, tmp_path):
    torch.save({"state_dict": native_state(vit)}, tmp_path / "model.safetensors")
    model = dino_boc.load_model(tmp_path / "model.safetensors", device="cpu")
    tifffile.imwrite(tmp_path / "img.tif", image, metadata={"axes": "CYX"}, photometric="minisblack")
    dino_boc.embed_dataset(tmp_path / "img.tif", tmp_path / "out.parquet", model=model, num_workers=0, progress=False, precision="fp32")
    table = pd.read_parquet(tmp_path / "out.parquet")
    feats = table[[c for c in table.columns if not c.startswith("Metadata_")]].to_numpy()
    assert list(table.columns[-D:]) == dino_boc.feature_names(model, 3) and feats.shape == (1, D)  # chmean_mean_*
    import pyarrow.parquet as pq

    meta = json.dumps({k.decode(): v.decode() for k, v in pq.read_schema(tmp_path / "out.parquet").metadata.items()})
    assert str(tmp_path / "model.safetensors") in meta and "openphenom" in meta.lower()
    np.testing.assert_allclose(feats[0], dino_boc.embed(image, model=model, precision="fp32"), atol=1e-5, rtol=0)
