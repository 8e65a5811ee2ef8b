"""Images/s read from a local S3 server (moto, 127.0.0.1) vs local disk, by concurrent fetches.

    python benchmarks/bench_remote.py --sites 48 --size 512 --threads 1 2 4 8 16 [--latency-ms 30]

Writes ``--sites`` Cell Painting-like sites (5 channels, one LZW TIFF of ``size`` x ``size`` uint16 per
channel) to a temporary folder and to a bucket on moto's server, then reads every site as
``ImageRecord.read()`` does (a site's 5 channel objects are fetched concurrently, see
``dino_boc.io.fs.FETCH_THREADS``), with ``--threads`` sites in flight at once (as DataLoader workers
would be). Prints sites/s for disk and S3 at each concurrency. moto is a Python server on the same
cores (in its own process), so this measures the per-request overhead and how concurrency hides it, not a real network.
``--latency-ms`` puts a proxy in front of it that waits that long before each request, as a distant
object store does (first-byte latency of S3 from another region is tens of ms).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile

from dino_boc.io import ImageRecord

CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(base: str, sites: int) -> list[ImageRecord]:
    return [ImageRecord(id=f"s{i}", paths=tuple(f"{base}/s{i:04d}-{ch}.tiff" for ch in CHANNELS),
                        channel_names=tuple(CHANNELS)) for i in range(sites)]


def _latency_proxy(target_port: int, latency_s: float) -> str:
    """A threaded HTTP proxy on 127.0.0.1 that sleeps ``latency_s`` then forwards the request to moto."""
    import http.client
    import http.server
    import threading

    class Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _forward(self) -> None:
            time.sleep(latency_s)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            conn = http.client.HTTPConnection("127.0.0.1", target_port)
            conn.request(self.command, self.path, body=body, headers=dict(self.headers))
            reply = conn.getresponse()
            data = reply.read()
            self.send_response(reply.status)
            for key, value in reply.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def _rate(records: list[ImageRecord], threads: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        n = sum(1 for _ in pool.map(lambda r: r.read(), records))
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=48)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--latency-ms", type=float, default=0.0, help="added before every S3 request (default 0)")
    args = ap.parse_args()
    import subprocess
    import sys

    port = _free_port()  # moto in its own process, so that it does not share this one's GIL
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
                      AWS_DEFAULT_REGION="us-east-1")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    import s3fs

    rng = np.random.default_rng(0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.sites):
                for ch in CHANNELS:
                    plane = rng.integers(0, 4096, size=(args.size, args.size), dtype=np.uint16)
                    tifffile.imwrite(Path(tmp) / f"s{i:04d}-{ch}.tiff", plane, compression="lzw")
            fs = s3fs.S3FileSystem()
            fs.mkdir("bench")
            fs.put(tmp + "/", "bench/sites/", recursive=True)
            if args.latency_ms:
                from dino_boc.io.fs import set_storage_options

                set_storage_options({"endpoint_url": _latency_proxy(port, args.latency_ms / 1000)})
            local, remote = _records(tmp, args.sites), _records("s3://bench/sites", args.sites)
            _rate(remote[:2], 1)  # warm the connection pool
            for threads in args.threads:
                row = {"threads": threads, "disk_sites_per_s": round(_rate(local, threads), 1),
                       "s3_sites_per_s": round(_rate(remote, threads), 1)}
                print(json.dumps(row), flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
