"""Export a run's teacher -> load_model -> embed; the CLI train and export commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from train_helpers import random_images, tiny_config

import dino_boc
from dino_boc.cli import main as cli_main
from dino_boc.train.checkpoint import latest_checkpoint, load_checkpoint
from dino_boc.train.engine import train
from dino_boc.train.export import export_run
from dino_boc.train.sources import ArraySource


@pytest.mark.parametrize("arch", ["boc", "ha"])
def test_export_load_model_embed_uses_the_teacher(tmp_path, arch):
    cfg = tiny_config(f"model.arch={arch}", "optim.epochs=1", "train.max_iterations=2")
    train(cfg, output_dir=tmp_path / "run", sources=[ArraySource(random_images(6, channels=2, size=24))])
    out = export_run(tmp_path / "run", tmp_path / "model", name="tiny", card={"licence": "Apache-2.0"})
    model = dino_boc.load_model(out, device="cpu")
    assert model.pretrained and model.name == "tiny" and model.config.arch == arch
    assert model.config.drop_path_rate == 0.0 and model.card["licence"] == "Apache-2.0"
    assert model.card["training"]["iteration"] == 2
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"))["objective"]
    teacher = {k.removeprefix("teacher.backbone."): v for k, v in state.items() if k.startswith("teacher.backbone.")}
    assert set(teacher) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(v, teacher[k]), k
    image = np.random.default_rng(1).integers(0, 255, size=(3, 32, 32)).astype(np.uint8)
    feats = dino_boc.embed(image, model=model, n_last_blocks=1, precision="fp32")
    assert feats.shape == (len(dino_boc.feature_names(model, 3, n_last_blocks=1)),) and np.isfinite(feats).all()
    # the same features from the teacher's own tokens, computed here: CLS per channel, then patch means
    x = torch.from_numpy(image).float() / 255.0
    x = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std(dim=(1, 2), keepdim=True, unbiased=False) + 1e-7)
    with torch.no_grad():
        tok = model.forward_tokens(x[None], n_last_blocks=1)
    if arch == "boc":
        parts = [tok.cls[0, 0, c] for c in range(3)] + [tok.patch[0, c].mean(0) for c in range(3)]
        np.testing.assert_allclose(feats, torch.cat(parts).numpy(), rtol=1e-4, atol=1e-5)
    # continued pretraining starts student and teacher from the exported weights
    from dino_boc.train.engine import Trainer

    again = Trainer(cfg.replace(**{"init.weights": str(out)}), output_dir=tmp_path / "again",
                    sources=[ArraySource(random_images(6, channels=2, size=24))])
    again.setup()
    for net in (again.objective.student, again.objective.teacher):
        for k, v in model.state_dict().items():
            assert torch.equal(net.backbone.state_dict()[k], v), k
    half = export_run(tmp_path / "run", tmp_path / "half", dtype="float16")
    assert (half / "model.safetensors").stat().st_size < (out / "model.safetensors").stat().st_size * 0.6
    f16 = dino_boc.embed(image, model=dino_boc.load_model(half, device="cpu"), n_last_blocks=1)
    np.testing.assert_allclose(f16, feats, rtol=0.05, atol=0.05)


def test_cli_train_then_export(tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "crops.tif", np.stack([im[0] for im in random_images(8, size=24)]))
    from train_helpers import TINY

    run = tmp_path / "run"
    code = cli_main(["train", "tiny_cpu", *TINY, f"data.sources=[{{path: {tmp_path / 'crops.tif'}}}]",
                     "train.max_iterations=2", "--output-dir", str(run)])
    assert code == 0 and "export with: dino-boc export" in capsys.readouterr().out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    for key in ("loss/total", "loss/dino", "loss/ibot", "loss/koleo", "lr", "wd", "momentum", "teacher_temp",
                "images_per_s", "memory_mb"):
        assert key in records[0]
    code = cli_main(["train", "--resume", "--output-dir", str(run), "train.max_iterations=3"])
    assert code == 0
    assert cli_main(["export", str(run), str(tmp_path / "model"), "--dtype", "float16"]) == 0
    model = dino_boc.load_model(tmp_path / "model", device="cpu")
    assert model.card["training"]["iteration"] == 3
    assert cli_main(["train", "tiny_cpu", "optim.nope=1", "--output-dir", str(tmp_path / "x")]) == 1
    assert "valid keys of optim" in capsys.readouterr().err
