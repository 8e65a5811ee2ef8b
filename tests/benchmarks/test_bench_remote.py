"""benchmarks/bench_remote.py's servers hand back the files' bytes, and its summary reads its rows as documented.

Nothing here is timed: the figures themselves are in benchmarks/README.md.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_remote
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_remote


def _serve(server) -> str:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_file_server_and_proxy_serve_the_sites_bytes(bench, tmp_path):
    pytest.importorskip("aiohttp")
    from dino_boc.io import fs as dfs

    bench.write_sites(str(tmp_path), 2, 32)
    server = bench.file_server(str(tmp_path), latency_s=0.001)
    proxy = bench._Server(("127.0.0.1", 0), type("P", (bench.ProxyHandler,), {"target_port": server.server_address[1]}))
    proxy.local = threading.local()
    try:
        for base in (_serve(server), _serve(proxy)):
            for name in ("s0000-DNA.tiff", "s0001-Mito.tiff"):
                assert dfs.fetch(f"{base}/{name}") == (tmp_path / name).read_bytes()
            array, names = bench._records(base, 2)[1].read()
            disk, _ = bench._records(str(tmp_path), 2)[1].read()
            assert names == bench.CHANNELS and (array == disk).all() and array.shape == (5, 32, 32)
    finally:
        for s in (server, proxy):
            s.shutdown()
            s.server_close()


def test_summary_finds_the_concurrency_that_closes_each_gap(bench):
    rows = [{"in_flight": n, "sites_per_s": {"disk": d, "http+0ms": h0, "http+50ms": h50}}
            for n, d, h0, h50 in [(1, 100, 50, 10), (4, 100, 95, 60), (16, 90, 95, 90)]]
    out = bench.summary(rows)
    assert out["in_flight_to_90%_of_disk"] == {"http+0ms": 4, "http+50ms": 16}
    assert out["in_flight_to_hide_latency"] == {"http+50ms": 16}
    rows[-1]["sites_per_s"]["http+50ms"] = 80
    assert bench.summary(rows)["in_flight_to_90%_of_disk"]["http+50ms"] is None
