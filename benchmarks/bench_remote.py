"""Sites/s read from a local object store vs local disk, by sites in flight (issue 17).

    python benchmarks/bench_remote.py --sites 64 --size 256 --processes 1 2 4 8 16 32 \\
        --store s3 http --latency-ms 0 50 --repeat 2

Writes ``--sites`` Cell Painting-like sites (5 channels, one LZW TIFF of ``size`` x ``size`` uint16 per
channel) to a temporary folder, then reads every site with ``ImageRecord.read()`` (a site's 5 channel
objects fetched concurrently by threads, :data:`dino_boc.io.fs.FETCH_THREADS`) from disk and from each
remote target, with N sites in flight. Prints one JSON row per N: sites/s per target, and CPU ms per site
in the readers (worker processes) and in the server processes. Last, for each remote target, the smallest
N at which it reaches 90% of the best disk rate of the run, and for a target with latency the smallest N
at which it reaches 90% of the same store without latency at that N (``null``: never, in this run).

Sites in flight. ``--processes N ...`` (the default mode) reads with N worker processes, each reading one
site at a time and sending the array back, as ``embed_dataset``'s DataLoader workers do (``--num-workers``;
forked, as torch forks them on Linux; every worker reads one site before the clock starts, so process
start and first connections are not timed). ``--threads N ...`` reads with N threads of this process;
it is kept for comparison (the first version of this script read that way) but is not what the pipeline
does: the threads share one GIL, one fsspec event loop and its connection pool, so the CPU that the
fsspec clients and the read path spend in Python is serialised where N workers would run it in parallel.

Targets. ``--store s3`` (default): moto's S3 server (``python -m moto.server``, its own process), read
through ``s3://`` with ``AWS_ENDPOINT_URL``. moto is a Python server that parses and signs every request
on the same cores as the readers (and s3fs/botocore sign and parse every request in the readers); on a
small machine that CPU caps the rate, whatever the concurrency.
``--store http``: a static threaded HTTP file server (its own process) serving the same files, read
through ``http://`` URLs (fsspec's HTTPFileSystem via ``dino_boc.io.fs``; keep-alive, Nagle off): a few
hundred microseconds of server CPU per request, so what concurrency does under latency shows. ``--latency-ms L ...`` waits L ms before
each response, inside a server process (for S3, a proxy process in front of moto), never in the
benchmark's: as a distant store does (first-byte latency of S3 from another region is tens of ms).
The machine's load (``os.getloadavg``) and core count are printed first: on a shared machine, say so.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import http.server
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile

from dino_boc.io import ImageRecord
from dino_boc.io.fs import FETCH_THREADS, set_storage_options

CHANNELS = ["DNA", "ER", "RNA", "AGP", "Mito"]
CLOSE = 0.9  # "closes the gap": a remote rate >= 90% of the best disk rate of the run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(base: str, sites: int) -> list[ImageRecord]:
    return [ImageRecord(id=f"s{i}", paths=tuple(f"{base}/s{i:04d}-{ch}.tiff" for ch in CHANNELS),
                        channel_names=tuple(CHANNELS)) for i in range(sites)]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of connections open at once: no refused or delayed SYNs


class FileHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder over HTTP/1.1 (keep-alive), waiting ``latency_s`` before each answer."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else a small answer's last segment waits for the client's delayed ACK (40 ms)
    latency_s = 0.0

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(self.latency_s)
        super().do_GET()

    def do_HEAD(self) -> None:
        time.sleep(self.latency_s)
        super().do_HEAD()


def file_server(root: str, latency_s: float = 0.0) -> _Server:
    """A threaded HTTP server on 127.0.0.1 (port chosen by the OS) serving ``root``; not yet serving."""
    handler = type("H", (FileHandler,), {"latency_s": latency_s})
    return _Server(("127.0.0.1", 0), functools.partial(handler, directory=root))


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    """Waits ``latency_s``, then forwards the request to ``target_port`` on 127.0.0.1 (one connection per thread)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    latency_s = 0.0
    target_port = 0

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        time.sleep(self.latency_s)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        local = self.server.local  # type: ignore[attr-defined]
        for attempt in (0, 1):  # a kept-alive connection the target closed: open a new one, once
            if getattr(local, "conn", None) is None:
                local.conn = http.client.HTTPConnection("127.0.0.1", self.target_port)
            try:
                local.conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                reply = local.conn.getresponse()
                data = reply.read()
                break
            except (http.client.HTTPException, ConnectionError):
                local.conn.close()
                local.conn = None
                if attempt:
                    raise
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


