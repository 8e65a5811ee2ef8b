"""DINO HA: the efficient path against full masked attention written here, channel independence, any K."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dino_boc
from dino_boc.errors import InputError
from dino_boc.features import feature_size
from dino_boc.models.hierarchical import HierarchicalAttentionModel, hierarchical_attention_mask

D, DEPTH, HEADS, P = 64, 3, 4, 8


def make_ha(**kw) -> HierarchicalAttentionModel:
    # init_values=None (no LayerScale) so that every block changes the tokens noticeably
    model = dino_boc.create_model("ha", embed_dim=D, depth=DEPTH, num_heads=HEADS, patch_size=P, img_size=32,
                                  init_values=None, seed=0, **kw)
    with torch.no_grad():  # move the tokens away from their near-zero init
        model.channel_cls_token.normal_(0, 1, generator=torch.Generator().manual_seed(1))
        model.backbone.cls_token.normal_(0, 1, generator=torch.Generator().manual_seed(2))
        model.backbone.mask_token.normal_(0, 1, generator=torch.Generator().manual_seed(3))
    return model


@pytest.fixture(scope="module")
def model() -> HierarchicalAttentionModel:
    return make_ha()


def allowed(k: int, n: int) -> torch.Tensor:
    """The paper's mask, one pair at a time: True where query i may attend to key j."""
    group = [-1] + [c for c in range(k) for _ in range(1 + n)]
    is_channel_cls = [False] + [j == 0 for _ in range(k) for j in range(1 + n)]
    s = len(group)
    out = torch.zeros(s, s, dtype=torch.bool)
    for i in range(s):
        for j in range(s):
            out[i, j] = (j == 0 or is_channel_cls[j]) if i == 0 else (j > 0 and group[i] == group[j])
    return out


