"""Gated weights: `add_weights` / `dino-boc weights add` cache a checkpoint where load_model(name) finds it;
when they are missing, the error says where to request them, what to run and where it looked."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import dino_boc
from dino_boc.cli import main
from dino_boc.errors import WeightsError
from dino_boc.models.config import ModelConfig
from dino_boc.weights.registry import REGISTRY, REQUEST_URL, RegistryEntry

from .conftest import TINY

NAME = "dino-boc-vitl16"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty $DINO_BOC_CACHE and the registry's gated ViT-L/16 entry replaced by the tiny config."""
    root = tmp_path / "cache"
    monkeypatch.setenv("DINO_BOC_CACHE", str(root))
    real = REGISTRY[NAME]
    monkeypatch.setitem(REGISTRY, NAME, RegistryEntry(
        name=NAME, description="tiny stand-in for the gated model", source="gated", config=ModelConfig(**TINY),
        licence=real.licence, request_url=real.request_url, paper=real.paper,
    ))
    return root


def test_missing_gated_weights_say_where_to_get_them(cache):
    with pytest.raises(WeightsError) as info:
        dino_boc.load_model(NAME, device="cpu")
    msg = str(info.value)
    assert REQUEST_URL in msg
    assert f"dino-boc weights add CHECKPOINT.pth --name {NAME}" in msg
    assert f"Looked in: {cache / NAME}" in msg


def test_the_real_registry_entry_is_gated_too(tmp_path, monkeypatch):
    monkeypatch.setenv("DINO_BOC_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="(?s)request them at https://ai.meta.com/.*dino-boc weights add"):
        dino_boc.load_model(NAME, device="cpu")


def test_add_weights_then_load_by_name(cache, tiny_model, image, write_checkpoint):
    ckpt = write_checkpoint(tiny_model, "training")
    target = dino_boc.add_weights(ckpt, sha256=hashlib.sha256(ckpt.read_bytes()).hexdigest().upper())
    assert target == cache / NAME
    assert sorted(p.name for p in target.iterdir()) == [".dino_boc_model", "config.json", "model.safetensors"]
    meta = json.loads((target / "config.json").read_text())
    assert meta["pretrained"] is True and meta["card"]["source_checkpoint"] == "training.pth"
    assert meta["card"]["source_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    ckpt.unlink()  # converted once: the original is no longer needed
    model = dino_boc.load_model(NAME, device="cpu")
    assert model.name == NAME and model.pretrained is True and model.config == tiny_model.config
    np.testing.assert_array_equal(dino_boc.embed(image, model=model), dino_boc.embed(image, model=tiny_model))


def test_add_weights_rejects_a_wrong_hash(cache, tiny_model, write_checkpoint):
    ckpt = write_checkpoint(tiny_model, "plain")
    with pytest.raises(WeightsError, match="expected 0000.*the download may be corrupt"):
        dino_boc.add_weights(ckpt, sha256="0000")
    assert not (cache / NAME).exists()


def test_add_weights_rejects_another_architecture(cache, write_checkpoint):
    other = dino_boc.create_model("boc", seed=0, **{**TINY, "depth": 2})
    with pytest.raises(WeightsError, match=f"{NAME!r} is registered as"):
        dino_boc.add_weights(write_checkpoint(other, "plain"))
    assert not (cache / NAME).exists()


def test_add_weights_of_a_missing_file(cache, tmp_path):
    with pytest.raises(WeightsError, match="nothing.pth does not exist"):
        dino_boc.add_weights(tmp_path / "nothing.pth")


def test_cli_weights_list_and_add(cache, tiny_model, image, write_checkpoint, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name in dino_boc.list_models():
        assert name in out
    assert "not here (gated)" in next(line for line in out.splitlines() if line.startswith(NAME))

    ckpt = write_checkpoint(tiny_model, "chunked")
    assert main(["weights", "add", str(ckpt), "--name", NAME]) == 0
    assert f"as {NAME!r} in {cache / NAME}" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    assert " cached " in next(line for line in capsys.readouterr().out.splitlines() if line.startswith(NAME))
    np.testing.assert_array_equal(dino_boc.embed(image, model=dino_boc.load_model(NAME, device="cpu")), dino_boc.embed(image, model=tiny_model))


def test_cli_weights_add_error_is_printed(cache, tmp_path, capsys):
    assert main(["weights", "add", str(tmp_path / "missing.pth")]) == 1
    assert "error:" in capsys.readouterr().err


def test_cache_dir_defaults(monkeypatch, tmp_path):
    from dino_boc.weights.registry import cache_dir

    monkeypatch.delenv("DINO_BOC_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "dino_boc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "dino_boc"
