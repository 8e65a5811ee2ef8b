"""``dino-boc embed``: help a biologist can follow, a run on a folder, the default model rule."""

from __future__ import annotations

import logging
import numpy as np
import pandas as pd
import pytest

import dino_boc
from dino_boc.cli import embed as cli_embed
from dino_boc.cli import main
from dino_boc.weights.registry import REGISTRY

from .conftest import L
from .helpers import feature_block, image, write_cyx


def test_help_explains_inputs_outputs_and_shows_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["embed", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for words in ("--masks", "--tile", "--resume", "--channels", "LoadData", "errors.csv", "load_data_with_illum.csv",
                  "--illum", "--path-root", "--channel-names", "OrigDNA",
                  "--masks masks/", "plates/", "label images"):
        assert words in text, words
    assert text.count("dino-boc embed ") >= 3  # three examples in the epilog


def test_cli_on_a_folder_equals_the_python_api(tmp_path, rng, model, model_dir, capsys):
    (tmp_path / "imgs").mkdir()
    arrays = {"a.tif": image(rng, 2), "b.tif": image(rng, 3, 40, 40)}
    for name, arr in arrays.items():
        write_cyx(tmp_path / "imgs" / name, arr, ["DNA", "ER", "RNA"][: arr.shape[0]])
    code = main(["embed", str(tmp_path / "imgs"), "-o", str(tmp_path / "f.parquet"), "--model", model_dir,
                 "--n-last-blocks", str(L), "--quiet", "--channels", "ER,DNA"])
    assert code == 0
    out = capsys.readouterr().out
    assert "embedded 2 of 2 inputs" in out and str(tmp_path / "f.parquet") in out and "f.parquet.errors.csv" in out
    df = pd.read_parquet(tmp_path / "f.parquet")
    assert df["Metadata_channels"].tolist() == ["ER;DNA", "ER;DNA"]
    want = dino_boc.embed(arrays["b.tif"][[1, 0]], model=model, n_last_blocks=L)
    np.testing.assert_allclose(feature_block(df, 1, ["ER", "DNA"]), want, atol=1e-5, rtol=0)


def test_default_model_is_the_demo_model_when_installed(monkeypatch, caplog):
    monkeypatch.delitem(REGISTRY, cli_embed.DEFAULT_CLI_MODEL, raising=False)
    with caplog.at_level(logging.WARNING):
        assert cli_embed.default_model_name() == "random-init-boc-vits16"
    assert "RANDOMLY INITIALISED" in caplog.text
    monkeypatch.setitem(REGISTRY, cli_embed.DEFAULT_CLI_MODEL, REGISTRY["random-init-boc-vits16"])
    assert cli_embed.default_model_name() == cli_embed.DEFAULT_CLI_MODEL


def test_bad_settings_exit_1_with_a_message(tmp_path, rng, model_dir, capsys):
    write_cyx(tmp_path / "a.tif", image(rng, 1))
    code = main(["embed", str(tmp_path / "a.tif"), "-o", str(tmp_path / "f.parquet"), "--model", model_dir,
                 "--crop", "30", "--quiet"])
    assert code == 1 and "multiple" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["embed", str(tmp_path / "a.tif")])  # -o is required
