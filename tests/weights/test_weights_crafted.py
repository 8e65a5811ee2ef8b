"""Crafted weights and configs: every invalid value is a WeightsError/ConfigError; shapes are read from the
file before a model is built, so a file cannot make dino_boc allocate more than it holds; NaN/inf weights and
``preprocess.scale: 0`` are refused at load."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import dino_boc
from dino_boc.errors import ConfigError, WeightsError
from dino_boc.models.config import ModelConfig
from dino_boc.preprocess.config import PreprocessConfig

from .conftest import TINY, backbone_state


def _edit_config(folder, edit):
    meta = json.loads((folder / "config.json").read_text())
    meta = edit(meta)
    (folder / "config.json").write_text(json.dumps(meta, allow_nan=True))
    return folder


def _set(section, key, value):
    def edit(meta):
        meta[section][key] = value
        return meta
    return edit


INVALID_CONFIGS = {
    "the whole file a JSON list": lambda meta: [meta],
    "model section a list": lambda meta: {**meta, "model": [meta["model"]]},
    "model section missing": lambda meta: {k: v for k, v in meta.items() if k != "model"},
    "depth a string": _set("model", "depth", "4"),
    "depth NaN": _set("model", "depth", math.nan),
    "depth a float": _set("model", "depth", 4.0),
    "depth true": _set("model", "depth", True),
    "depth 1e6": _set("model", "depth", 1_000_000),
    "embed_dim 2**20": _set("model", "embed_dim", 2**20),
    "mlp_ratio 1e6": _set("model", "mlp_ratio", 1e6),
    "mlp_ratio negative": _set("model", "mlp_ratio", -4.0),
    "mlp_ratio NaN": _set("model", "mlp_ratio", math.nan),
    "mlp_ratio a string": _set("model", "mlp_ratio", "4"),
    "num_heads 0": _set("model", "num_heads", 0),
    "patch_size negative": _set("model", "patch_size", -8),
    "init_values inf": _set("model", "init_values", math.inf),
    "layer_norm_eps 0": _set("model", "layer_norm_eps", 0.0),
    "drop_path_rate 2": _set("model", "drop_path_rate", 2.0),
    "qkv_bias a string": _set("model", "qkv_bias", "yes"),
    "channel_names a string": _set("model", "channel_names", "DNA"),
    "arch a list": _set("model", "arch", ["boc"]),
    "grid of 2048 patches": lambda meta: {**meta, "model": {**meta["model"], "img_size": 2048, "patch_size": 1}},
    "preprocess a list": lambda meta: {**meta, "preprocess": []},
    "preprocess.scale 0": _set("preprocess", "scale", 0),
    "preprocess.scale NaN": _set("preprocess", "scale", math.nan),
    "preprocess.scale a string": _set("preprocess", "scale", "255"),
    "preprocess.eps negative": _set("preprocess", "eps", -1e-7),
    "preprocess.percentiles strings": _set("preprocess", "percentiles", ["a", "b"]),
    "preprocess.percentiles three": _set("preprocess", "percentiles", [1, 50, 99]),
    "preprocess.crop a float": _set("preprocess", "crop", 32.0),
    "card a list": lambda meta: {**meta, "card": ["x"]},
    "name a number": lambda meta: {**meta, "name": 3},
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny model saved once; each test edits its own copy."""
    return dino_boc.create_model("boc", seed=0, **TINY).save_pretrained(tmp_path_factory.mktemp("saved") / "model")


@pytest.fixture
def folder(saved, tmp_path):
    return Path(shutil.copytree(saved, tmp_path / "model"))


@pytest.mark.parametrize("case", list(INVALID_CONFIGS))
def test_every_invalid_config_is_a_weights_error(folder, case):
    _edit_config(folder, INVALID_CONFIGS[case])
    with pytest.raises(WeightsError, match=r"config\.json"):
        dino_boc.load_model(folder, device="cpu")


@pytest.mark.parametrize("field,value", [("depth", 1_000_000), ("embed_dim", 2**20), ("mlp_ratio", 1e6),
                                         ("depth", "4"), ("mlp_ratio", math.nan), ("num_heads", -2)])
def test_model_config_bounds_in_python(field, value):
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**{**TINY, field: value})


def test_bounds_admit_the_released_architectures():
    for dim, depth, heads, ratio in ((384, 12, 6, 4.0), (1024, 24, 16, 4.0), (1536, 40, 24, 4096 / 1536)):
        ModelConfig(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio)  # ViT-S, ViT-L, ViT-g


@pytest.mark.parametrize("kw", [{"scale": 0}, {"scale": -255.0}, {"scale": math.inf}, {"eps": 0.0}, {"resize": True}])
def test_preprocess_config_refuses_divisors_that_give_nan(kw):
    with pytest.raises(ConfigError):
        PreprocessConfig(**kw)


