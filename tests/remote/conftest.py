"""Servers on 127.0.0.1 for the object-store tests: moto's S3 server and a plain HTTP server with faults.

Nothing leaves the machine: the S3 server is moto's (started in a thread), credentials are fake, and
``AWS_ENDPOINT_URL`` points s3fs at it, as a user points it at MinIO or Ceph.
"""

from __future__ import annotations

import functools
import http.server
import socket
import threading
from pathlib import Path

import pytest

from dino_boc.io import fs as dfs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1; yields its URL."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """An s3fs filesystem on the local server; the AWS environment set as a user would set it."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3fs.S3FileSystem.clear_instance_cache()
    dfs.set_storage_options(None)
    yield s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    dfs.set_storage_options(None)
    s3fs.S3FileSystem.clear_instance_cache()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; paths containing ``FAIL500`` always answer 500, ``FLAKY`` answers 500 twice first,
    ``STALL`` waits 2 s before answering."""

    hits: dict[str, int] = {}

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _fault(self) -> bool:
        n = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if "STALL" in self.path:
            import time

            time.sleep(2)
        if "FAIL500" in self.path or ("FLAKY" in self.path and n <= 2):
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        return False

    def do_GET(self) -> None:
        try:
            if not self._fault():
                super().do_GET()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up on a stalled answer
            pass

    def do_HEAD(self) -> None:
        try:
            if not self._fault():
                super().do_HEAD()
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def http_root(tmp_path):
    """(folder, base URL) of a threaded HTTP server on 127.0.0.1 serving that folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = type("H", (_Handler,), {"hits": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Path(root), f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny seeded BoC model saved to disk (the CLI loads it by path); 2 blocks."""
    import dino_boc

    model = dino_boc.create_model("boc", seed=0, embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32)
    return str(model.save_pretrained(tmp_path_factory.mktemp("tiny_model")))


def make_public_bucket(s3, name: str) -> None:
    """A bucket anyone may list and read (ACL public-read), as the Cell Painting Gallery is (read with --anon)."""
    s3.mkdir(name, acl="public-read")
