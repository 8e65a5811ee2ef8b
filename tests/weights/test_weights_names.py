"""Names that become paths: ``add_weights(name=)`` / ``weights add --name`` stay inside the cache and never
delete a folder dino_boc did not make; Hub revisions and repo ids that could reach outside the Hub cache
(or that huggingface_hub rejects) are our errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dino_boc
from dino_boc.cli import main
from dino_boc.errors import ConfigError, ModelNotFoundError, WeightsError
from dino_boc.weights.names import MARKER_NAME, check_revision

from .conftest import TINY, backbone_state

UNSAFE_NAMES = ["../victim", "./../victim", "a/b", "..", ".", "", ".hidden", "x" * 200, "a\\b", "ok\n", "dino..boc"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("DINO_BOC_CACHE", str(root))
    return root


@pytest.fixture
def victim(tmp_path):
    """A user's folder next to the cache, with a file that must survive."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "thesis.txt").write_text("irreplaceable")
    return folder


def _untouched(folder):
    assert (folder / "thesis.txt").read_text() == "irreplaceable"
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory):
    """A valid released-layout checkpoint, written once: only the name can make add_weights fail."""
    path = tmp_path_factory.mktemp("ckpt") / "plain.pth"
    torch.save(backbone_state(dino_boc.create_model("boc", seed=0, **TINY)), path)
    return path


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_names_are_refused_before_any_work(cache, victim, plain_checkpoint, name):
    ckpt = plain_checkpoint
    with pytest.raises(ConfigError, match="is not allowed; expected one folder name"):
        dino_boc.add_weights(ckpt, name=name)
    _untouched(victim)
    assert not cache.exists() or not any(cache.iterdir())


def test_absolute_name_through_the_cli(cache, victim, tiny_model, write_checkpoint, capsys):
    ckpt = write_checkpoint(tiny_model, "plain")
    for name in (str(victim), "./../victim", "../victim"):
        assert main(["weights", "add", str(ckpt), "--name", name]) == 1
        assert "is not allowed" in capsys.readouterr().err
    _untouched(victim)


def test_a_symlink_in_the_cache_is_not_followed(cache, victim, tiny_model, write_checkpoint):
    cache.mkdir()
    (cache / "linked").symlink_to(victim, target_is_directory=True)
    with pytest.raises(WeightsError, match="outside the cache"):
        dino_boc.add_weights(write_checkpoint(tiny_model, "plain"), name="linked")
    _untouched(victim)
    assert (cache / "linked").is_symlink()


def test_a_folder_that_is_not_ours_is_left_alone(cache, tiny_model, write_checkpoint):
    mine = cache / "my-model"
    mine.mkdir(parents=True)
    (mine / "thesis.txt").write_text("irreplaceable")
    (mine / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match=f"not a model folder cached by dino_boc \\(no {MARKER_NAME}"):
        dino_boc.add_weights(write_checkpoint(tiny_model, "plain"), name="my-model")
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "thesis.txt"]
    assert sorted(p.name for p in cache.iterdir()) == ["my-model"]  # no temporary folder left behind
    with pytest.raises(WeightsError, match="not a model folder cached by dino_boc"):  # refused before reading
        dino_boc.add_weights(cache / "no-such-checkpoint.pth", name="my-model")


def test_a_look_alike_folder_of_another_library_is_left_alone(cache, tiny_model, write_checkpoint):
    other = cache / "hf-model"
    other.mkdir(parents=True)
    (other / "config.json").write_text('{"library": "transformers", "format_version": 1}')
    (other / "model.safetensors").write_bytes(b"someone else's weights")
    with pytest.raises(WeightsError, match="not a model folder cached by dino_boc"):
        dino_boc.add_weights(write_checkpoint(tiny_model, "plain"), name="hf-model")
    assert (other / "model.safetensors").read_bytes() == b"someone else's weights"


def test_a_previous_model_folder_is_replaced_and_found_by_its_name(cache, tiny_model, write_checkpoint, image):
    first = dino_boc.add_weights(write_checkpoint(tiny_model, "plain"), name="my-model.v2")
    assert first == cache / "my-model.v2" and (first / MARKER_NAME).is_file()
    other = dino_boc.create_model("boc", seed=1, **TINY)
    dino_boc.add_weights(write_checkpoint(other, "chunked"), name="my-model.v2")
    assert sorted(p.name for p in cache.iterdir()) == ["my-model.v2"]  # nothing left beside it
    loaded = dino_boc.load_model("my-model.v2", device="cpu")  # not a registry name: found in the cache
    np.testing.assert_array_equal(dino_boc.embed(image, model=loaded), dino_boc.embed(image, model=other))
    assert not np.array_equal(dino_boc.embed(image, model=loaded), dino_boc.embed(image, model=tiny_model))


