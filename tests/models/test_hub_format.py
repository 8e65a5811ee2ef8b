"""The Hub file format (``dino_boc.models.hub_format``): round trip, half-precision storage, atomic saves,
and what ``load_model`` attaches in ``model.pretrained_cfg``.

Expected values are computed here: ``config.json`` is read with ``json``, ``model.safetensors`` with
safetensors' own reader, file hashes with ``hashlib``.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

import dino_boc
from dino_boc.errors import ConfigError
from dino_boc.models.config import FeatureDefaults
from dino_boc.models.hub_format import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, PretrainedCfg
from dino_boc.preprocess.config import PreprocessConfig
from dino_boc.weights.registry import REGISTRY, RegistryEntry

TINY = dict(embed_dim=32, depth=2, num_heads=2, patch_size=8, img_size=16)


@pytest.fixture
def model():
    """A tiny BoC model with weights that differ from any fresh init, a card, pre-processing and a feature."""
    m = dino_boc.create_model("boc", seed=0, name="tiny-format", **TINY)
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    m.preprocess = PreprocessConfig(crop=16, normalize="percentile")
    m.features = FeatureDefaults(n_last_blocks=2, avgpool=False)
    m.card = {"summary": "a test model", "licence": "MIT", "nested": {"k": [1, 2.5, "x"]}}
    return m


def files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip_gives_the_same_state_dict_and_config(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "m")
    assert set(files(folder)) == {CONFIG_NAME, WEIGHTS_NAME}
    meta = json.loads((folder / CONFIG_NAME).read_text())
    assert list(meta) == ["format_version", "library", "library_version", "name", "pretrained", "model",
                          "preprocess", "features", "card"]
    assert meta["format_version"] == FORMAT_VERSION == 1 and meta["library"] == "dino_boc"
    assert meta["library_version"] == dino_boc.__version__ and meta["name"] == "tiny-format"
    assert meta["pretrained"] is False and meta["card"] == model.card
    assert meta["model"]["embed_dim"] == 32 and meta["model"]["arch"] == "boc"
    assert meta["preprocess"]["crop"] == 16 and meta["preprocess"]["normalize"] == "percentile"
    assert meta["features"] == {"n_last_blocks": 2, "avgpool": False, "channel_pool": "concat"}

    loaded = dino_boc.load_model(folder, device="cpu")
    assert loaded.config_dict() == model.config_dict() == meta
    want = model.state_dict()
    got = loaded.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
        assert set(f.keys()) == set(want) and f.metadata()["dino_boc_format_version"] == "1"


def test_half_precision_storage_is_cast_and_read_back_as_float32(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "h", dtype=torch.float16)
    want = model.state_dict()
    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
        for key in f.keys():
            stored = f.get_tensor(key)
            assert stored.dtype == torch.float16, key
            assert torch.equal(stored, want[key].to(torch.float16)), key
    loaded = dino_boc.load_model(folder, device="cpu")
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, want[key].half().float()), key
    assert (folder / WEIGHTS_NAME).stat().st_size < 0.6 * model.save_pretrained(tmp_path / "f").joinpath(
        WEIGHTS_NAME).stat().st_size


def test_a_card_json_cannot_store_leaves_the_old_files(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "m")
    before = files(folder)
    with torch.no_grad():
        model.backbone.cls_token.add_(1.0)  # new weights that must not reach the folder
    model.card = {"tags": {"a", "b"}}  # a set: not JSON
    with pytest.raises(ConfigError, match=r"not JSON-serialisable.*card keys: \['tags'\]"):
        model.save_pretrained(folder)
    assert files(folder) == before


def test_a_failing_weights_write_leaves_the_old_files_and_no_temporary_file(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "m")
    before = files(folder)
    model.card = {"summary": "changed"}
    model.register_buffer("alias", model.backbone.cls_token.data)  # shares memory: safetensors refuses it
    with pytest.raises(RuntimeError, match="share memory"):
        model.save_pretrained(folder)
    assert files(folder) == before


def test_the_loader_keeps_its_metadata_in_pretrained_cfg(model, tmp_path, monkeypatch):
    folder = model.save_pretrained(tmp_path / "m")
    loaded = dino_boc.load_model(folder, device="cpu")
    cfg = loaded.pretrained_cfg
    assert isinstance(cfg, PretrainedCfg)
    assert cfg.source == str(folder) and cfg.revision is None and cfg.licence == "MIT"
    assert cfg.weights_sha256 == hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()
    # the old attribute names read and write the same fields
    assert (loaded.name, loaded.pretrained, loaded.weights_sha256, loaded.card) == (
        cfg.name, cfg.pretrained, cfg.weights_sha256, cfg.card)
    loaded.name, loaded.pretrained, loaded.card = "renamed", True, {"licence": "Apache-2.0"}
    assert (cfg.name, cfg.pretrained, cfg.licence) == ("renamed", True, "Apache-2.0")
    assert cfg.to_dict()["licence"] == "Apache-2.0" and cfg.to_dict()["source"] == str(folder)

    config = model.config
    monkeypatch.setitem(REGISTRY, "tiny-format-random", RegistryEntry(
        name="tiny-format-random", description="test", source="random", config=config))
    random = dino_boc.load_model("tiny-format-random", device="cpu")
    assert random.pretrained_cfg.source == "random" and random.weights_sha256 is None
    assert random.pretrained is False


def test_a_model_built_in_memory_has_empty_metadata():
    m = dino_boc.create_model("boc", seed=0, **TINY)
    assert m.pretrained_cfg == PretrainedCfg(name="untrained-boc")
    assert m.weights_sha256 is None and m.card == {} and m.pretrained_cfg.licence == ""
