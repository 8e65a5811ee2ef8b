"""``dino-boc weights add URL``: a released checkpoint served from 127.0.0.1 (Range requests honoured, a
signed-link query string), downloaded, hash-prefix checked, converted and cached; a wrong hash is refused;
an interrupted transfer is resumed from where it stopped."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

import dino_boc
from dino_boc.cli import main
from dino_boc.errors import WeightsError

from .conftest import released_checkpoint

NAME = "dino-boc-vitl16"


class _Files(BaseHTTPRequestHandler):
    """GET with optional ``Range: bytes=N-``; ``server.cut`` > 0 sends only that many bytes once, then drops."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        body = self.server.files.get(self.path.split("?")[0])
        self.server.ranges.append(self.headers.get("Range"))
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        chunk = body[start:]
        if self.server.cut:
            chunk, self.server.cut = chunk[:self.server.cut], 0
            self.wfile.write(chunk)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    srv.files, srv.ranges, srv.cut = {}, [], 0
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The gated ViT-L/16 entry with the tiny config (as in test_weights_cache)."""
    import dataclasses

    from dino_boc.models.config import ModelConfig
    from dino_boc.weights.registry import REGISTRY

    from .conftest import TINY

    monkeypatch.setenv("DINO_BOC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(REGISTRY, NAME, dataclasses.replace(REGISTRY[NAME], config=ModelConfig(**TINY)))
    return tmp_path / "cache"


def _release(tiny_model) -> tuple[bytes, str]:
    buf = io.BytesIO()
    torch.save(released_checkpoint(tiny_model, "chunked"), buf)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def test_add_from_a_signed_url(server, cache, tiny_model, image, capsys):
    data, digest = _release(tiny_model)
    server.files[f"/dinov2/cell_dino_vitl16-{digest[:8]}.pth"] = data
    url = f"{server.url}/dinov2/cell_dino_vitl16-{digest[:8]}.pth?Policy=secret&Signature=abc"
    assert main(["weights", "add", url, "--name", NAME]) == 0
    out = capsys.readouterr().out
    assert "licence: FAIR Noncommercial" in out and "Signature" not in out
    model = dino_boc.load_model(NAME, device="cpu")
    np.testing.assert_array_equal(dino_boc.embed(image, model=model), dino_boc.embed(image, model=tiny_model))
    card = json.loads((cache / NAME / "config.json").read_text())["card"]
    assert card["source_sha256"] == digest and "FAIR Noncommercial" in card["licence"]
    assert card["source_url"] == f"{server.url}/dinov2/cell_dino_vitl16-{digest[:8]}.pth"  # no signature kept
    assert (cache / "downloads" / f"cell_dino_vitl16-{digest[:8]}.pth").read_bytes() == data


def test_a_wrong_hash_is_refused(server, cache, tiny_model):
    data, digest = _release(tiny_model)
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    server.files[f"/w-{wrong}.pth"] = data
    with pytest.raises(WeightsError, match=rf"should have a SHA-256 starting with {wrong}.*hashes to {digest}"):
        dino_boc.add_weights(f"{server.url}/w-{wrong}.pth", name=NAME, progress=False)
    assert not (cache / NAME).exists()
    assert list((cache / "downloads").iterdir()) == []  # the bad bytes are not kept
    # the same check for a local file carrying a released name
    local = cache.parent / f"w-{wrong}.pth"
    local.write_bytes(data)
    with pytest.raises(WeightsError, match="should have a SHA-256 starting with"):
        dino_boc.add_weights(local, name=NAME)


def test_an_interrupted_download_resumes(server, cache, tiny_model, image):
    data, digest = _release(tiny_model)
    server.files[f"/r-{digest[:12]}.pth"] = data
    server.cut = len(data) // 3
    url = f"{server.url}/r-{digest[:12]}.pth"
    with pytest.raises(WeightsError, match="interrupted after .* run the same command again to resume"):
        dino_boc.add_weights(url, name=NAME, progress=False)
    part = cache / "downloads" / f"r-{digest[:12]}.pth.part"
    assert part.stat().st_size == len(data) // 3
    dino_boc.add_weights(url, name=NAME, progress=False)
    assert server.ranges[-1] == f"bytes={len(data) // 3}-"
    assert not part.exists()
    np.testing.assert_array_equal(dino_boc.embed(image, model=dino_boc.load_model(NAME, device="cpu")), dino_boc.embed(image, model=tiny_model))
