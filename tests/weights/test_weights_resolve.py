"""``as_model``: the one helper turning a ``model=`` argument into a model."""

from __future__ import annotations

import pytest
import torch

from dino_boc.errors import InputError
from dino_boc.models import ModelConfig
from dino_boc.weights import resolve
from dino_boc.weights.registry import REGISTRY, RegistryEntry


@pytest.fixture
def tiny_name(monkeypatch):
    monkeypatch.setattr(resolve, "_CACHE", {})
    config = ModelConfig(embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32)
    monkeypatch.setitem(REGISTRY, "tiny-resolve", RegistryEntry(name="tiny-resolve", description="test",
                                                                source="random", config=config))
    return "tiny-resolve"


def test_a_model_is_returned_as_is(tiny_name):
    model = resolve.as_model(tiny_name, device="cpu")
    assert resolve.as_model(model) is model


def test_cache_gives_one_object_per_name_and_device(tiny_name):
    first = resolve.as_model(tiny_name, device="cpu", cache=True)
    assert resolve.as_model(tiny_name, device="cpu", cache=True) is first
    fresh = resolve.as_model(tiny_name, device="cpu")
    assert fresh is not first and fresh.name == first.name == tiny_name and fresh.pretrained is False
    assert next(fresh.parameters()).device == torch.device("cpu")


@pytest.mark.parametrize("bad", [object(), 3, None])
def test_anything_else_is_one_input_error(bad):
    with pytest.raises(InputError, match=r"model must be a dino_boc model or a model name/path, got"):
        resolve.as_model(bad)


def _cache_key(model):
    from dino_boc.eval.chammi import cache_key
    from dino_boc.eval.presets import get_preset

    return cache_key(model, get_preset("chammi"))


def _patch_maps(model):
    import numpy as np

    from dino_boc.plot.patches import patch_maps

    return patch_maps(np.zeros((1, 16, 16), np.uint8), model=model)


@pytest.mark.parametrize("call", ["engine.get_model", "engine.default_model", "eval.chammi.cache_key",
                                  "plot.patches.patch_maps"])
def test_every_model_argument_goes_through_as_model(call, tiny_name):
    """engine, CHAMMI's cache key and the patch maps: a name loads the process's one cached model, anything
    that is neither a model nor a name is the one InputError."""
    from dino_boc import engine

    fn = {"engine.get_model": engine.get_model, "engine.default_model": engine.default_model,
          "eval.chammi.cache_key": _cache_key, "plot.patches.patch_maps": _patch_maps}[call]
    with pytest.raises(InputError, match=r"model must be a dino_boc model or a model name/path, got int"):
        fn(3)
    if call.startswith("engine"):
        assert fn(tiny_name) is resolve.as_model(tiny_name, cache=True)
