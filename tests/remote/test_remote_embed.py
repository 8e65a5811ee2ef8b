"""``dino-boc embed`` straight from object stores: the same table as from disk; faults reported, run goes on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from dino_boc.cli import main

from .conftest import make_public_bucket
from .plate import PREFIX, WELLS, write_plate

WELL_META = ["Metadata_Source", "Metadata_Batch", "Metadata_Plate", "Metadata_Well", "Metadata_Site"]


def _embed(args, model_dir):
    return main(["embed", *args, "--model", model_dir, "--n-last-blocks", "2", "--quiet"])


def _features(df):
    return df[[c for c in df.columns if not c.startswith("Metadata_")]].to_numpy()


def test_embed_s3_gallery_plate_equals_local_disk(tmp_path, s3, tiny_model_dir):
    write_plate(tmp_path / "disk")
    make_public_bucket(s3, "gallery")
    s3.put(str(tmp_path / "disk" / "cpg0000-test") + "/", "gallery/cpg0000-test/", recursive=True)
    table = f"{PREFIX}/load_data_csv/plate1/load_data.csv.gz"
    assert _embed([str(tmp_path / "disk" / table), "-o", str(tmp_path / "local.parquet")], tiny_model_dir) == 0
    s3.mkdir("cpg-out")
    assert _embed([f"s3://gallery/{table}", "--anon", "-o", str(tmp_path / "s3.parquet"), "--layout", "cpg",
                   "--layout-root", "s3://cpg-out/root", "--cpg-features", "all_emb",
                   "--storage-option", "max_concurrency=4"], tiny_model_dir) == 0
    local, remote = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "s3.parquet")
    assert len(remote) == len(WELLS)
    pd.testing.assert_frame_equal(remote[WELL_META], local[WELL_META])
    assert remote["Metadata_path"].str.startswith("s3://gallery/").all()
    np.testing.assert_array_equal(_features(remote), _features(local))
    assert [c for c in remote.columns if not c.startswith("Metadata_")][0].startswith("OrigDNA")
    # the Gallery layout, written to the bucket: one file per site, the plate's well means
    model = tiny_model_dir.rstrip("/").rsplit("/", 1)[-1]
    assert len(s3.glob(f"cpg-out/root/embeddings/{model}/batch1/plate1/*/embedding.parquet")) == len(WELLS)
    with s3.open(f"cpg-out/root/profiles/{model}/batch1/plate1/plate1.parquet", "rb") as f:
        profile = pd.read_parquet(f)
    want = local.groupby("Metadata_Well")[[c for c in local.columns if not c.startswith("Metadata_")]].mean()
    np.testing.assert_allclose(np.stack(profile["all_emb"]), want.to_numpy(), rtol=1e-6, atol=1e-6)


def test_failing_objects_become_error_rows_and_the_run_goes_on(http_root, rng, tiny_model_dir, tmp_path):
    root, url = http_root
    names = ["ok.tif", "FLAKY.tif", "FAIL500.tif"]
    for name in names:
        tifffile.imwrite(root / name, rng.integers(0, 4096, size=(2, 32, 32), dtype=np.uint16), metadata={"axes": "CYX"})
    pd.DataFrame({"path": names}).to_csv(root / "list.csv", index=False)
    out = tmp_path / "f.parquet"
    assert _embed([f"{url}/list.csv", "-o", str(out)], tiny_model_dir) == 0
    df = pd.read_parquet(out)
    assert sorted(df["Metadata_path"]) == sorted([f"{url}/ok.tif", f"{url}/FLAKY.tif"])
    errors = pd.read_csv(tmp_path / "f.parquet.errors.csv")
    assert len(errors) == 1 and "FAIL500.tif" in errors.to_csv() and "after 5 tries" in errors.to_csv()


@pytest.mark.parametrize("remote_output", [False, True], ids=["local-output", "s3-output"])
def test_kill_9_then_resume_with_s3_input_equals_a_clean_run(tmp_path, s3, rng, tiny_model_dir,
                                                             remote_output, kill_after_shards):
    import subprocess
    import sys

    bucket = f"resume-{'s3out' if remote_output else 'local'}"

    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        tifffile.imwrite(src / f"img{i:02d}.tif", rng.integers(0, 4096, size=(2, 64, 64), dtype=np.uint16),
                         metadata={"axes": "CYX"})
    make_public_bucket(s3, bucket)
    s3.put(str(src) + "/", f"{bucket}/in/", recursive=True)
    cmd = [sys.executable, "-m", "dino_boc", "embed", f"s3://{bucket}/in/", "--anon", "--model", tiny_model_dir,
           "--n-last-blocks", "2", "--batch-size", "2", "--shard-size", "1", "--quiet", "-o"]
    out = f"s3://{bucket}/out/killed.parquet" if remote_output else str(tmp_path / "killed.parquet")
    proc = subprocess.Popen(cmd + [out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = f"{out}.shards" if remote_output else Path(f"{out}.shards")  # in the bucket for an s3:// output
    kill_after_shards(proc, shards)
    if remote_output:
        assert not s3.exists(out)  # no table in the bucket until the run is complete
        assert s3.exists(f"{bucket}/out/killed.parquet.shards/rank-00000/manifest.json")
    assert subprocess.run(cmd + [out, "--resume"], capture_output=True).returncode == 0
    assert _embed([f"s3://{bucket}/in/", "--anon", "-o", str(tmp_path / "clean.parquet")], tiny_model_dir) == 0
    if remote_output:
        with s3.open(out, "rb") as f:
            got = pd.read_parquet(f)
        assert s3.exists(f"{bucket}/out/killed.parquet.errors.csv")
    else:
        got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got, pd.read_parquet(tmp_path / "clean.parquet"))
    assert len(got) == 40