def reference(model: HierarchicalAttentionModel, x: torch.Tensor, masks: torch.Tensor | None = None):
    """Full ``1 + K(1+N)`` sequence, attention written out with softmax over masked scores."""
    bb = model.backbone
    b, k, h, w = x.shape
    rows, cols = h // P, w // P
    n = rows * cols
    pe = bb.patch_embed.proj(x.reshape(b * k, 1, h, w)).flatten(2).transpose(1, 2)  # (B·K, N, D)
    if masks is not None:
        pe = torch.where(masks.reshape(b * k, n, 1), bb.mask_token.reshape(1, 1, D), pe)
    pos = bb.pos_embed_for(rows, cols)
    ch = (model.channel_cls_token + pos[:, :1]).expand(b * k, 1, D)
    seq = torch.cat([ch, pe + pos[:, 1:]], dim=1).reshape(b, k * (1 + n), D)
    seq = torch.cat([(bb.cls_token + pos[:, :1]).expand(b, 1, D), seq], dim=1)
    keep = allowed(k, n)
    outs = []
    for blk in bb.blocks:
        y = blk.norm1(seq)
        q, key, v = blk.attn.qkv(y).reshape(b, -1, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        scores = (q @ key.transpose(-1, -2)) / (D // HEADS) ** 0.5
        a = scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v
        seq = seq + blk.attn.proj(a.transpose(1, 2).reshape(b, -1, D))
        seq = seq + blk.mlp(blk.norm2(seq))
        outs.append(bb.norm(seq))
    last = outs[-1]
    glob = torch.stack([o[:, 0] for o in outs], 1)  # (B, depth, D)
    cls = torch.stack([o[:, 1::1 + n] for o in outs], 1)  # (B, depth, K, D)
    patch = last[:, 1:].reshape(b, k, 1 + n, D)[:, :, 1:]
    return glob, cls, patch


def test_mask_function_matches_the_paper():
    for k, n in [(1, 4), (3, 4), (2, 9)]:
        assert torch.equal(hierarchical_attention_mask(k, n), allowed(k, n))


@pytest.mark.parametrize("k,size", [(1, (32, 32)), (3, (32, 32)), (5, (32, 48))])
@pytest.mark.parametrize("attention", ["efficient", "masked"])
def test_matches_full_masked_attention(model, k, size, attention):
    x = torch.randn(2, k, *size, generator=torch.Generator().manual_seed(k))
    with torch.no_grad():
        out = model.forward_tokens(x, n_last_blocks=DEPTH, attention=attention)
        glob, cls, patch = reference(model, x)
    torch.testing.assert_close(out.global_cls, glob, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.cls, cls, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.patch, patch, atol=1e-5, rtol=0)
    assert out.blocks == (0, 1, 2) and out.grid == (size[0] // P, size[1] // P)


def test_ibot_masks_replace_patches(model):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 32, 32, generator=g)
    masks = torch.rand(2, 3, 16, generator=g) < 0.4
    with torch.no_grad():
        out = model.forward_tokens(x, n_last_blocks=1, masks=masks)
        ref = model.forward_tokens(x, n_last_blocks=1, masks=masks, attention="masked")
        glob, cls, patch = reference(model, x, masks)
        plain = model.forward_tokens(x, n_last_blocks=1)
    torch.testing.assert_close(out.patch, patch, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.global_cls, glob[:, -1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(ref.cls, cls[:, -1:], atol=1e-5, rtol=0)
    assert not torch.allclose(out.patch, plain.patch)
    with pytest.raises(InputError, match="masks has shape"):
        model.forward_tokens(x, masks=masks[:, :2])


def test_channels_are_independent_and_global_cls_reads_them(model):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 32, 32, generator=g)
    y = x.clone()
    y[:, 1] += torch.randn(2, 32, 32, generator=g)
    with torch.no_grad():
        a = model.forward_tokens(x, n_last_blocks=2)
        b = model.forward_tokens(y, n_last_blocks=2)
    for c in (0, 2):
        torch.testing.assert_close(a.cls[:, :, c], b.cls[:, :, c], atol=1e-6, rtol=0)
        torch.testing.assert_close(a.patch[:, c], b.patch[:, c], atol=1e-6, rtol=0)
    assert (a.cls[:, :, 1] - b.cls[:, :, 1]).abs().max() > 1e-2
    # block 0 sees identical channel CLS tokens; later blocks read the changed one (float noise here ~1e-7)
    assert (a.global_cls[:, -1] - b.global_cls[:, -1]).abs().max() > 5e-5


def test_channel_tokens_are_boc_with_the_channel_token(model):
    """Channel tokens never see the global CLS: they are BoC tokens with cls_token := channel_cls_token."""
    boc = dino_boc.create_model("boc", embed_dim=D, depth=DEPTH, num_heads=HEADS, patch_size=P, img_size=32,
                                init_values=None)
    state = {k.removeprefix("backbone."): v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    state["cls_token"] = model.channel_cls_token.detach().clone()
    boc.backbone.load_state_dict(state)
    x = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ha, ref = model.forward_tokens(x, n_last_blocks=2), boc.forward_tokens(x, n_last_blocks=2)
    torch.testing.assert_close(ha.cls, ref.cls, atol=1e-6, rtol=0)
    torch.testing.assert_close(ha.patch, ref.patch, atol=1e-6, rtol=0)


def test_channel_permutation_permutes_channel_tokens_only(model):
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(9))
    perm = [2, 0, 3, 1]
    with torch.no_grad():
        a, b = model.forward_tokens(x, n_last_blocks=2), model.forward_tokens(x[:, perm], n_last_blocks=2)
    torch.testing.assert_close(b.cls, a.cls[:, :, perm], atol=1e-6, rtol=0)
    torch.testing.assert_close(b.global_cls, a.global_cls, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 6])
@pytest.mark.parametrize("n_last,avgpool", [(2, True), (1, False)])
def test_feature_sizes_any_k(model, k, n_last, avgpool):
    imgs = np.random.default_rng(k).integers(0, 255, (2, k, 32, 32)).astype(np.uint8)
    feats = dino_boc.embed(imgs, n_last_blocks=n_last, avgpool=avgpool, model=model)
    expected = (n_last * (1 + k) + (k if avgpool else 0)) * D  # L(1+K)D + KD; CHAMMI form (1+K)D
    assert feats.shape == (2, expected) == (2, feature_size("ha", k, D, n_last_blocks=n_last, avgpool=avgpool))
    assert len(dino_boc.feature_names(model, k, n_last_blocks=n_last, avgpool=avgpool)) == expected
    emb = dino_boc.embed_tokens(imgs, n_last_blocks=n_last, avgpool=avgpool, model=model)
    # layout: per block [global, channel 0..K-1], then per-channel patch means
    first = np.concatenate([emb.global_cls[:, 0], emb.cls[:, 0].reshape(2, -1)], axis=1)
    np.testing.assert_array_equal(feats[:, : (1 + k) * D], first)
    assert np.isfinite(feats).all()


def test_rejects_channel_ids_and_unknown_attention(model):
    x = torch.randn(1, 2, 32, 32)
    with pytest.raises(InputError, match="Channel-ViT"):
        model.forward_tokens(x, channel_ids=torch.arange(2))
    with pytest.raises(InputError, match="Channel-ViT"):
        dino_boc.embed(np.zeros((2, 32, 32), np.uint8), n_last_blocks=1, channel_ids=[0, 1], model=model)
    with pytest.raises(InputError, match="attention"):
        model.forward_tokens(x, attention="dense")


def test_parameters_named_for_weight_decay_and_layer_decay(model):
    names = dict(model.named_parameters())
    assert "channel_cls_token" in names and "backbone.cls_token" in names
    assert {"channel_cls_token", "backbone.cls_token", "backbone.pos_embed"} <= model.no_weight_decay()
    assert model.layer_id("channel_cls_token") == 0
    assert model.layer_id("backbone.blocks.1.attn.qkv.weight") == 2
    assert isinstance(dino_boc.create_model("ha", embed_dim=D, depth=2, num_heads=2, patch_size=P, img_size=32),
                      dino_boc.HierarchicalAttentionModel)
