"""Servers on 127.0.0.1 for the object-store tests: moto's S3 server, a plain HTTP server with faults, and a
minimal Google Cloud Storage JSON-API server.

Nothing leaves the machine: the S3 server is moto's (started in a thread), credentials are fake, and
``AWS_ENDPOINT_URL`` points s3fs at it, as a user points it at MinIO or Ceph. The GCS server answers the
calls gcsfs makes to list (with ``pageToken``), stat and download objects; ``STORAGE_EMULATOR_HOST`` points
gcsfs at it, as a user points it at an emulator, and reads are anonymous (``token="anon"``).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from dino_boc.io import fs as dfs

# gcsfs >= 2025.10 asks Google's gRPC storage-control service for each bucket's layout, which no emulator
# answers (it retries for minutes); read before gcsfs is first imported, so set here, at collection
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


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


class _GcsHandler(http.server.BaseHTTPRequestHandler):
    """The GCS JSON API over a folder: ``<root>/<bucket>/<key>`` is object ``key`` of ``bucket``.

    ``GET /storage/v1/b/<bucket>`` (bucket), ``.../o?prefix=&delimiter=&maxResults=&pageToken=`` (a page of
    the listing, keys in byte order), ``.../o/<key>`` (metadata), ``/download/storage/v1/b/<bucket>/o/<key>``
    (the bytes, ``Range`` honoured). ``list_calls`` counts listing requests.
    """

    root: Path
    list_calls: list

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode())

    def _meta(self, bucket: str, key: str, path: Path) -> dict:
        stamp = "2026-01-01T00:00:00.000Z"
        return {"kind": "storage#object", "bucket": bucket, "name": key, "size": str(path.stat().st_size),
                "generation": "1", "metageneration": "1", "updated": stamp, "timeCreated": stamp,
                "contentType": "application/octet-stream"}

    def do_GET(self) -> None:
        try:
            self._get()
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (it had what it wanted)
            pass

    def _get(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.split("/")  # the key is quoted with "/" as %2F: split before unquoting
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        download = parts[1:4] == ["download", "storage", "v1"]
        parts = parts[4:] if download else parts[3:] if parts[1:3] == ["storage", "v1"] else []
        if len(parts) < 2 or parts[0] != "b" or not (self.root / unquote(parts[1])).is_dir():
            return self._json(404, {"error": {"code": 404, "message": f"no such bucket or route: {url.path}"}})
        bucket = unquote(parts[1])
        if len(parts) == 2:
            return self._json(200, {"kind": "storage#bucket", "name": bucket, "id": bucket})
        if parts[2:] == ["o"]:
            return self._list(bucket, query)
        key = unquote("/".join(parts[3:]))
        path = self.root / bucket / key
        if not key or not path.is_file():
            return self._json(404, {"error": {"code": 404, "message": f"No such object: {bucket}/{key}"}})
        if not download:
            return self._json(200, self._meta(bucket, key, path))
        data = path.read_bytes()
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged[6:].partition("-")
            start, end = int(first or 0), min(int(last) if last else len(data) - 1, len(data) - 1)
            return self._send(206, data[start:end + 1], "application/octet-stream",
                              [("Content-Range", f"bytes {start}-{end}/{len(data)}")])
        return self._send(200, data, "application/octet-stream")

    def _list(self, bucket: str, query: dict) -> None:
        self.list_calls.append(query)
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        base = self.root / bucket
        keys = sorted(str(p.relative_to(base)).replace(os.sep, "/") for p in base.rglob("*") if p.is_file())
        entries: dict[str, bool] = {}  # name -> is a prefix
        for key in keys:
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                entries[prefix + rest[: rest.index(delimiter) + len(delimiter)]] = True
            else:
                entries[key] = False
        names = sorted(entries)
        token = query.get("pageToken", "")
        names = [n for n in names if n > token] if token else names
        size = int(query.get("maxResults", 1000))
        page, more = names[:size], len(names) > size
        payload = {"kind": "storage#objects",
                   "items": [self._meta(bucket, n, base / n) for n in page if not entries[n]],
                   "prefixes": [n for n in page if entries[n]]}
        if more:
            payload["nextPageToken"] = page[-1]
        self._json(200, payload)


@pytest.fixture
def gcs(tmp_path, monkeypatch):
    """(folder whose sub-folders are buckets, the server's URL): a GCS JSON-API server on 127.0.0.1 that
    gcsfs reaches through ``STORAGE_EMULATOR_HOST``. Google's metadata server is pointed at a closed local
    port, so a read without ``token="anon"`` fails here instead of looking for credentials elsewhere."""
    pytest.importorskip("gcsfs")
    root = tmp_path / "gcs"
    root.mkdir()
    handler = type("G", (_GcsHandler,), {"root": root, "list_calls": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    for name in ("GCE_METADATA_HOST", "GCE_METADATA_IP"):
        monkeypatch.setenv(name, f"127.0.0.1:{_free_port()}")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    dfs.set_storage_options(None)
    yield root, url, handler.list_calls
    dfs.set_storage_options(None)
    server.shutdown()
    server.server_close()
