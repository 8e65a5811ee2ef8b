"""An interrupted run leaves committed shards; resuming it gives the table of a run never interrupted."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import dino_boc
from dino_boc.errors import ConfigError
from dino_boc.io import ImageRecord
from dino_boc.outputs import done_indices

from .conftest import L
from .helpers import image, write_cyx


@dataclasses.dataclass(frozen=True)
class InterruptedRead(ImageRecord):
    """A record whose read is interrupted, as Ctrl-C during a run would be."""

    def read(self):
        raise KeyboardInterrupt


def corpus(root, rng, n=12):
    records = []
    for i in range(n):
        k = 3 if i % 3 else 2
        path = write_cyx(root / f"img{i:02d}.tif", image(rng, k), ["DNA", "ER", "RNA"][:k])
        records.append(ImageRecord(id=str(path), paths=(str(path),), metadata={"site": i}))
    (root / "img05.tif").write_bytes(b"corrupt")  # one failure, recorded before the interruption
    return records


def embed(records, out, model, batch_size=3, **kw):
    return dino_boc.embed_dataset(records, out, model=model, n_last_blocks=L, progress=False, batch_size=batch_size,
                                  shard_size=2, **kw)


@pytest.mark.parametrize("batch_size", [3, 9])
def test_resume_after_an_interruption_equals_a_clean_run(tmp_path, rng, model, batch_size):
    records = corpus(tmp_path, rng)
    clean = embed(records, tmp_path / "clean.parquet", model)
    interrupted = list(records)
    interrupted[8] = InterruptedRead(**{f.name: getattr(records[8], f.name) for f in dataclasses.fields(ImageRecord)})
    out = tmp_path / "run.parquet"
    with pytest.raises(KeyboardInterrupt):
        embed(interrupted, out, model, batch_size=batch_size)
    shards = tmp_path / "run.parquet.shards"
    done = done_indices(shards)
    assert 5 in done and done <= set(range(8)) and not out.exists()  # the failure is committed too
    if batch_size == 3:  # one image per forward: every input read before the interruption is committed
        assert done == set(range(8))
    else:  # images waiting for a full batch were lost with the interruption; resume embeds them again
        assert len(done) < 8
    with pytest.raises(ConfigError, match="resume"):
        embed(records, out, model)  # without resume the folder is not reused
    with pytest.raises(ConfigError, match="differs"):
        embed(records, out, model, resume=True, crop=24)  # other settings: refused
    summary = embed(records, out, model, resume=True, batch_size=batch_size)
    assert summary["n_resumed"] == len(done) and summary["n_ok"] == clean["n_ok"] == 11 and summary["n_failed"] == 1
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "clean.parquet"))
    assert (tmp_path / "run.parquet.errors.csv").read_text() == (tmp_path / "clean.parquet.errors.csv").read_text()
    assert not shards.exists()


def test_resume_of_a_finished_run_with_kept_shards_embeds_nothing_again(tmp_path, rng, model):
    records = corpus(tmp_path, rng, n=6)
    first = embed(records, tmp_path / "a.parquet", model, keep_shards=True)
    again = embed(records, tmp_path / "a.parquet", model, resume=True)
    assert again["n_resumed"] == 6 and again["n_ok"] == first["n_ok"] == 5


@pytest.mark.slow
def test_resume_after_kill_9_equals_a_clean_run(tmp_path, rng, model, model_dir, kill_after_shards):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        write_cyx(src / f"img{i:02d}.tif", image(rng, 2, 64, 64), ["DNA", "ER"])
    cmd = [sys.executable, "-m", "dino_boc", "embed", str(src), "--model", model_dir, "--n-last-blocks", str(L),
           "--batch-size", "2", "--shard-size", "1", "--quiet", "-o"]
    out = tmp_path / "killed.parquet"
    proc = subprocess.Popen(cmd + [str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "killed.parquet.shards"
    kill_after_shards(proc, shards)
    assert 3 <= len(done_indices(shards)) < 40
    assert (tmp_path / "killed.parquet.lock").exists()  # left by the killed run: must not block the resume
    # a file added to the folder between the kill and the resume shifts every position: refused, shards kept
    extra = write_cyx(src / "img00a.tif", image(rng, 2, 64, 64), ["DNA", "ER"])
    before = {p.name: p.read_bytes() for p in (shards / "rank-00000").iterdir()}
    refused = subprocess.run(cmd + [str(out), "--resume"], capture_output=True, text=True)
    assert refused.returncode != 0 and "inputs differ" in refused.stderr and "Traceback" not in refused.stderr
    assert {p.name: p.read_bytes() for p in (shards / "rank-00000").iterdir()} == before and not out.exists()
    other = tmp_path / "other"  # another folder of the same size: refused as well
    other.mkdir()
    for p in sorted(src.glob("img??.tif")):
        (other / p.name).write_bytes(p.read_bytes())
    extra.unlink()
    refused = subprocess.run(cmd[:4] + [str(other)] + cmd[5:] + [str(out), "--resume"], capture_output=True, text=True)
    assert refused.returncode != 0 and "inputs differ" in refused.stderr
    assert subprocess.run(cmd + [str(out), "--resume"], capture_output=True).returncode == 0
    clean = dino_boc.embed_dataset(src, tmp_path / "clean.parquet", model=model, n_last_blocks=L, progress=False)
    assert clean["n_ok"] == 40
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "clean.parquet"))
    np.testing.assert_array_equal(pd.read_parquet(out)["Metadata_index"], np.arange(40))
