"""Outputs that are URLs: shards, manifests and the table written straight to a bucket (moto on 127.0.0.1).

Each run to ``s3://...`` is compared with the same run to local disk, written by the same code; the bucket
is read back with s3fs directly, not through dino_boc.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
import tifffile

import dino_boc
from dino_boc.cli import main
from dino_boc.errors import ConfigError, OutputError
from dino_boc.outputs import finalize, read_manifests, read_provenance
from dino_boc.outputs.store import LocalStore, UrlStore

from .plate import PREFIX, WELLS, write_plate

L = 2  # n_last_blocks of the tiny model


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return dino_boc.load_model(tiny_model_dir, device="cpu")


@pytest.fixture
def folder(tmp_path, rng):
    """Six 2-channel TIFFs and one broken file (an errors-file row) on local disk."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        tifffile.imwrite(src / f"img{i}.tif", rng.integers(0, 4096, size=(2, 32, 32), dtype=np.uint16),
                         metadata={"axes": "CYX"})
    (src / "broken.tif").write_bytes(b"II*\x00broken")
    return src


def run(src, out, model, **kw):
    return dino_boc.embed_dataset(src, out, model=model, n_last_blocks=L, progress=False, **kw)


def read_table(s3, key: str) -> pd.DataFrame:
    with s3.open(key, "rb") as f:
        return pd.read_parquet(f)


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_embed_dataset_to_s3_equals_the_same_run_to_local_disk(tmp_path, s3, folder, tiny_model, fmt):
    s3.makedirs(f"out-api-{fmt}", exist_ok=True)
    local = run(folder, tmp_path / f"f.{fmt}", tiny_model)
    url = f"s3://out-api-{fmt}/run/f.{fmt}"
    remote = run(folder, url, tiny_model)  # the Python API, no CLI
    assert remote["output"] == url and remote["errors_file"] == f"{url}.errors.csv"
    assert (remote["n_ok"], remote["n_failed"]) == (local["n_ok"], local["n_failed"]) == (6, 1)
    assert read_provenance(url).differences(read_provenance(tmp_path / f"f.{fmt}")) == []
    assert s3.cat(f"out-api-{fmt}/run/f.{fmt}.errors.csv") == (tmp_path / f"f.{fmt}.errors.csv").read_bytes()
    if fmt == "parquet":
        pd.testing.assert_frame_equal(read_table(s3, f"{url}"), pd.read_parquet(tmp_path / "f.parquet"))
        assert sorted(s3.find("out-api-parquet/run")) == ["out-api-parquet/run/f.parquet",
                                                          "out-api-parquet/run/f.parquet.errors.csv"]
    else:
        np.testing.assert_array_equal(np.load(io.BytesIO(s3.cat(url))), np.load(tmp_path / "f.npy"))
        assert s3.cat("out-api-npy/run/f.index.csv") == (tmp_path / "f.index.csv").read_bytes()
        got, want = (json.loads(t) for t in (s3.cat("out-api-npy/run/f.provenance.json"),
                                              (tmp_path / "f.provenance.json").read_bytes()))
        for side in (got, want):
            side["dino_boc"].pop("created")  # the time each run started
        assert got == want
    assert not s3.exists(f"{url}.shards")  # removed once the table is in the bucket


def test_an_existing_output_object_is_refused_without_overwrite(tmp_path, s3, folder, tiny_model):
    s3.mkdir("out-guard")
    s3.pipe("out-guard/f.parquet", b"someone else's table")
    url = "s3://out-guard/f.parquet"
    with pytest.raises(OutputError, match="exists already.*overwrite"):
        run(folder, url, "no-such-model-anywhere")  # refused before the model is loaded
    assert s3.cat("out-guard/f.parquet") == b"someone else's table"
    assert not s3.exists("out-guard/f.parquet.shards")
    assert run(folder, url, tiny_model, overwrite=True)["n_ok"] == 6
    assert len(read_table(s3, "out-guard/f.parquet")) == 6
    # a resume of the finished output compares its provenance, read from the bucket
    with pytest.raises(ConfigError, match="finished output.*other.*overwrite"):
        run(folder, url, tiny_model, resume=True, crop=24)
    assert run(folder, url, tiny_model, resume=True)["n_ok"] == 6
    with pytest.raises(OutputError, match="bucket 's3://no-such-bucket' does not exist"):
        run(folder, "s3://no-such-bucket/f.parquet", "no-such-model-anywhere")
    s3.pipe("out-guard/table.parquet/part-0.parquet", b"a folder-like prefix")
    with pytest.raises(OutputError, match="is a prefix"):
        run(folder, "s3://out-guard/table.parquet", "no-such-model-anywhere")


