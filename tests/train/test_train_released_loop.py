"""A few real training steps checked against the released DINOv2 loop (issue 14, differences 1-3).

* the prototype norms ``last_layer.weight_g`` are trained (``dinov2/layers/dino_head.py:27-28``);
* ``cls_token``, ``pos_embed`` and ``mask_token`` are weight-decayed (``param_groups.py:80``);
* the last layer in the first epoch has lr 0 but keeps its gradient, which enters the clipping norm and
  AdamW's moments (``train.py:98-100, 266-269``).

The AdamW update and the clipping are written out here from their equations.
"""

from __future__ import annotations

import math

import pytest
import torch
from train_helpers import random_images, tiny_config

from dino_boc.errors import ConfigError
from dino_boc.train.checkpoint import latest_checkpoint, load_checkpoint
from dino_boc.train.config import PRE_RELEASED_DEFAULTS, saved_config
from dino_boc.train.engine import Trainer
from dino_boc.train.sources import ArraySource

DEPTH = 2  # train_helpers.TINY
TOKENS = ("backbone.backbone.cls_token", "backbone.backbone.pos_embed", "backbone.backbone.mask_token")
LAST = ("dino_head.last_layer.weight_v", "dino_head.last_layer.weight_g")
BIAS = "backbone.backbone.blocks.0.attn.qkv.bias"


def _run(tmp_path, *overrides, hook=None) -> Trainer:
    cfg = tiny_config("optim.warmup_epochs=0", "optim.epochs=2", *overrides)
    trainer = Trainer(cfg, output_dir=tmp_path, sources=[ArraySource(random_images(10))], loss_hook=hook)
    trainer.run()
    return trainer


def _snapshot(trainer: Trainer, names) -> dict[str, torch.Tensor]:
    params = dict(trainer.objective.student.named_parameters())
    return {n: params[n].detach().clone() for n in names}


def test_frozen_last_layer_keeps_adam_moments_and_tokens_are_decayed(tmp_path):
    names = (*TOKENS, *LAST, BIAS)
    before, after_first, state_first = {}, {}, {}

    def hook(it, terms):
        if it == 0:  # shift the tokens and the bias away from their ~0 init so that a decay shows
            params = dict(trainer.objective.student.named_parameters())
            for n in (*TOKENS, BIAS):
                params[n].data.add_(1.0)
            before.update(_snapshot(trainer, names))
        if it == 1:  # parameters and AdamW state after the first step
            after_first.update(_snapshot(trainer, names))
            params = dict(trainer.objective.student.named_parameters())
            for n in names:
                st = trainer.optimizer.state[params[n]]
                state_first[n] = (st["exp_avg"].clone(), st["exp_avg_sq"].clone())

    # 2 iterations per epoch; both run inside the frozen first epoch
    trainer = Trainer(
        tiny_config("optim.warmup_epochs=0", "optim.epochs=2", "optim.freeze_last_layer_epochs=1",
                    "optim.clip_grad=0", "train.max_iterations=2"),
        output_dir=tmp_path, sources=[ArraySource(random_images(10))], loss_hook=hook,
    )
    hist = trainer.run().history
    assert [h["last_layer_lr"] for h in hist] == [0.0, 0.0] and hist[0]["lr"] > 0
    params = dict(trainer.objective.student.named_parameters())

    # 1 + 3: the frozen last layer (weight_g a parameter too) did not move, but AdamW saw its gradient twice
    assert params["dino_head.last_layer.weight_g"].requires_grad
    for n in LAST:
        assert torch.equal(params[n].detach(), before[n]), n
        st = trainer.optimizer.state[params[n]]
        assert int(st["step"]) == 2 and st["exp_avg"].abs().sum() > 0 and st["exp_avg_sq"].abs().sum() > 0, n

    # 2: AdamW's first step, p1 = p0 (1 - lr wd) - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps), with the
    # decay on for the tokens and off for a bias; lr of layer 0 = base lr x 0.9 ** (DEPTH + 1)
    b1, b2, eps = 0.9, 0.999, 1e-8
    lr, wd = hist[0]["lr"] * 0.9 ** (DEPTH + 1), hist[0]["wd"]
    for n, decayed in [*((t, True) for t in TOKENS), (BIAS, False)]:
        if n == BIAS:
            lr_n = hist[0]["lr"] * 0.9 ** (DEPTH + 1 - 1)  # block 0 is layer 1
        else:
            lr_n = lr
        m, v = state_first[n]
        step = lr_n / (1 - b1) * m / (v.sqrt() / math.sqrt(1 - b2) + eps)
        with_decay = before[n] * (1 - lr_n * wd) - step
        without = before[n] - step
        want, other = (with_decay, without) if decayed else (without, with_decay)
        torch.testing.assert_close(after_first[n], want, rtol=0, atol=1e-6)
        assert (after_first[n] - other).abs().min() > 1e-5, n  # the two rules are told apart


