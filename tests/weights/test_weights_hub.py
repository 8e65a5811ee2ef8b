"""Hub round trip without the network: a save_pretrained folder, and a Hub-compatible HTTP server on
127.0.0.1 (``HF_ENDPOINT``) whose download is then reused from the cache with ``HF_HUB_OFFLINE=1``.

huggingface_hub reads ``HF_ENDPOINT``/``HF_HUB_OFFLINE`` when it is imported, so the loads run in
subprocesses with their own environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dino_boc
from dino_boc.errors import WeightsError
from dino_boc.preprocess.config import PreprocessConfig

from . import zoo_hub

REPO = "org/tiny"


# ---------------------------------------------------------------- a local folder
def test_save_pretrained_round_trip(tiny_model, image, tmp_path):
    tiny_model.preprocess = PreprocessConfig(crop=32)
    folder = tiny_model.save_pretrained(tmp_path / "model")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format_version"] == 1 and meta["pretrained"] is False
    assert meta["model"]["embed_dim"] == 128 and meta["preprocess"]["crop"] == 32
    loaded = dino_boc.load_model(folder, device="cpu")
    assert loaded.config == tiny_model.config and loaded.preprocess == tiny_model.preprocess
    assert loaded.pretrained is False  # random weights stay random after a round trip
    np.testing.assert_array_equal(dino_boc.embed(image, model=loaded), dino_boc.embed(image, model=tiny_model))


def test_half_precision_save(tiny_model, image, tmp_path):
    loaded = dino_boc.load_model(tiny_model.save_pretrained(tmp_path / "fp16", dtype=torch.float16), device="cpu")
    assert next(loaded.parameters()).dtype == torch.float32
    np.testing.assert_allclose(dino_boc.embed(image, model=loaded), dino_boc.embed(image, model=tiny_model), atol=0.05, rtol=0)


def test_corrupt_config_json(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "model")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match=r"config\.json is not valid JSON"):
        dino_boc.load_model(folder, device="cpu")


def test_config_json_with_an_unknown_field(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "model")
    meta = json.loads((folder / "config.json").read_text())
    meta["model"]["n_registers"] = 4
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match=r"invalid model section.*n_registers"):
        dino_boc.load_model(folder, device="cpu")


def test_config_json_that_does_not_fit_the_weights(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "model")
    meta = json.loads((folder / "config.json").read_text())
    meta["model"]["depth"] = 5
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match=r"missing keys \['backbone\.blocks\.4\."):
        dino_boc.load_model(folder, device="cpu")


def test_corrupt_safetensors_and_missing_files(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "model")
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match=r"cannot read .*model\.safetensors"):
        dino_boc.load_model(folder, device="cpu")
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="must hold config.json and model.safetensors"):
        dino_boc.load_model(folder, device="cpu")


# ---------------------------------------------------------------- a Hub-compatible server
@pytest.fixture
def hub_server(tiny_model, tmp_path):
    """A server on 127.0.0.1 holding ``org/tiny`` (the tiny model's save_pretrained files)."""
    folder = tiny_model.save_pretrained(tmp_path / "upload")
    with zoo_hub.hub_server({REPO: {p.name: p.read_bytes() for p in sorted(folder.iterdir())}}) as server:
        yield server


_SCRIPT = """
import json, sys
import numpy as np
import dino_boc
from dino_boc.errors import ModelNotFoundError
out = {}
img = np.random.default_rng(0).integers(0, 4096, size=(3, 40, 32)).astype(np.uint16)
for spec in sys.argv[2:]:
    try:
        model = dino_boc.load_model(spec, device="cpu")
    except ModelNotFoundError as exc:
        out[spec] = {"error": type(exc).__name__, "message": str(exc)}
        continue
    np.save(f"{sys.argv[1]}/{spec.replace('/', '_').replace(':', '_')}.npy", dino_boc.embed(img, model=model))
    out[spec] = {"name": model.name, "pretrained": model.pretrained}
print("RESULT " + json.dumps(out))
"""


def _load_in_subprocess(tmp_path: Path, specs: list[str], env: dict[str, str]) -> dict:
    base = {k: v for k, v in os.environ.items()
            if not k.upper().startswith(("HF_", "HUGGINGFACE_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"))}
    base.update({"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1",
                 "no_proxy": "127.0.0.1", "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "10"})
    base.update(env)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path), *specs], env=base, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return json.loads(line[len("RESULT "):])


def test_hub_download_then_offline_cache(hub_server, tiny_model, image, tmp_path):
    endpoint = f"http://127.0.0.1:{hub_server.server_address[1]}"
    online = _load_in_subprocess(tmp_path, [f"hf-hub:{REPO}", "hf-hub:org/absent"],
                                 {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"})
    assert online[f"hf-hub:{REPO}"] == {"name": "untrained-boc", "pretrained": False}
    assert online["hf-hub:org/absent"]["error"] == "ModelNotFoundError"
    assert any(r.startswith("GET /org/tiny/resolve/") and "model.safetensors" in r for r in hub_server.requests)
    want = dino_boc.embed(image, model=tiny_model)
    np.testing.assert_array_equal(np.load(tmp_path / "hf-hub_org_tiny.npy"), want)
    (tmp_path / "hf-hub_org_tiny.npy").unlink()

    hub_server.shutdown()  # from here on the endpoint refuses connections
    hub_server.server_close()
    n_requests = len(hub_server.requests)
    offline = _load_in_subprocess(tmp_path, [f"hf-hub:{REPO}", REPO, "hf-hub:org/uncached"],
                                  {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "1"})
    assert len(hub_server.requests) == n_requests
    assert offline[f"hf-hub:{REPO}"]["pretrained"] is False
    np.testing.assert_array_equal(np.load(tmp_path / "hf-hub_org_tiny.npy"), want)
    np.testing.assert_array_equal(np.load(tmp_path / "org_tiny.npy"), want)
    missing = offline["hf-hub:org/uncached"]
    assert missing["error"] == "ModelNotFoundError"
    assert "not in the local cache" in missing["message"] and "HF_HUB_OFFLINE=1" in missing["message"]
