"""--channel-names / channel_names=: one set of columns for files whose own names differ; the warning
when a written union table is mostly empty."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

import dino_boc
from dino_boc.cli import main

from .conftest import L
from .helpers import feature_block, image, write_cyx


def _labelled_files(tmp_path, rng) -> list[np.ndarray]:
    """Three files of one experiment whose channel labels differ per file (each acquisition named them)."""
    arrays = [image(rng, 2) for _ in range(3)]
    for i, (a, names) in enumerate(zip(arrays, (["DNA", "ER"], ["Hoechst", "Actin"], ["DAPI", "Phalloidin"]))):
        write_cyx(tmp_path / "imgs" / f"s{i}.tif", a, names)
    return arrays


def test_per_file_names_warn_that_the_table_is_mostly_empty(tmp_path, rng, model, caplog):
    (tmp_path / "imgs").mkdir()
    _labelled_files(tmp_path, rng)
    with caplog.at_level(logging.WARNING, logger="dino_boc.outputs.writers"):
        summary = dino_boc.embed_dataset(tmp_path / "imgs", tmp_path / "f.parquet", model=model, n_last_blocks=L,
                                         progress=False)
    df = pd.read_parquet(tmp_path / "f.parquet")
    features = df[[c for c in df.columns if not c.startswith("Metadata_")]]
    assert summary["empty_fraction"] == features.isna().to_numpy().mean()  # 2 of 3 row blocks empty per column
    assert summary["empty_fraction"] > 0.6
    assert "feature cells are empty" in caplog.text and "--channel-names" in caplog.text


def test_channel_names_give_one_set_of_columns(tmp_path, rng, model, model_dir, caplog):
    (tmp_path / "imgs").mkdir()
    arrays = _labelled_files(tmp_path, rng)
    with caplog.at_level(logging.WARNING, logger="dino_boc.outputs.writers"):
        code = main(["embed", str(tmp_path / "imgs"), "-o", str(tmp_path / "f.parquet"), "--model", model_dir,
                     "--n-last-blocks", str(L), "--quiet", "--channel-names", "DNA,Actin"])
    assert code == 0 and "feature cells are empty" not in caplog.text
    df = pd.read_parquet(tmp_path / "f.parquet")
    assert df["Metadata_channels"].tolist() == ["DNA;Actin"] * 3
    assert not df.isna().any().any()
    for i, a in enumerate(arrays):
        want = dino_boc.embed(a, model=model, n_last_blocks=L)
        np.testing.assert_allclose(feature_block(df, i, ["DNA", "Actin"]), want, atol=1e-5, rtol=0)
    # --channels picks, --channel-names names what was picked
    assert main(["embed", str(tmp_path / "imgs"), "-o", str(tmp_path / "g.parquet"), "--model", model_dir,
                 "--n-last-blocks", str(L), "--quiet", "--channels", "1", "--channel-names", "Actin"]) == 0
    g = pd.read_parquet(tmp_path / "g.parquet")
    want = dino_boc.embed(arrays[0][[1]], model=model, n_last_blocks=L)
    np.testing.assert_allclose(feature_block(g, 0, ["Actin"]), want, atol=1e-5, rtol=0)