def test_a_stray_unlisted_shard_object_is_removed_and_never_merged(tmp_path, s3, folder, tiny_model):
    s3.mkdir("out-stray")
    run(folder, tmp_path / "clean.parquet", tiny_model)
    url = "s3://out-stray/f.parquet"
    run(folder, url, tiny_model, keep_shards=True, shard_size=1)
    rank = "out-stray/f.parquet.shards/rank-00000"
    (manifest,) = read_manifests(f"{url}.shards")
    listed = sorted(s["file"] for s in manifest.shards)
    assert sorted(k.rsplit("/", 1)[1] for k in s3.find(rank)) == sorted([*listed, "manifest.json"])
    # what a crash leaves: a shard PUT whose manifest update never happened (a copy of a listed one,
    # which would duplicate rows if merged), and a truncated object
    whole = s3.cat(f"{rank}/{listed[0]}")
    s3.pipe(f"{rank}/shard-000098.parquet", whole)
    s3.pipe(f"{rank}/shard-000099.parquet", whole[: len(whole) // 2])
    finalize(f"{url}.shards", tmp_path / "merged.parquet")  # shards streamed from the bucket
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "merged.parquet"), pd.read_parquet(tmp_path / "clean.parquet"))
    summary = run(folder, url, tiny_model, resume=True)
    assert summary["n_resumed"] == 7  # every input was done: nothing embedded again
    assert not s3.exists(f"{rank}/shard-000098.parquet") and not s3.exists(f"{rank}/shard-000099.parquet")
    pd.testing.assert_frame_equal(read_table(s3, "out-stray/f.parquet"), pd.read_parquet(tmp_path / "clean.parquet"))


def test_a_corrupted_listed_shard_object_is_embedded_again(tmp_path, s3, folder, tiny_model):
    s3.mkdir("out-damaged")
    run(folder, tmp_path / "clean.parquet", tiny_model)
    url = "s3://out-damaged/f.parquet"
    run(folder, url, tiny_model, keep_shards=True, shard_size=1)
    key = sorted(s3.glob("out-damaged/f.parquet.shards/rank-00000/shard-*.parquet"))[1]
    data = bytearray(s3.cat(key))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # 64 bytes inside the feature data
    s3.pipe(key, bytes(data))
    with pytest.raises(ConfigError, match="checksum"):
        finalize(f"{url}.shards", tmp_path / "merged.parquet")
    assert not (tmp_path / "merged.parquet").exists()
    summary = run(folder, url, tiny_model, resume=True)
    assert summary["n_resumed"] == 6  # 7 inputs (one failed), one shard dropped
    pd.testing.assert_frame_equal(read_table(s3, "out-damaged/f.parquet"), pd.read_parquet(tmp_path / "clean.parquet"))


