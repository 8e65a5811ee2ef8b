"""A corpus of bad inputs: each is skipped with its reason in the errors file, the run goes on; exit codes."""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

import dino_boc
from dino_boc.cli import main
from dino_boc.io import ImageRecord
from dino_boc.pipeline import FailedInputsError

from .conftest import L
from .helpers import feature_block, image, write_cyx


def bad_corpus(root, rng):
    """(inputs, {input position: (error class, words in the reason)}) — 21 kinds of bad input among good ones."""
    good = image(rng, 2)
    write_cyx(root / "good.tif", good, ["DNA", "RNA"])
    inputs: list = [root / "good.tif"]
    want: dict[int, tuple[str, str]] = {}

    def bad(item, kind, words):
        want[len(inputs)] = (kind, words)
        inputs.append(item)

    (root / "empty.tif").write_bytes(b"")
    bad(root / "empty.tif", "ImageReadError", "corrupt")
    (root / "random.tif").write_bytes(rng.integers(0, 256, 3000).astype(np.uint8).tobytes())
    bad(root / "random.tif", "ImageReadError", "tifffile")
    write_cyx(root / "whole.tif", image(rng, 2, 64, 64), ["DNA", "RNA"])
    blob = (root / "whole.tif").read_bytes()
    (root / "truncated.tif").write_bytes(blob[: len(blob) // 2])
    bad(root / "truncated.tif", "ImageReadError", "truncated")
    (root / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    bad(root / "junk.png", "ImageReadError", "imageio")
    nan = image(rng, 2).astype(np.float32)
    nan[1, 3, 3] = np.nan
    write_cyx(root / "nan.tif", nan, ["DNA", "RNA"])
    bad(root / "nan.tif", "InputError", "NaN")
    inf = image(rng, 2).astype(np.float32)
    inf[0, 0, 0] = np.inf
    write_cyx(root / "inf.tif", inf, ["DNA", "RNA"])
    bad(root / "inf.tif", "InputError", "infinite")
    np.save(root / "zero_channels.npy", np.zeros((0, 32, 32), np.uint16))
    bad(root / "zero_channels.npy", "InputError", "0 channels")
    write_cyx(root / "tiny.tif", image(rng, 2, 2, 2), ["DNA", "RNA"])
    bad(root / "tiny.tif", "InputError", "smaller than one")
    write_cyx(root / "other_names.tif", image(rng, 2), ["Actin", "Tubulin"])
    bad(root / "other_names.tif", "ChannelError", "unknown channel name 'DNA'")
    tifffile.imwrite(root / "ambiguous.tif", image(rng, 3), photometric="minisblack")  # axes QYX: C or Z?
    bad(root / "ambiguous.tif", "InputError", "dims=")
    bad(ImageRecord(id="wrong_dims", paths=(str(root / "good.tif"),), dims="ZCYX"), "InputError", "dims=")
    (root / "folder.tif").mkdir()
    bad(ImageRecord(id="folder.tif", paths=(str(root / "folder.tif"),)), "ImageReadError", "is a folder")
    (root / "notes.txt").write_text("not an image")
    bad(ImageRecord(id="notes.txt", paths=(str(root / "notes.txt"),)), "ImageReadError", "unknown image format")
    bad(root / "missing.tif", "ImageReadError", "no such file")
    np.save(root / "bool.npy", np.ones((2, 32, 32), bool))
    names = ("DNA", "RNA")
    bad(ImageRecord(id="bool", paths=(str(root / "bool.npy"),), channel_names=names), "InputError", "bool")
    np.save(root / "complex.npy", np.ones((2, 32, 32), np.complex64))
    bad(ImageRecord(id="complex", paths=(str(root / "complex.npy"),), channel_names=names), "InputError", "complex")
    bad(ImageRecord(id="reserved", paths=(str(root / "good.tif"),), metadata={"path": "x"}), "InputError", "rename")
    bad(ImageRecord(id="three_names", paths=(str(root / "good.tif"),), channel_names=("DNA", "RNA", "ER")),
        "ChannelError", "3 channel names")
    # LoadData rows: a missing channel file, an empty FileName cell, channel files of different sizes
    for name, shape in (("ok_DNA", 32), ("ok_RNA", 32), ("big_RNA", 40)):
        tifffile.imwrite(root / f"{name}.tif", rng.integers(0, 255, (shape, shape)).astype(np.uint8))
    ld = pd.DataFrame({"Metadata_Well": ["A01", "A02", "A03", "A04"],
                       "FileName_DNA": ["ok_DNA.tif", "ok_DNA.tif", "ok_DNA.tif", ""],
                       "FileName_RNA": ["ok_RNA.tif", "gone_RNA.tif", "big_RNA.tif", "ok_RNA.tif"]})
    ld.to_csv(root / "load_data.csv", index=False)
    inputs.append(root / "load_data.csv")  # row 0 is good
    want[len(inputs)] = ("ImageReadError", "no such file")
    want[len(inputs) + 1] = ("ImageReadError", "differ in size")
    want[len(inputs) + 2] = ("ImageReadError", "no file for channel 'DNA'")
    return inputs, want, good


def test_every_bad_input_is_listed_with_its_reason_and_the_run_goes_on(tmp_path, rng, model):
    inputs, want, good = bad_corpus(tmp_path, rng)
    assert len(want) >= 15
    summary = dino_boc.embed_dataset(inputs, tmp_path / "out.parquet", model=model, n_last_blocks=L, progress=False,
                                     channels=["DNA", "RNA"])
    errors = pd.read_csv(summary["errors_file"])
    assert errors["index"].tolist() == sorted(want)
    for index, path, reason in errors.itertuples(index=False):
        kind, words = want[index]
        assert reason.startswith(f"{kind}: ") and words in reason, (index, path, reason)
    assert summary["n_failed"] == len(want) and summary["n_ok"] == 2
    df = pd.read_parquet(tmp_path / "out.parquet")
    good_rows = df[df["Metadata_path"] == str(tmp_path / "good.tif")]
    np.testing.assert_allclose(feature_block(good_rows, 0, ["DNA", "RNA"]),
                               dino_boc.embed(good, model=model, n_last_blocks=L), atol=1e-5, rtol=0)
    assert df["Metadata_Well"].dropna().tolist() == ["A01"]
    assert sum(summary["by_reason"].values()) == len(want)


def test_strict_raises_after_writing_the_output(tmp_path, rng, model):
    inputs, _, _ = bad_corpus(tmp_path, rng)
    with pytest.raises(FailedInputsError, match="2 of 3 inputs failed") as info:
        dino_boc.embed_dataset(inputs[:3], tmp_path / "out.parquet", model=model, n_last_blocks=L, progress=False,
                               strict=True)
    assert info.value.summary["n_ok"] == 1 and (tmp_path / "out.parquet").is_file()


def cli(*args):
    return main(["embed", *map(str, args), "--n-last-blocks", str(L), "--quiet"])


def test_cli_exit_codes(tmp_path, rng, model_dir, capsys):
    (tmp_path / "in").mkdir()
    write_cyx(tmp_path / "in" / "good.tif", image(rng, 1))
    (tmp_path / "in" / "bad.tif").write_bytes(b"not a tiff at all")
    assert cli(tmp_path / "in", "-o", tmp_path / "a.parquet", "--model", model_dir) == 0
    out = capsys.readouterr().out
    assert "embedded 1 of 2 inputs" in out and "ImageReadError" in out and "a.parquet.errors.csv" in out
    assert cli(tmp_path / "in", "-o", tmp_path / "b.parquet", "--model", model_dir, "--strict") == 1
    os.remove(tmp_path / "in" / "good.tif")
    assert cli(tmp_path / "in", "-o", tmp_path / "c.parquet", "--model", model_dir) == 1  # nothing embedded
    assert "embedded 0 of 1 inputs" in capsys.readouterr().out
    iio.imwrite(tmp_path / "in" / "ok.png", rng.integers(0, 255, (32, 32)).astype(np.uint8))
    assert cli(tmp_path / "in", "-o", tmp_path / "d.parquet", "--model", model_dir) == 0
