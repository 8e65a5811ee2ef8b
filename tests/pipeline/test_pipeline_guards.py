"""Outputs are never lost or mixed: existing outputs, side files, resume checks, locks, checksums, bad paths."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import dino_boc
from dino_boc.errors import ConfigError, OutputError
from dino_boc.outputs.guard import writing

from .conftest import L
from .helpers import features_only, image, write_cyx


def run(src, out, model, **kw):
    kw.setdefault("n_last_blocks", L)
    return dino_boc.embed_dataset(src, out, model=model, progress=False, **kw)


@pytest.fixture
def folder(tmp_path, rng):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        write_cyx(src / f"img{i}.tif", image(rng, 2), ["DNA", "ER"])
    (src / "broken.tif").write_bytes(b"II*\x00broken")
    return src


def test_existing_output_is_refused_unless_overwrite(tmp_path, folder, model):
    out = tmp_path / "f.parquet"
    out.write_bytes(b"someone else's table")
    with pytest.raises(OutputError, match="exists already.*overwrite"):
        run(folder, out, model)
    assert out.read_bytes() == b"someone else's table" and not (tmp_path / "f.parquet.shards").exists()
    summary = run(folder, out, model, overwrite=True)
    assert summary["n_ok"] == 4 and pq.read_table(out).num_rows == 4
    assert not (tmp_path / "f.parquet.lock").exists()  # released and removed at the end


def test_side_files_are_named_after_the_full_output_name(tmp_path, folder, model):
    pytest.importorskip("anndata")
    a = run(folder, tmp_path / "x.parquet", model)
    b = run([folder / "img0.tif", folder / "broken.tif", folder / "img1.tif"], tmp_path / "x.h5ad", model)
    assert a["errors_file"] == str(tmp_path / "x.parquet.errors.csv")
    assert b["errors_file"] == str(tmp_path / "x.h5ad.errors.csv")
    assert pd.read_csv(a["errors_file"])["index"].tolist() == [0]  # broken.tif sorts first in the folder
    assert pd.read_csv(b["errors_file"])["index"].tolist() == [1]


def test_resume_of_a_finished_output_compares_its_provenance(tmp_path, folder, model):
    out = tmp_path / "f.parquet"
    run(folder, out, model)
    before = out.read_bytes()
    with pytest.raises(ConfigError, match="finished output.*other.*overwrite"):
        run(folder, out, model, resume=True, crop=24)
    with pytest.raises(ConfigError, match="inputs differ"):
        run(sorted(folder.glob("img*.tif"))[:3], out, model, resume=True)
    assert out.read_bytes() == before
    assert run(folder, out, model, resume=True)["n_ok"] == 4  # same inputs and settings: allowed


def _hold_lock(path):
    """A process that holds ``path`` with flock, as a second run would (written here, not our class)."""
    code = textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, str(os.getpid()).encode())
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_a_locked_output_is_refused(tmp_path, folder, model):
    out = tmp_path / "f.parquet"
    holder = _hold_lock(tmp_path / "f.parquet.lock")
    try:
        with pytest.raises(OutputError, match=f"another run \\(pid {holder.pid}\\) is writing"):
            run(folder, out, model)
        assert not out.exists() and not (tmp_path / "f.parquet.shards").exists()
    finally:
        holder.kill()
        holder.wait()
    assert run(folder, out, model)["n_ok"] == 4  # the lock dies with its process


@pytest.mark.parametrize("case", ["is a folder", "parent is a file"])
def test_unwritable_output_paths_fail_before_the_model_is_loaded(tmp_path, folder, case):
    if case == "is a folder":
        out = tmp_path / "out.parquet"
        out.mkdir()
        match = "is a folder"
    else:
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub" / "out.parquet"
        match = "is a file, not a folder"
    with pytest.raises(OutputError, match=match):  # a model that does not exist: the output is checked first
        run(folder, out, "no-such-model-anywhere")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_fails_before_work(tmp_path, folder):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            run(folder, ro / "out.parquet", "no-such-model-anywhere")
    finally:
        ro.chmod(0o755)


def test_os_errors_while_writing_name_the_file_and_the_cause():
    with pytest.raises(OutputError, match="cannot write '/x/y.parquet'.*disk is full.*--resume") as info:
        with writing("/x/y.parquet", after="run again with --resume"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert isinstance(info.value, OSError)
    with pytest.raises(OutputError, match="read-only"):
        with writing("/x"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/x/shard.parquet")


def test_a_file_size_limit_mid_run_is_a_clear_error_and_keeps_the_shards(tmp_path, folder, model_dir):
    """A disk that fills up mid-run (here: RLIMIT_FSIZE, the writes fail with EFBIG) gives our error,
    not a traceback, and what was committed before stays for --resume."""
    out = tmp_path / "f.parquet"
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from dino_boc.cli import main
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))
        sys.exit(main(["embed", {str(folder)!r}, "--model", {model_dir!r}, "--n-last-blocks", "{L}",
                       "--shard-size", "1", "--quiet", "-o", {str(out)!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot write" in proc.stderr and "--resume" in proc.stderr
    assert not out.exists()


def test_a_damaged_shard_is_refused_on_merge_and_embedded_again_on_resume(tmp_path, folder, model):
    clean = tmp_path / "clean.parquet"
    run(folder, clean, model)
    out = tmp_path / "f.parquet"
    run(folder, out, model, keep_shards=True, shard_size=1)
    shard = sorted((tmp_path / "f.parquet.shards" / "rank-00000").glob("shard-*.parquet"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # 64 bytes inside the feature data
    shard.write_bytes(bytes(data))
    from dino_boc.outputs import finalize

    with pytest.raises(ConfigError, match="checksum"):
        finalize(tmp_path / "f.parquet.shards", tmp_path / "merged.parquet")
    summary = run(folder, out, model, resume=True)
    assert summary["n_resumed"] == 4  # 5 inputs, one shard dropped
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(clean))


def test_non_finite_feature_rows_go_to_the_errors_file(tmp_path, model, rng):
    src = tmp_path / "in"
    src.mkdir()
    write_cyx(src / "a.tif", image(rng, 2), ["DNA", "ER"])
    huge = np.full((2, 32, 32), 3e38, dtype=np.float32)
    huge[:, ::2] = -3e38  # finite pixels whose products in the model overflow float32
    write_cyx(src / "b.tif", huge, ["DNA", "ER"])
    summary = run(src, tmp_path / "f.parquet", model, normalize="none")
    errors = pd.read_csv(summary["errors_file"])
    assert summary["n_ok"] == 1 and errors["path"].tolist() == [str(src / "b.tif")]
    assert "not finite" in errors["reason"][0]
    table = pd.read_parquet(tmp_path / "f.parquet")
    assert len(table) == 1 and np.isfinite(features_only(table).to_numpy(dtype=float)).all()


@pytest.mark.skipif(sys.platform != "linux", reason="file names are bytes on Linux only")
def test_non_utf8_file_names_are_stored_escaped(tmp_path, model, rng):
    src = tmp_path / "in"
    src.mkdir()
    good = os.path.join(os.fsencode(src), b"good\xff.tif")
    bad = os.path.join(os.fsencode(src), b"bad\xfe.tif")
    write_cyx(os.fsdecode(good), image(rng, 2), ["DNA", "ER"])
    with open(bad, "wb") as f:
        f.write(b"II*\x00broken")
    out = tmp_path / "f.parquet"
    summary = run(src, out, model, shard_size=1)
    assert summary["n_ok"] == 1 and summary["n_failed"] == 1
    table = pd.read_parquet(out)
    assert table["Metadata_path"].tolist() == [str(src) + "/good\\xff.tif"]
    errors = pd.read_csv(summary["errors_file"])
    assert errors["path"].tolist() == [str(src) + "/bad\\xfe.tif"]
    assert run(src, out, model, resume=True)["n_ok"] == 1  # resume reads its manifest back


def test_token_budget_refuses_huge_whole_fields_and_warns_once_on_large_ones(tmp_path, model, rng, caplog):
    from dino_boc.io import ImageRecord
    from dino_boc.pipeline import EmbedOptions, ReadOptions
    from dino_boc.pipeline.dataset import Failed, InputDataset, Loaded
    from dino_boc.preprocess import PreprocessConfig

    src = tmp_path / "in"
    src.mkdir()
    write_cyx(src / "small.tif", image(rng, 2), ["DNA", "ER"])
    write_cyx(src / "large.tif", image(rng, 2, 64, 96), ["DNA", "ER"])  # 8 x 12 = 96 tokens at patch 8
    summary = run(src, tmp_path / "f.parquet", model, max_tokens=64)
    errors = pd.read_csv(summary["errors_file"])
    assert summary["n_ok"] == 1 and errors["path"].tolist() == [str(src / "large.tif")]
    assert errors["reason"][0].startswith("ResourceLimitError") and "96 patch tokens" in errors["reason"][0]
    assert "--tile" in errors["reason"][0] and "--resize" in errors["reason"][0]
    assert run(src, tmp_path / "t.parquet", model, max_tokens=64, tile=32)["n_ok"] == 2  # tiles bound it

    # above 4096 tokens per channel (65 x 65 patches) without resize/crop: one warning naming the count
    records = [ImageRecord(id=f"r{i}", paths=(str(write_cyx(tmp_path / f"big{i}.tif", image(rng, 1, 520, 520))),))
               for i in range(2)]
    cfg = PreprocessConfig(normalize="self", resize=None, crop=None)
    dataset = InputDataset(records, preprocess=cfg, patch_size=8, read=ReadOptions(), embed=EmbedOptions())
    with caplog.at_level("WARNING", logger="dino_boc.pipeline.dataset"):
        items = [dataset[0], dataset[1]]
    assert all(isinstance(it, Loaded) for it in items)
    warnings = [r.getMessage() for r in caplog.records if "patch tokens" in r.getMessage()]
    assert len(warnings) == 1 and "4,225 patch tokens per channel" in warnings[0] and "--tile" in warnings[0]
    caplog.clear()
    resized = InputDataset(records, preprocess=PreprocessConfig(normalize="self", resize=256, crop=None), patch_size=8,
                           read=ReadOptions(), embed=EmbedOptions())
    with caplog.at_level("WARNING", logger="dino_boc.pipeline.dataset"):
        assert not isinstance(resized[0], Failed)
    assert not [r for r in caplog.records if "patch tokens" in r.getMessage()]


def test_a_bomb_in_a_folder_is_an_errors_file_row_and_the_run_goes_on(tmp_path, model, rng):
    import tifffile

    src = tmp_path / "in"
    src.mkdir()
    write_cyx(src / "a.tif", image(rng, 2), ["DNA", "ER"])
    tifffile.imwrite(src / "b.tif", np.zeros((64, 64), np.uint8), tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(src / "b.tif", mode="r+b") as f:  # the header now declares 100352 x 100352
        f.pages[0].tags["ImageWidth"].overwrite(100352)
        f.pages[0].tags["ImageLength"].overwrite(100352)
    write_cyx(src / "c.tif", image(rng, 2), ["DNA", "ER"])
    summary = run(src, tmp_path / "f.parquet", model)
    errors = pd.read_csv(summary["errors_file"])
    assert summary["n_ok"] == 2 and errors["path"].tolist() == [str(src / "b.tif")]
    assert errors["reason"][0].startswith("ResourceLimitError") and "--max-pixels" in errors["reason"][0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_in_the_input_folder_is_an_errors_file_row(tmp_path, model, rng, fifo):
    src = tmp_path / "in"
    src.mkdir()
    write_cyx(src / "a.tif", image(rng, 2), ["DNA", "ER"])
    pipe = fifo(src / "pipe.tif")
    summary = run(src, tmp_path / "f.parquet", model)
    errors = pd.read_csv(summary["errors_file"])
    assert summary["n_ok"] == 1 and errors["path"].tolist() == [str(src / "pipe.tif")]
    assert "not a regular file" in errors["reason"][0]
    assert not pipe.opened  # the run never opened it (which would have blocked a worker)


def test_cli_refuses_an_existing_output_and_overwrites_with_the_flag(tmp_path, folder, model_dir, capsys):
    from dino_boc.cli import main

    out = tmp_path / "f.parquet"
    out.write_bytes(b"keep me")
    args = ["embed", str(folder), "--model", model_dir, "--n-last-blocks", str(L), "--quiet", "-o", str(out)]
    assert main(args) == 1
    assert "error: output" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(args + ["--overwrite"]) == 0
    assert pq.read_table(out).num_rows == 4