def test_prototype_norms_are_learnt_once_the_last_layer_is_free(tmp_path):
    trainer = _run(tmp_path, "optim.freeze_last_layer_epochs=0", "train.max_iterations=2")
    g = dict(trainer.objective.student.named_parameters())["dino_head.last_layer.weight_g"]
    assert g.shape == (64, 1) and not torch.equal(g.detach(), torch.ones(64, 1))
    groups = [group for group in trainer.optimizer.param_groups if any(p is g for p in group["params"])]
    assert len(groups) == 1 and groups[0]["is_last_layer"] and groups[0]["wd_multiplier"] == 1.0


def test_fixed_prototype_norms_option(tmp_path):
    trainer = _run(tmp_path, "optim.freeze_last_layer_epochs=0", "dino.head_norm_last_layer=true",
                   "train.max_iterations=1")
    head = trainer.objective.student.dino_head
    assert "last_layer.weight_g" not in dict(head.named_parameters())
    assert torch.equal(head.state_dict()["last_layer.weight_g"], torch.ones(64, 1))


@pytest.mark.parametrize("clip", [1e-4, 1e-3])
def test_frozen_last_layer_gradient_enters_the_clipping_norm(tmp_path, clip):
    # clip so small that it always acts: after the first step AdamW's m = (1 - b1) * clipped gradient, so
    # the gradient norm over the WHOLE head (frozen last layer included) must equal the clip
    trainer = _run(tmp_path, "optim.freeze_last_layer_epochs=1", f"optim.clip_grad={clip}",
                   "train.max_iterations=1")
    state = trainer.optimizer.state
    for module in ("dino_head", "backbone"):
        grads = {n: state[p]["exp_avg"] / (1 - 0.9)
                 for n, p in trainer.objective.student.named_parameters() if n.startswith(module + ".") and p in state}
        total = math.sqrt(sum(float(g.double().square().sum()) for g in grads.values()))
        assert total == pytest.approx(clip, rel=1e-4), module
    last = math.sqrt(sum(float((state[p]["exp_avg"] / 0.1).double().square().sum())
                         for n, p in trainer.objective.student.named_parameters() if n in LAST))
    assert 0 < last < clip


def test_a_checkpoint_from_before_the_released_defaults_is_not_resumed_with_them(tmp_path):
    # a dino_boc 0.1 checkpoint has no keys for the new choices: it is read with what that run did, so
    # resuming it with today's defaults is refused with the keys named instead of silently changing it
    cfg = tiny_config("train.max_iterations=1", "train.checkpoint_every=1")
    train_run = Trainer(cfg, output_dir=tmp_path, sources=[ArraySource(random_images(10))])
    train_run.run()
    path = latest_checkpoint(tmp_path)
    state = load_checkpoint(path)
    for key in PRE_RELEASED_DEFAULTS:
        section, name = key.split(".")
        del state["config"][section][name]
    torch.save(state, path)
    old = saved_config(state["config"])
    assert "head_norm_last_layer" not in state["config"]["dino"]  # the checkpoint's dict is left as it was
    assert (old.dino.head_norm_last_layer, old.optim.weight_decay_rule, old.model.drop_path_uniform,
            old.crops.antialias) == (True, "timm", False, True)
    resumed = Trainer(cfg.replace(**{"train.max_iterations": 2}), output_dir=tmp_path,
                      sources=[ArraySource(random_images(10))])
    with pytest.raises(ConfigError, match=r"dino.head_norm_last_layer: True -> False.*optim.weight_decay_rule"):
        resumed.run(resume=True)