def test_cli_output_url_with_the_gallery_layout_beside_it(tmp_path, s3, tiny_model_dir):
    write_plate(tmp_path / "disk")
    table = str(tmp_path / "disk" / PREFIX / "load_data_csv/plate1/load_data.csv.gz")
    s3.mkdir("cpg-run")
    args = ["--model", tiny_model_dir, "--n-last-blocks", str(L), "--quiet", "--layout", "cpg", "--cpg-features",
            "all_emb"]
    assert main(["embed", table, "-o", "s3://cpg-run/run/plate1.parquet", *args]) == 0
    got = read_table(s3, "cpg-run/run/plate1.parquet")
    assert len(got) == len(WELLS)
    model = tiny_model_dir.rstrip("/").rsplit("/", 1)[-1]  # the layout root defaults to the output's folder
    assert len(s3.glob(f"cpg-run/run/embeddings/{model}/batch1/plate1/*/embedding.parquet")) == len(WELLS)
    profile = read_table(s3, f"cpg-run/run/profiles/{model}/batch1/plate1/plate1.parquet")
    want = got.groupby("Metadata_Well")[[c for c in got.columns if not c.startswith("Metadata_")]].mean()
    np.testing.assert_allclose(np.stack(profile["all_emb"]), want.to_numpy(), rtol=1e-6, atol=1e-6)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    s3 = request.getfixturevalue("s3")
    s3.makedirs("store-api", exist_ok=True)
    return UrlStore("s3://store-api/prefix")


def test_local_and_bucket_stores_behave_alike(store):
    assert store.list() == [] and store.folders() == [] and not store.delete_all()
    store.ensure()
    sha = store.put_atomic("a.bin", lambda f: f.write(b"hello"))
    assert sha == hashlib.sha256(b"hello").hexdigest() == store.sha256("a.bin")
    assert store.put_atomic("a.bin", lambda f: f.write(b"hello again")) == hashlib.sha256(b"hello again").hexdigest()
    assert store.read("a.bin", lambda f: f.read()) == b"hello again"
    sub = store.child("rank-00000")
    sub.ensure()
    sub.put_atomic("manifest.json", lambda f: f.write(b"{}"))
    assert store.list() == ["a.bin"] and store.folders() == ["rank-00000"] and sub.list() == ["manifest.json"]
    assert store.exists("a.bin") and not store.exists("b.bin") and sub.exists("manifest.json")
    with pytest.raises(FileNotFoundError):
        store.read("b.bin", lambda f: f.read())
    with pytest.raises(FileNotFoundError):
        store.sha256("b.bin")
    store.delete("a.bin")
    store.delete("a.bin")  # a missing file is not an error
    assert store.list() == []
    assert store.delete_all() and store.folders() == [] and sub.list() == []


def test_a_bucket_that_refuses_writes_is_an_output_error_naming_the_url(s3):
    store = UrlStore("s3://no-such-bucket/run.shards/rank-00000")
    with pytest.raises(OutputError, match="cannot write 's3://no-such-bucket/run.shards/rank-00000/x.bin'.*bucket"):
        store.put_atomic("x.bin", lambda f: f.write(b"x"))


@pytest.mark.slow
def test_two_torchrun_processes_write_their_shards_to_the_bucket(tmp_path, s3, folder, tiny_model, tiny_model_dir):
    """Under torchrun each rank commits its shards straight to the bucket and rank 0 merges them from there
    (no shared disk needed); the table equals one process writing locally."""
    import os
    import subprocess
    import sys

    s3.mkdir("out-ranks")
    url = "s3://out-ranks/run/f.parquet"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")  # AWS_ENDPOINT_URL etc. set by the s3 fixture
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "dino_boc", "embed", str(folder), "-o", url, "--model", tiny_model_dir, "--n-last-blocks", str(L),
           "--batch-size", "4", "--shard-size", "2", "--keep-shards", "--quiet"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = sorted(p.rsplit("/", 1)[-1] for p in s3.ls(f"{url}.shards"))
    assert ranks == ["rank-00000", "rank-00001"]
    assert all(s3.exists(f"{url}.shards/{r}/manifest.json") for r in ranks)
    local = tmp_path / "one.parquet"
    dino_boc.embed_dataset(folder, local, model=tiny_model, n_last_blocks=L, progress=False)
    with s3.open(url, "rb") as f:
        remote = pd.read_parquet(io.BytesIO(f.read()))
    pd.testing.assert_frame_equal(remote, pd.read_parquet(local))
    assert s3.cat(f"{url}.errors.csv").decode() == (tmp_path / "one.parquet.errors.csv").read_text()
