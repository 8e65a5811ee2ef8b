import os
import pickle
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from dino_boc import distributed
from dino_boc.errors import ConfigError
from dino_boc.outputs import ShardWriter, finalize
from outputs_helpers import feed, make_items, make_provenance

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize("n", [0, 1, 5, 10, 11, 100])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_shard_indices_are_disjoint_covering_balanced(n, world):
    parts = [distributed.shard_indices(n, r, world) for r in range(world)]
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(n)) and len(flat) == n  # covering and disjoint
    assert flat == list(range(n))  # contiguous blocks in rank order
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert parts == [distributed.shard_indices(n, r, world) for r in range(world)]


def test_shard_indices_rejects_bad_arguments():
    for args in [(-1, 0, 1), (5, 2, 2), (5, 0, 0), (5, -1, 2)]:
        with pytest.raises(ConfigError):
            distributed.shard_indices(*args)


def test_single_process_is_a_no_op(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_distributed() == (0, 1, 0)
    assert distributed.is_main() and distributed.get_rank() == 0 and distributed.get_world_size() == 1
    distributed.barrier()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    distributed.cleanup()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.init_distributed() == (0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        distributed.init_distributed()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="RANK"):
        distributed.init_distributed()


RANK_SCRIPT = textwrap.dedent(
    """
    import pickle, sys
    from dino_boc import distributed
    from dino_boc.outputs import ShardWriter, done_indices, finalize
    sys.path.insert(0, sys.argv[2])
    from outputs_helpers import feed

    items, provenance, shard_dir, output = pickle.load(open(sys.argv[1], "rb"))
    rank, world, local = distributed.init_distributed("gloo")
    assert world == 2 and local == rank, (rank, world, local)
    done = distributed.broadcast_object(done_indices(shard_dir) if distributed.is_main() else None)
    pending = [it for it in items if it["index"] not in done]
    mine = [pending[i] for i in distributed.shard_indices(len(pending), rank, world)]
    distributed.barrier()
    writer = ShardWriter(shard_dir, provenance, shard_size=3, rank=rank)
    feed(writer, mine)
    writer.close()
    distributed.barrier()
    if distributed.is_main():
        finalize(shard_dir, output)
    distributed.cleanup()
    """
)


@pytest.mark.slow
def test_torchrun_two_gloo_processes_equal_one(tmp_path):
    items = make_items(23, seed=20)
    single = ShardWriter(tmp_path / "one", make_provenance(), shard_size=3)
    feed(single, items)
    single.close()
    finalize(tmp_path / "one", tmp_path / "one.parquet")

    job = tmp_path / "job.pkl"
    job.write_bytes(pickle.dumps((items, make_provenance(), str(tmp_path / "two"), str(tmp_path / "two.parquet"))))
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script), str(job)]
    cmd.append(os.path.dirname(__file__))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    two = pq.read_table(tmp_path / "two.parquet").replace_schema_metadata(None)
    one = pq.read_table(tmp_path / "one.parquet").replace_schema_metadata(None)
    assert two.equals(one)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["rank-00000", "rank-00001"]
    assert (tmp_path / "two.parquet.errors.csv").read_text() == (tmp_path / "one.parquet.errors.csv").read_text()