def test_a_folder_of_dino_boc_0_1_without_marker_is_replaced(cache, tiny_model, write_checkpoint, image):
    tiny_model.save_pretrained(cache / "old")  # 0.1 wrote exactly config.json and model.safetensors
    other = dino_boc.create_model("boc", seed=1, **TINY)
    dino_boc.add_weights(write_checkpoint(other, "plain"), name="old")
    np.testing.assert_array_equal(dino_boc.embed(image, model=dino_boc.load_model("old", device="cpu")), dino_boc.embed(image, model=other))


def test_a_folder_without_marker_is_not_loaded_by_bare_name(cache, tiny_model, monkeypatch, tmp_path):
    folder = cache / "stray"
    tiny_model.save_pretrained(folder)
    (folder / "notes.txt").write_text("not a model folder of ours")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="unknown model 'stray'"):
        dino_boc.load_model("stray", device="cpu")


# ---------------------------------------------------------------- revisions and Hub ids
@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/3", "release_2024-01", "0123456789abcdef" * 2 + "01234567"])
def test_good_revisions(revision):
    assert check_revision(revision) == revision


@pytest.mark.parametrize("revision", ["../../../x", "main/../../x", "/etc", "refs//x", ".hidden", "a/.b", "x.lock",
                                      "x/", "with space", "a\\b", "", "~1", "x" * 300])
def test_revisions_that_could_leave_the_hub_cache(revision, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match="is not a branch or tag name nor a 40-hex commit"):
        dino_boc.load_model("hf-hub:org/tiny", revision=revision, device="cpu")
    assert not (tmp_path / "hub").exists()  # refused before huggingface_hub was called


@pytest.mark.parametrize("spec", ["hf-hub:org/a--b", "hf-hub:org/..", "hf-hub:org/a..b", "org/-x-", "hf-hub:a/b/c"])
def test_hub_ids_that_huggingface_hub_rejects(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="not a valid Hub repo id|unknown model"):
        dino_boc.load_model(spec, device="cpu")


def test_weights_list_shows_models_added_under_a_new_name(cache, tiny_model, write_checkpoint, capsys):
    dino_boc.add_weights(write_checkpoint(tiny_model, "plain"), name="my-model")
    (cache / "not-a-model").mkdir()
    (cache / "not-a-model" / "notes.txt").write_text("x")
    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("my-model ") and " cached " in line for line in lines)
    assert not any(line.startswith("not-a-model") for line in lines)


def test_num_heads_zero_is_refused_not_defaulted(cache, tiny_model, write_checkpoint):
    with pytest.raises(ConfigError, match="num_heads=0"):
        dino_boc.add_weights(write_checkpoint(tiny_model, "plain"), name="zero-heads", num_heads=0)
    assert not (cache / "zero-heads").exists()


@pytest.mark.parametrize("device", ["gpu", "cuda:x", 3.5])
def test_an_invalid_device_is_a_config_error(tiny_model, tmp_path, device):
    with pytest.raises(ConfigError, match="is not a torch device"):
        dino_boc.load_model(tiny_model.save_pretrained(tmp_path / "m"), device=device)


@pytest.mark.parametrize("name", ["random-init-boc-vits16", "dino-boc-vitt16-nuclei-demo"])
def test_names_of_shipped_or_random_models_are_refused(cache, tiny_model, write_checkpoint, name):
    """load_model(name) returns the shipped / random model whatever the cache holds: adding would be ignored."""
    with pytest.raises(ConfigError, match="choose another --name"):
        dino_boc.add_weights(write_checkpoint(tiny_model, "plain"), name=name)
    assert not cache.exists() or not any(cache.iterdir())


# ---------------------------------------------------------------- explicit hf-hub: / local-dir: spellings
def test_an_ambiguous_org_name_asks_for_a_prefix_and_each_prefix_resolves_it(tiny_model, monkeypatch, tmp_path, image):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    tiny_model.save_pretrained(tmp_path / "org" / "tiny")  # "org/tiny" is a folder here and a Hub id's shape
    with pytest.raises(ModelNotFoundError) as info:
        dino_boc.load_model("org/tiny", device="cpu")
    assert "'local-dir:org/tiny'" in str(info.value) and "'hf-hub:org/tiny'" in str(info.value)
    with pytest.raises(ModelNotFoundError, match="could be the local path"):
        dino_boc.load_model("org/other", device="cpu")  # org/ exists: a typo of a folder, or a Hub repo
    local = dino_boc.load_model("local-dir:org/tiny", device="cpu")
    np.testing.assert_array_equal(dino_boc.embed(image, model=local), dino_boc.embed(image, model=tiny_model))
    np.testing.assert_array_equal(dino_boc.embed(image, model=dino_boc.load_model("./org/tiny", device="cpu")),
                                  dino_boc.embed(image, model=tiny_model))  # ./ is a path, never the Hub
    with pytest.raises(ModelNotFoundError) as hub:  # the Hub spelling never reads the folder (offline: not cached)
        dino_boc.load_model("hf-hub:org/tiny", device="cpu")
    assert "could be the local path" not in str(hub.value)
    with pytest.raises(ModelNotFoundError, match="local-dir:org/missing: no such folder"):
        dino_boc.load_model("local-dir:org/missing", device="cpu")
