"""DINO Channel-ViT: tokens against an attention written here, channel ids, K_max, feature sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dino_boc
from dino_boc.errors import ChannelError, InputError
from dino_boc.features import feature_size
from dino_boc.models.channel_vit import ChannelViTModel

D, DEPTH, HEADS, P, KMAX = 64, 3, 4, 8, 5
NAMES = ("DNA", "ER", "RNA", "AGP", "Mito")


def make_cvit(**kw) -> ChannelViTModel:
    kw.setdefault("channel_names", NAMES)
    return dino_boc.create_model("channel_vit", embed_dim=D, depth=DEPTH, num_heads=HEADS, patch_size=P,
                                 img_size=32, init_values=None, max_channels=KMAX, seed=0, **kw)


@pytest.fixture(scope="module")
def model() -> ChannelViTModel:
    return make_cvit()


def reference(model: ChannelViTModel, x: torch.Tensor, ids: list[int], masks: torch.Tensor | None = None):
    """``[CLS, h_k,i + p_i + c_id(k)]`` with full attention written out (softmax, no mask)."""
    bb = model.backbone
    b, k, h, w = x.shape
    rows, cols = h // P, w // P
    pos = bb.pos_embed_for(rows, cols)
    parts = [(bb.cls_token + pos[:, :1]).expand(b, 1, D)]
    for c in range(k):
        pe = bb.patch_embed.proj(x[:, c:c + 1]).flatten(2).transpose(1, 2)  # (B, N, D)
        if masks is not None:
            pe = torch.where(masks[:, c, :, None], bb.mask_token.reshape(1, 1, D), pe)
        parts.append(pe + pos[:, 1:] + model.channel_embed[ids[c]])
    seq = torch.cat(parts, dim=1)
    glob = []
    for blk in bb.blocks:
        y = blk.norm1(seq)
        q, key, v = blk.attn.qkv(y).reshape(b, -1, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        a = ((q @ key.transpose(-1, -2)) / (D // HEADS) ** 0.5).softmax(-1) @ v
        seq = seq + blk.attn.proj(a.transpose(1, 2).reshape(b, -1, D))
        seq = seq + blk.mlp(blk.norm2(seq))
        glob.append(bb.norm(seq[:, 0]))
    return torch.stack(glob, 1), bb.norm(seq[:, 1:]).reshape(b, k, rows * cols, D)


@pytest.mark.parametrize("ids", [[0, 1, 2], [4, 0, 2], [1]])
def test_matches_full_attention(model, ids):
    g = torch.Generator().manual_seed(len(ids))
    x = torch.randn(2, len(ids), 32, 48, generator=g)
    masks = torch.rand(2, len(ids), 24, generator=g) < 0.3
    with torch.no_grad():
        for m in (None, masks):
            out = model.forward_tokens(x, n_last_blocks=DEPTH, channel_ids=torch.tensor(ids), masks=m)
            glob, patch = reference(model, x, ids, m)
            assert out.cls is None
            torch.testing.assert_close(out.global_cls, glob, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.patch, patch, atol=1e-5, rtol=0)


def test_sensitive_to_channel_ids_and_equivariant_to_joint_permutation(model):
    img = np.random.default_rng(0).integers(0, 255, (3, 32, 32)).astype(np.uint8)
    a = dino_boc.embed(img, n_last_blocks=1, channel_ids=[0, 1, 2], precision="fp32", model=model)
    b = dino_boc.embed(img, n_last_blocks=1, channel_ids=[0, 1, 3], precision="fp32", model=model)
    assert np.abs(a[:D] - b[:D]).max() > 1e-3  # same pixels, another channel identity
    # permuting the channels together with their ids leaves the CLS unchanged (no channel order)
    c = dino_boc.embed(img[[2, 0, 1]], n_last_blocks=1, channel_ids=[2, 0, 1], precision="fp32", model=model)
    np.testing.assert_allclose(c[:D], a[:D], atol=1e-5)


def test_names_and_defaults(model):
    img = np.random.default_rng(1).integers(0, 255, (2, 3, 32, 32)).astype(np.uint8)
    by_name = dino_boc.embed(img, n_last_blocks=2, channel_ids=["RNA", "DNA", "Mito"], model=model)
    by_id = dino_boc.embed(img, n_last_blocks=2, channel_ids=[2, 0, 4], model=model)
    np.testing.assert_array_equal(by_name, by_id)
    np.testing.assert_array_equal(dino_boc.embed(img, n_last_blocks=2, model=model), dino_boc.embed(img, n_last_blocks=2,
                                                                                  channel_ids=[0, 1, 2], model=model))
    # channels= selects input channels first; channel_ids then names the selected ones
    sel = dino_boc.embed(img, [2, 0], n_last_blocks=2, channel_ids=["RNA", "DNA"], model=model)
    np.testing.assert_array_equal(sel, dino_boc.embed(img[:, [2, 0]], n_last_blocks=2, channel_ids=[2, 0], model=model))


def test_per_image_ids_match_separate_runs(model):
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(3))
    ids = torch.tensor([[0, 1], [3, 2]])
    with torch.no_grad():
        both = model.forward_tokens(x, channel_ids=ids)
        for i in range(2):
            one = model.forward_tokens(x[i:i + 1], channel_ids=ids[i])
            torch.testing.assert_close(both.global_cls[i:i + 1], one.global_cls, atol=1e-6, rtol=0)


def test_refuses_bad_channels(model):
    x6 = np.zeros((KMAX + 1, 32, 32), np.uint8)
    with pytest.raises(InputError, match="at most 5"):
        dino_boc.embed(x6, n_last_blocks=1, model=model)
    with pytest.raises(InputError, match="at most 5"):
        model.forward_tokens(torch.zeros(1, KMAX + 1, 32, 32))
    x3 = torch.zeros(1, 3, 32, 32)
    with pytest.raises(InputError, match="out of range"):
        model.forward_tokens(x3, channel_ids=torch.tensor([0, 1, 5]))
    with pytest.raises(InputError, match="out of range"):
        model.resolve_channel_ids([0, -1, 2], 3)
    with pytest.raises(InputError, match="repeat"):
        model.resolve_channel_ids([0, 1, 1], 3)
    with pytest.raises(InputError, match="one per channel"):
        model.resolve_channel_ids([0, 1], 3)
    with pytest.raises(InputError, match="expected integer"):
        model.forward_tokens(x3, channel_ids=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ChannelError, match="unknown channel name 'GFP'"):
        dino_boc.embed(np.zeros((2, 32, 32), np.uint8), n_last_blocks=1, channel_ids=["DNA", "GFP"], model=model)
    with pytest.raises(ChannelError, match="no channel names"):
        make_cvit(channel_names=()).resolve_channel_ids(["DNA"], 1)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("n_last,avgpool", [(2, True), (1, False)])
def test_feature_sizes(model, k, n_last, avgpool):
    imgs = np.random.default_rng(k).integers(0, 255, (2, k, 32, 32)).astype(np.uint8)
    feats = dino_boc.embed(imgs, n_last_blocks=n_last, avgpool=avgpool, model=model)
    expected = (n_last + (k if avgpool else 0)) * D  # L·D + K·D; CHAMMI form D
    assert feats.shape == (2, expected)
    assert expected == feature_size("channel_vit", k, D, n_last_blocks=n_last, avgpool=avgpool)
    assert len(dino_boc.feature_names(model, k, n_last_blocks=n_last, avgpool=avgpool)) == expected
    emb = dino_boc.embed_tokens(imgs, n_last_blocks=n_last, avgpool=avgpool, model=model)
    assert emb.cls is None and emb.global_cls.shape == (2, n_last, D)
    np.testing.assert_array_equal(feats[:, : n_last * D], emb.global_cls.reshape(2, -1))


def test_parameters_named_for_weight_decay_and_layer_decay(model):
    assert dict(model.named_parameters())["channel_embed"].shape == (KMAX, D)
    assert {"channel_embed", "backbone.cls_token", "backbone.pos_embed"} <= model.no_weight_decay()
    assert model.layer_id("channel_embed") == 0
    assert isinstance(model, dino_boc.ChannelViTModel)
