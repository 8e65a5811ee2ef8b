"""A Hugging Face Hub stand-in on 127.0.0.1 holding several repos, and a runner that loads models in a
subprocess against it (online, filling a private cache) or from that cache alone (``HF_HUB_OFFLINE=1``).

huggingface_hub reads ``HF_ENDPOINT``/``HF_HUB_OFFLINE`` when imported, hence the subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: the commit the server reports for a branch name; a 40-hex revision is echoed back
MAIN_COMMIT = "feedfacefeedfacefeedfacefeedfacefeedface"
_HEX40 = re.compile(r"^[0-9a-f]{40}$")


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=None, *, head=False):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head):
        repos: dict[str, dict[str, bytes]] = self.server.repos  # type: ignore[attr-defined]
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append(f"{self.command} {path}")  # type: ignore[attr-defined]
        m = (re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(/.*)?", path)
             or re.fullmatch(r"/([^/]+/[^/]+)/(resolve)/([^/]+)/(.+)", path))
        if m is None or m.group(1) not in repos:
            return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, head=head)
        files, kind, rev = repos[m.group(1)], m.group(2), m.group(3)
        commit = rev if _HEX40.match(rev) else MAIN_COMMIT
        if kind == "revision":
            info = {"id": m.group(1), "sha": commit, "siblings": [{"rfilename": f} for f in files]}
            return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head=head)
        if kind == "tree":
            tree = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for f, b in files.items()]
            return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, head=head)
        name = m.group(4)
        if name not in files:
            return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head=head)
        body = files[name]
        return self._send(200, body, {"ETag": f'"{hashlib.sha256(body).hexdigest()}"', "X-Repo-Commit": commit,
                                      "Content-Type": "application/octet-stream"}, head=head)

    def do_GET(self):  # noqa: N802
        self._serve(False)

    def do_HEAD(self):  # noqa: N802
        self._serve(True)


@contextmanager
def hub_server(repos: dict[str, dict[str, bytes]]):
    """Serve ``{repo_id: {filename: bytes}}``; yields the server (``.url``, ``.requests``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.repos = repos
    server.requests = []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_python(code: str, *, hf_home: Path, endpoint: str | None, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout first on the path and a private HF cache;
    ``endpoint=None`` runs with ``HF_HUB_OFFLINE=1``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    root = str(Path(__file__).resolve().parents[2])
    env.update(HF_HOME=str(hf_home), PYTHONPATH=os.pathsep.join([root, env.get("PYTHONPATH", "")]),
               DINO_BOC_CACHE=str(hf_home / "dino_boc"))
    if endpoint is None:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = endpoint
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