def test_declared_architecture_is_checked_against_the_keys(tmp_path):
    ha = dino_boc.create_model("ha", seed=0, **TINY)
    folder = _edit_config(ha.save_pretrained(tmp_path / "ha"), _set("model", "arch", "boc"))
    with pytest.raises(WeightsError, match="the weights hold 'channel_cls_token', a key of arch='ha' models, but the "
                                           "configuration declares arch='boc'"):
        dino_boc.load_model(folder, device="cpu")
    boc = dino_boc.create_model("boc", seed=0, **TINY).save_pretrained(tmp_path / "boc")
    _edit_config(boc, _set("model", "arch", "ha"))
    with pytest.raises(WeightsError, match="the configuration declares arch='ha', but the weights lack its 'channel_cls_token'"):
        dino_boc.load_model(boc, device="cpu")


def test_non_floating_tensors_are_refused(folder):
    state = load_file(str(folder / "model.safetensors"))
    state["backbone.cls_token"] = torch.zeros(state["backbone.cls_token"].shape, dtype=torch.int64)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match=r"non-floating tensors \[\('backbone.cls_token', 'I64'\)\]"):
        dino_boc.load_model(folder, device="cpu")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused_at_load(folder, bad):
    state = load_file(str(folder / "model.safetensors"))
    key = "backbone.blocks.1.attn.qkv.weight"
    state[key] = state[key].clone()
    state[key][3, 5] = bad
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match=rf"NaN or infinite values in \['{key}'\]"):
        dino_boc.load_model(folder, device="cpu")


def test_non_finite_checkpoint_is_refused_by_load_and_add(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("DINO_BOC_CACHE", str(tmp_path / "cache"))
    state = backbone_state(tiny_model)
    state["norm.weight"][0] = math.nan
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"NaN or infinite values in \['backbone.norm.weight'\]"):
        dino_boc.load_model(tmp_path / "nan.pth", device="cpu")
    with pytest.raises(WeightsError, match="NaN or infinite"):
        dino_boc.add_weights(tmp_path / "nan.pth", name="nan-model")
    assert not (tmp_path / "cache" / "nan-model").exists()


@pytest.mark.parametrize("mutate,message", [
    (lambda s: s.update({"cls_token": s["cls_token"][0, 0]}), r"cls_token has shape \(128,\); expected 3"),
    (lambda s: s.update({"pos_embed": torch.zeros(1, 1, 128)}), "pos_embed has 0 patch positions"),
    (lambda s: s.update({"blocks.7.norm1.weight": torch.ones(128)}), r"block 4 is missing"),
    (lambda s: s.update({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}), r"blocks.0.attn.qkv.weight: checkpoint"),
    (lambda s: s.update({"registers": torch.zeros(1, 4, 128)}), r"unexpected keys \['backbone.registers'\]"),
])
def test_crafted_checkpoints(tiny_model, tmp_path, mutate, message):
    state = backbone_state(tiny_model)
    mutate(state)
    torch.save(state, tmp_path / "crafted.pth")
    with pytest.raises(WeightsError, match=message):
        dino_boc.load_model(tmp_path / "crafted.pth", device="cpu")


_PEAK = """
import json, resource, sys
import dino_boc
from dino_boc.errors import DinoBocError
out = {"import_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
for spec in sys.argv[1:]:
    try:
        dino_boc.load_model(spec, device="cpu")
        outcome = "loaded"
    except DinoBocError as exc:
        outcome = type(exc).__name__ + ": " + str(exc)[:300]
    out[spec] = {"outcome": outcome, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
print("RESULT " + json.dumps(out))
"""


def test_crafted_files_build_nothing_large(tiny_model, tmp_path):
    """A .pth whose one extra key says 'block 999999', and a config.json in bounds whose model would hold
    ~10^12 parameters next to tiny weights: both refused, peak memory that of the import (in a subprocess)."""
    state = backbone_state(tiny_model)
    state["blocks.999999.norm1.weight"] = torch.ones(128)
    torch.save(state, tmp_path / "deep.pth")
    huge = _edit_config(tiny_model.save_pretrained(tmp_path / "huge"), lambda meta: {
        **meta, "model": {**meta["model"], "embed_dim": 16384, "num_heads": 128, "depth": 64, "mlp_ratio": 64.0}})
    specs = {str(tmp_path / "deep.pth"): "block 4 is missing", str(huge): "do not fit the 'boc' architecture"}
    proc = subprocess.run([sys.executable, "-c", _PEAK, *specs], capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stderr[-2000:]
    result = json.loads(line[len("RESULT "):])
    for spec, message in specs.items():
        got = result[spec]
        assert got["outcome"].startswith("WeightsError") and message in got["outcome"], got
        assert got["peak_mb"] < result["import_mb"] + 200, (spec, got, result["import_mb"])
