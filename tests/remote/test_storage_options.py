"""One set of storage options per run: it reaches every reader, spawned DataLoader workers included, and is
written nowhere (output, provenance, shards, manifests, errors file, logs)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from dino_boc.cli import main
from dino_boc.errors import ConfigError
from dino_boc.io import ImageRecord, ReadOptions
from dino_boc.io import fs as dfs
from dino_boc.pipeline.dataset import InputDataset, Loaded, identity_collate, prepare_field
from dino_boc.pipeline.options import EmbedOptions
from dino_boc.preprocess import PreprocessConfig

SECRET = "s3cr3t-V4LUE-written-nowhere"


def _closed_port_url() -> str:
    """An endpoint on 127.0.0.1 where nothing listens: reads that miss the run's options fail here, locally."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_read_options_keep_storage_options_out_of_repr_dict_and_equality():
    read = ReadOptions(storage_options={"key": "k", "secret": SECRET})
    assert read.storage_options == {"key": "k", "secret": SECRET}
    assert SECRET not in repr(read) and "storage_options" not in read.to_dict()
    assert read == ReadOptions() and read.to_dict() == ReadOptions().to_dict()  # provenance is the same
    with pytest.raises(ConfigError, match="expected a dict"):
        ReadOptions(storage_options="anon=true")
    with dfs.storage_options(anon=True):
        assert dfs.run_storage_options({"endpoint_url": "http://127.0.0.1:9"}) == {
            "anon": True, "endpoint_url": "http://127.0.0.1:9"}
    assert dfs.run_storage_options(None) == {}


def test_run_options_reach_a_spawned_worker(s3, s3_endpoint, monkeypatch, rng, tmp_path):
    """A spawned worker starts with this module's defaults: the options travel in ReadOptions."""
    data = rng.integers(0, 4096, size=(2, 16, 16), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", data, metadata={"axes": "CYX"})
    s3.mkdir("spawned")
    s3.put(str(tmp_path / "a.tif"), "spawned/a.tif")
    monkeypatch.setenv("AWS_ENDPOINT_URL", _closed_port_url())  # the environment points nowhere
    read = ReadOptions(storage_options={"endpoint_url": s3_endpoint})
    cfg = PreprocessConfig(resize=None, crop=None, normalize="none")
    dataset = InputDataset([ImageRecord(id="s3://spawned/a.tif", paths=("s3://spawned/a.tif",))], preprocess=cfg,
                           patch_size=8, read=read, embed=EmbedOptions())
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, multiprocessing_context="spawn",
                                         collate_fn=identity_collate)
    (item,) = list(loader)
    assert isinstance(item, Loaded), item
    torch.testing.assert_close(item.tensors[0], prepare_field(data, cfg, 8, fit=True))
    assert dfs.get_storage_options() == {}  # nothing was set in this process


def test_cli_options_reach_every_read_and_are_written_nowhere(s3, s3_endpoint, tmp_path, monkeypatch, caplog,
                                                             capsys, tiny_model_dir, rng):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(src / name, rng.integers(0, 4096, size=(2, 32, 32), dtype=np.uint16), metadata={"axes": "CYX"})
    pd.DataFrame({"path": ["a.tif", "missing.tif", "b.tif"]}).to_csv(src / "list.csv", index=False)
    s3.mkdir("private")
    s3.put(str(src) + "/", "private/in/", recursive=True)
    common = ["--model", tiny_model_dir, "--n-last-blocks", "2", "--quiet", "--keep-shards"]
    assert main(["embed", str(src / "list.csv"), "-o", str(tmp_path / "local.parquet"), *common]) == 0
    monkeypatch.setenv("AWS_ENDPOINT_URL", _closed_port_url())
    out = tmp_path / "out"
    out.mkdir()
    options = [f"endpoint_url={s3_endpoint}", "key=testing", f"secret={SECRET}"]
    with caplog.at_level(logging.DEBUG):
        code = main(["embed", "s3://private/in/list.csv", *[a for o in options for a in ("--storage-option", o)],
                     "--num-workers", "1", "-o", str(out / "f.parquet"), *common])
    assert code == 0  # one input failed: an errors-file row, and the run went on
    local, remote = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(out / "f.parquet")
    feats = [c for c in local.columns if not c.startswith("Metadata_")]
    assert len(remote) == 2 and remote["Metadata_path"].str.startswith("s3://private/in/").all()
    np.testing.assert_array_equal(remote[feats].to_numpy(), local[feats].to_numpy())
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"f.parquet", "f.parquet.errors.csv"} and len(written) > 3  # shards kept
    assert "missing.tif" in (out / "f.parquet.errors.csv").read_text()
    for path in written:
        assert SECRET.encode() not in Path(path).read_bytes(), path
    captured = capsys.readouterr()
    assert SECRET not in caplog.text and SECRET not in captured.out + captured.err
    assert dfs.get_storage_options() == {}  # the run's set was scoped to the run
