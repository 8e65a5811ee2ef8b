import copy

import numpy as np
import pytest
import torch

import dino_boc
from dino_boc.errors import ConfigError, InputError
from dino_boc.train.finetune import Classifier, finetune, finetune_optimizer, predict, prepare_images


def tiny_model():
    return dino_boc.create_model("boc", embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32, seed=0)


def texture_task(n: int, seed: int):
    """Two classes of 2-channel 32 x 32 images with the same intensity statistics but different texture:
    class 0 smooth (4 x 4 noise upsampled), class 1 fine-grained (pixel noise)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = []
    for c in labels:
        if c == 0:
            low = torch.as_tensor(rng.normal(size=(1, 2, 4, 4)), dtype=torch.float32)
            img = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)[0].numpy()
        else:
            img = rng.normal(size=(2, 32, 32))
        images.append((img * 30 + 100).astype(np.float32))
    return np.stack(images), labels


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_loss_falls_and_only_unfrozen_blocks_change():
    model = tiny_model()
    images, labels = texture_task(16, 0)
    x = prepare_images(images, model)
    torch.manual_seed(0)
    clf = Classifier(model, 2, unfreeze_last=1)
    before, head_before = snapshot(model), snapshot(clf.head)
    hist = finetune(clf, x, labels, epochs=6, lr=1e-2, batch_size=4, seed=0)
    assert len(hist.loss) == 6 and len(hist.lr) == 24
    assert hist.loss[-1] < 0.5 * hist.loss[0]
    assert max(hist.lr) == pytest.approx(1e-2) and hist.lr[0] < 1e-2 and hist.lr[-1] < 1e-3  # warm-up, cosine
    after = snapshot(model)
    for name in before:
        trained = name.startswith(("backbone.blocks.1.", "backbone.norm."))
        if trained:
            assert not torch.equal(before[name], after[name]), f"{name} should have been trained"
        else:
            assert torch.equal(before[name], after[name]), f"{name} is frozen and must not change"
    assert all(not torch.equal(head_before[k], v) for k, v in snapshot(clf.head).items())
    held_out, held_labels = texture_task(10, 1)
    assert (predict(clf, prepare_images(held_out, model)) == held_labels).mean() >= 0.8


def test_head_only_keeps_the_backbone_and_reads_the_channel_mean_of_the_last_cls():
    model = tiny_model()
    images, labels = texture_task(8, 2)
    x = prepare_images(images, model)
    clf = Classifier(model, 2, unfreeze_last=0)
    assert not any(p.requires_grad for p in model.parameters())
    before = snapshot(model)
    finetune(clf, x, labels, epochs=2, batch_size=4, augment=False)
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        cls = model.forward_tokens(x, n_last_blocks=1).cls[:, -1]  # (B, K, D)
        expected = cls.mean(dim=1) @ clf.head.weight.T + clf.head.bias
        torch.testing.assert_close(clf.eval()(x), expected)


def test_concat_pool_needs_a_fixed_channel_count():
    model = tiny_model()
    x = prepare_images(texture_task(4, 3)[0], model)
    clf = Classifier(model, 3, pool="concat", num_channels=2).eval()
    with torch.no_grad():
        cls = model.forward_tokens(x).cls[:, -1]
        torch.testing.assert_close(clf.features(x), torch.cat([cls[:, 0], cls[:, 1]], dim=1))
    assert clf.head.in_features == 2 * 64
    with pytest.raises(InputError, match="num_channels=2"):
        clf(x[:, :1])
    with pytest.raises(ConfigError, match="num_channels"):
        Classifier(model, 3, pool="concat")
    with pytest.raises(ConfigError, match="0..2"):
        Classifier(model, 3, unfreeze_last=3)


def test_layer_wise_lr_decay_groups():
    decay = 0.5
    clf = Classifier(tiny_model(), 2, unfreeze_last=2)  # depth 2: everything trains
    opt = finetune_optimizer(clf, layer_decay=decay)
    lr_of = {n: g["lr_multiplier"] for g in opt.param_groups for n in g["names"]}
    wd_of = {n: g["wd_multiplier"] for g in opt.param_groups for n in g["names"]}
    # L = 2: embeddings layer 0 -> decay^3 (patch embedding x 0.2), block i -> decay^(2 - i), norm and head -> 1
    expected = {
        "model.backbone.cls_token": decay**3, "model.backbone.pos_embed": decay**3,
        "model.backbone.patch_embed.proj.weight": 0.2 * decay**3,
        "model.backbone.blocks.0.attn.qkv.weight": decay**2, "model.backbone.blocks.1.mlp.fc1.weight": decay,
        "model.backbone.norm.weight": 1.0, "head.weight": 1.0, "head.bias": 1.0,
    }
    for name, mult in expected.items():
        assert lr_of[name] == pytest.approx(mult), name
    assert wd_of["head.weight"] == 1.0 and wd_of["model.backbone.blocks.1.mlp.fc1.weight"] == 1.0
    assert wd_of["head.bias"] == 0.0 and wd_of["model.backbone.norm.weight"] == 0.0
    assert wd_of["model.backbone.pos_embed"] == 0.0
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert set(lr_of) == trainable
    frozen = Classifier(tiny_model(), 2, unfreeze_last=1)
    names = {n for g in finetune_optimizer(frozen, layer_decay=decay).param_groups for n in g["names"]}
    assert not any(".blocks.0." in n or "embed" in n or "token" in n for n in names)


def test_labels_must_be_class_codes():
    model = tiny_model()
    x = prepare_images(texture_task(4, 4)[0], model)
    clf = Classifier(model, 2)
    with pytest.raises(InputError, match="integer class codes"):
        finetune(clf, x, np.array(["a", "b", "a", "b"]), epochs=1)
    with pytest.raises(InputError, match="0..1"):
        finetune(clf, x, np.array([0, 1, 2, 0]), epochs=1)