def _serve(kind: str, arg, latency_s: float, reply) -> None:
    """Process body: a file server (``arg`` = folder) or a proxy (``arg`` = port); sends its URL on ``reply``."""
    if kind == "files":
        server = file_server(arg, latency_s)
    else:
        handler = type("P", (ProxyHandler,), {"latency_s": latency_s, "target_port": arg})
        server = _Server(("127.0.0.1", 0), handler)
        server.local = threading.local()
    reply.send(f"http://127.0.0.1:{server.server_address[1]}")
    server.serve_forever()


def _start(kind: str, arg, latency_s: float) -> tuple[mp.Process, str]:
    """A server in its own (spawned) process, so that the benchmark process pays none of its CPU."""
    ctx = mp.get_context("spawn")
    theirs, ours = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(kind, arg, latency_s, ours), daemon=True)
    proc.start()
    if not theirs.poll(60):
        raise RuntimeError(f"the {kind} server did not start")
    return proc, theirs.recv()


# --- N sites in flight ------------------------------------------------------------------------------------

def _worker_init(options: dict, warm: ImageRecord, barrier) -> None:
    set_storage_options(options)
    warm.read()  # imports, the fsspec client, a first connection: not timed
    barrier.wait()


def _read(record: ImageRecord) -> tuple[np.ndarray, float]:
    """The site's array (sent back to the parent, as a DataLoader worker sends its item) and the CPU
    seconds this process spent on it (its fetch threads and fsspec's event loop thread included)."""
    cpu = time.process_time()
    array = record.read()[0]
    return array, time.process_time() - cpu


def _proc_cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system, all threads) the processes ``pids`` have used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / os.sysconf("SC_CLK_TCK")


class Measure:
    """Sites/s and CPU ms per site, in the readers and in the server processes ``pids``, over one timed read."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = [p for p in pids if os.path.exists(f"/proc/{p}/stat")]

    def __enter__(self) -> "Measure":
        self.server0 = _proc_cpu_s(self.pids)
        self.self0 = time.process_time()
        self.t0 = time.perf_counter()
        self.worker_cpu = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.client_cpu = time.process_time() - self.self0 + self.worker_cpu
        self.server_cpu = _proc_cpu_s(self.pids) - self.server0

    def result(self, sites: int) -> dict:
        return {"sites_per_s": round(sites / self.seconds, 1),
                "client_cpu_ms": round(1000 * self.client_cpu / sites, 1),
                "server_cpu_ms": round(1000 * self.server_cpu / sites, 1) if self.pids else None}


def _best(runs: list[dict]) -> dict:
    return max(runs, key=lambda r: r["sites_per_s"])  # the run least disturbed by other load on the machine


def rate_processes(records: list[ImageRecord], n: int, options: dict, server_pids: list[int], repeat: int = 1) -> dict:
    """Sites/s with ``n`` forked worker processes, each reading one site at a time (best of ``repeat``)."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(n + 1)
    runs = []
    with ctx.Pool(n, initializer=_worker_init, initargs=(options, records[0], barrier)) as pool:
        barrier.wait(timeout=300)
        for _ in range(repeat):
            with Measure(server_pids) as m:
                for _, cpu in pool.imap_unordered(_read, records, chunksize=1):
                    m.worker_cpu += cpu
            runs.append(m.result(len(records)))
    return _best(runs)


def rate_threads(records: list[ImageRecord], n: int, options: dict, server_pids: list[int], repeat: int = 1) -> dict:
    """Sites/s with ``n`` threads of this process (best of ``repeat``)."""
    set_storage_options(options)
    records[0].read()
    runs = []
    with ThreadPoolExecutor(max_workers=n) as pool:
        for _ in range(repeat):
            with Measure(server_pids) as m:
                for _ in pool.map(_read, records):
                    pass
            runs.append(m.result(len(records)))
    return _best(runs)


