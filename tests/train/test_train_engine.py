"""The training loop on CPU: schedules applied, last layer frozen, exact resume, NaN handling, every arch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from train_helpers import random_images, tiny_config

from dino_boc.errors import ConfigError
from dino_boc.train.checkpoint import latest_checkpoint, load_checkpoint
from dino_boc.train.engine import NonFiniteLossError, Trainer, train
from dino_boc.train.sources import ArraySource


def _source(channels=1, n=10, size=24, **kw):
    return [ArraySource(random_images(n, channels=channels, size=size), **kw)]


def test_schedules_reach_the_optimiser_at_chosen_iterations(tmp_path):
    cfg = tiny_config("optim.epochs=3", "optim.base_lr=0.004", "optim.lr_scaling=none", "optim.min_lr=0.0001",
                      "optim.warmup_epochs=1", "optim.freeze_last_layer_epochs=1")
    trainer = Trainer(cfg, output_dir=tmp_path, sources=_source())
    hist = trainer.run().history
    assert [h["iteration"] for h in hist] == list(range(6))  # 3 epochs x 2 iterations
    # independent formulas: linear warm-up over 2 iterations (0 -> peak), then half cosine over 4
    lr = [0.0, 0.004] + [0.0001 + 0.5 * (0.004 - 0.0001) * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    wd = [0.2 + 0.5 * (0.04 - 0.2) * (1 + math.cos(math.pi * i / 6)) for i in range(6)]
    mom = [1.0 + 0.5 * (0.99 - 1.0) * (1 + math.cos(math.pi * i / 6)) for i in range(6)]  # tiny_cpu: 0.99 -> 1
    temp = [0.04, 0.07] + [0.07] * 4  # warm-up over 1 epoch = 2 iterations
    for i in (0, 1, 3, 5):
        assert hist[i]["lr"] == pytest.approx(lr[i])
        assert hist[i]["wd"] == pytest.approx(wd[i])
        assert hist[i]["momentum"] == pytest.approx(mom[i])
        assert hist[i]["teacher_temp"] == pytest.approx(temp[i])
        assert hist[i]["last_layer_lr"] == pytest.approx(0.0 if i < 2 else lr[i])
    # the optimiser holds the last iteration's values times each group's multipliers
    for group in trainer.optimizer.param_groups:
        base = lr[5]
        assert group["lr"] == pytest.approx(base * group["lr_multiplier"])
        assert group["weight_decay"] == pytest.approx(wd[5] * group["wd_multiplier"])
    names = {n for g in trainer.optimizer.param_groups if g["lr_multiplier"] == pytest.approx(0.9 ** 3 * 0.2)
             for n in g["names"]}
    assert "backbone.backbone.patch_embed.proj.weight" in names  # layer 0 of depth 2, x 0.2


def test_last_layer_frozen_in_the_first_epoch_and_teacher_is_the_ema_of_the_student(tmp_path):
    seen, teacher_before = {}, {}

    def hook(it, terms):
        ssl = trainer.objective
        seen[it] = ssl.student.dino_head.last_layer.weight_v.detach().clone()
        if it == 3:
            teacher_before.update({k: v.clone() for k, v in ssl.teacher.state_dict().items()})

    cfg = tiny_config("optim.epochs=2", "optim.freeze_last_layer_epochs=1")
    trainer = Trainer(cfg, output_dir=tmp_path, sources=_source(), loss_hook=hook)
    hist = trainer.run().history
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[1], seen[2])  # iterations 0, 1: frozen
    assert not torch.equal(seen[2], seen[3])  # iteration 2 (epoch 1) updates it
    # after the last step (iteration 3): teacher = m * teacher_before + (1 - m) * student
    m = hist[3]["momentum"]
    s, t = trainer.objective.student.state_dict(), trainer.objective.teacher.state_dict()
    for k in ("backbone.backbone.blocks.1.mlp.fc1.weight", "dino_head.mlp.0.bias", "backbone.backbone.pos_embed",
              "dino_head.last_layer.weight_v"):
        torch.testing.assert_close(t[k], m * teacher_before[k] + (1 - m) * s[k], rtol=1e-6, atol=1e-7)
    assert all(not p.requires_grad for p in trainer.objective.teacher.parameters())


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    cfg = tiny_config("optim.epochs=3", "train.checkpoint_every=3")  # 6 iterations, drop path on
    full = train(cfg, output_dir=tmp_path / "full", sources=_source())
    first = train(cfg.replace(**{"train.max_iterations": 3}), output_dir=tmp_path / "cut", sources=_source())
    assert [h["iteration"] for h in first.history] == [0, 1, 2]
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, output_dir=tmp_path / "cut", sources=_source())
    with pytest.raises(ConfigError, match=r"optim.base_lr"):
        train(cfg.replace(**{"optim.base_lr": 0.1}), output_dir=tmp_path / "cut", sources=_source(), resume=True)
    rest = train(cfg, output_dir=tmp_path / "cut", sources=_source(), resume=True)
    assert rest.start_iteration == 3 and [h["iteration"] for h in rest.history] == [3, 4, 5]
    keys = [k for k in full.history[0] if k.startswith("loss/")]
    assert {"loss/dino", "loss/ibot", "loss/koleo", "loss/total"} <= set(keys)
    for a, b in zip(full.history, first.history + rest.history):
        assert [a[k] for k in keys] == [b[k] for k in keys]  # bit-identical
    s_full = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    s_cut = load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    assert s_full["iteration"] == s_cut["iteration"] == 6
    for k, v in s_full["objective"].items():
        assert torch.equal(v, s_cut["objective"][k]), k
    assert {"objective", "optimizer", "rng", "data", "config", "iteration"} <= set(s_cut)
    assert "dino_loss.centering.center" in s_cut["objective"] and "ibot_loss.centering.center" in s_cut["objective"]


def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    def poison(it, terms):
        if it == 4:
            return {**terms, "total": terms["total"] * float("nan")}
        return None

    cfg = tiny_config("optim.epochs=4", "train.checkpoint_every=2")
    with pytest.raises(NonFiniteLossError, match=r"iteration 4 .*checkpoint_00000004\.pt \(iteration 4\)"):
        train(cfg, output_dir=tmp_path, sources=_source(), loss_hook=poison)
    last = latest_checkpoint(tmp_path)
    state = load_checkpoint(last)
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["objective"].values() if v.is_floating_point())
    records = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4  # iterations 0-3 logged, the bad one not
    resumed = train(cfg, output_dir=tmp_path, sources=_source(), resume=True)  # the run continues from it
    assert resumed.start_iteration == 4 and math.isfinite(resumed.history[-1]["loss/total"])


@pytest.mark.parametrize(
    ("arch", "channels", "extra"),
    [
        ("boc", [1, 3, 2], []),
        ("ha", 3, ["ibot.mask_mode=per_channel"]),
        ("channel_vit", 3, ["model.max_channels=4", "data.hcs=true"]),
    ],
)
def test_each_architecture_trains_a_few_iterations(tmp_path, arch, channels, extra):
    cfg = tiny_config(f"model.arch={arch}", "optim.epochs=1", "train.max_iterations=2", *extra)
    ks = channels if isinstance(channels, list) else [channels] * 6
    sources = [ArraySource(random_images(len(ks), channels=ks, size=24), channel_ids=None)]
    result = train(cfg, output_dir=tmp_path, sources=sources)
    terms = set(result.history[0])
    assert all(math.isfinite(h["loss/total"]) for h in result.history)
    if arch == "ha":
        assert {"loss/dino_channel", "loss/koleo_channel"} <= terms
        h = result.history[0]
        w = cfg.dino
        total = (h["loss/dino"] + w.koleo_loss_weight * h["loss/koleo"] + h["loss/ibot"]
                 + w.channel_loss_weight * h["loss/dino_channel"]
                 + w.channel_koleo_loss_weight * h["loss/koleo_channel"])
        assert h["loss/total"] == pytest.approx(total, rel=1e-5)
    else:
        assert "loss/dino_channel" not in terms
    state = load_checkpoint(latest_checkpoint(tmp_path))["objective"]
    if arch == "ha":
        assert "teacher.backbone.channel_cls_token" in state
    if arch == "channel_vit":
        assert state["teacher.backbone.channel_embed"].shape == (4, 32)


def test_in_memory_and_stack_sources_from_the_config(tmp_path):
    import tifffile

    stack = np.stack([im[0] for im in random_images(8, size=24)])
    tifffile.imwrite(tmp_path / "crops.tif", stack)
    cfg = tiny_config(f"data.sources=[{{path: {tmp_path / 'crops.tif'}, kind: stack}}]", "train.max_iterations=1")
    result = train(cfg, output_dir=tmp_path / "run")
    assert result.iterations == 1 and (tmp_path / "run" / "config.yaml").is_file()
    with pytest.raises(ConfigError, match="no training data"):
        train(tiny_config(), output_dir=tmp_path / "empty")