def write_sites(folder: str, sites: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(sites):
        for ch in CHANNELS:
            plane = rng.integers(0, 4096, size=(size, size), dtype=np.uint16)
            tifffile.imwrite(Path(folder) / f"s{i:04d}-{ch}.tiff", plane, compression="lzw")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--processes", type=int, nargs="+", help="worker processes in flight (default 1 2 4 8 16 32)")
    ap.add_argument("--threads", type=int, nargs="+", help="threads in flight, in this process (for comparison)")
    ap.add_argument("--store", nargs="+", choices=["s3", "http"], default=["s3"])
    ap.add_argument("--latency-ms", type=float, nargs="+", default=[0.0], help="waited before each remote answer")
    ap.add_argument("--repeat", type=int, default=1, help="reads of all sites per point; the fastest is reported")
    args = ap.parse_args()
    modes = [("processes", n) for n in args.processes or []] + [("threads", n) for n in args.threads or []]
    modes = modes or [("processes", n) for n in (1, 2, 4, 8, 16, 32)]
    print(json.dumps({"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
                      "sites": args.sites, "size": args.size, "repeat": args.repeat,
                      "fetch_threads_per_site": FETCH_THREADS}), flush=True)

    servers: list = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            write_sites(tmp, args.sites, args.size)
            targets = {"disk": (_records(tmp, args.sites), {}, [])}  # name: (records, storage options, server pids)
            if "s3" in args.store:
                port = _free_port()  # moto in its own process, so that it does not share this one's GIL
                servers.append(subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                moto = f"http://127.0.0.1:{port}"
                os.environ.update(AWS_ENDPOINT_URL=moto, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
                                  AWS_DEFAULT_REGION="us-east-1")
                for latency in args.latency_ms:
                    endpoint, pids = moto, [servers[0].pid]
                    if latency:
                        proc, endpoint = _start("proxy", port, latency / 1000)
                        servers.append(proc)
                        pids.append(proc.pid)
                    targets[f"s3+{latency:g}ms"] = (_records("s3://bench/sites", args.sites), {"endpoint_url": endpoint},
                                                    pids)
            if "http" in args.store:
                for latency in args.latency_ms:
                    proc, url = _start("files", tmp, latency / 1000)
                    servers.append(proc)
                    targets[f"http+{latency:g}ms"] = (_records(url, args.sites), {}, [proc.pid])
            if "s3" in args.store:
                import s3fs

                for _ in range(60):  # moto takes a few seconds to start
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.5)
                fs = s3fs.S3FileSystem()
                fs.mkdir("bench")
                fs.put(tmp + "/", "bench/sites/", recursive=True)
                del fs
                s3fs.S3FileSystem.clear_instance_cache()
            rows = []
            for mode, n in modes:
                rate = rate_processes if mode == "processes" else rate_threads
                results = {name: rate(records, n, options, pids, args.repeat)
                           for name, (records, options, pids) in targets.items()}
                set_storage_options(None)
                row = {"mode": mode, "in_flight": n, "sites_per_s": {k: r["sites_per_s"] for k, r in results.items()},
                       "cpu_ms_per_site_client_server": {k: [r["client_cpu_ms"], r["server_cpu_ms"]]
                                                         for k, r in results.items()}}
                rows.append(row)
                print(json.dumps(row), flush=True)
            for mode in dict(modes):
                print(json.dumps({"mode": mode, **summary([r for r in rows if r["mode"] == mode]),
                                  "loadavg": [round(x, 2) for x in os.getloadavg()]}), flush=True)
        finally:
            for server in servers:
                server.terminate()
                server.wait() if isinstance(server, subprocess.Popen) else server.join()


def summary(rows: list[dict]) -> dict:
    """The fewest sites in flight at which each remote target reaches 90% of the best disk rate of the run
    and, for a target with latency, 90% of the same store without latency at the same sites in flight
    (latency hidden); None: never, in this run."""
    rates = [r["sites_per_s"] for r in rows]
    best = {name: max(x[name] for x in rates) for name in rates[0]}
    out = {"best_sites_per_s": best, "in_flight_to_90%_of_disk": {
        name: next((r["in_flight"] for r, x in zip(rows, rates) if x[name] >= CLOSE * best["disk"]), None)
        for name in best if name != "disk"}}
    hidden = {}
    for name in best:
        store, _, latency = name.partition("+")
        if latency and latency != "0ms" and f"{store}+0ms" in best:
            hidden[name] = next((r["in_flight"] for r, x in zip(rows, rates) if x[name] >= CLOSE * x[f"{store}+0ms"]),
                                None)
    if hidden:
        out["in_flight_to_hide_latency"] = hidden
    return out


if __name__ == "__main__":
    main()
