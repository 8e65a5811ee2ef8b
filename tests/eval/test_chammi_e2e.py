"""chammi(): CHAMMI release -> dataset pipeline -> cached Parquet -> 1-NN table, with a tiny model."""

import logging

import numpy as np
import pandas as pd
import pytest

import dino_boc
from dino_boc.errors import InputError
from dino_boc.eval import FeaturePreset, chammi, chammi_knn, load_chammi
from dino_boc.eval.chammi import SUMMARY_COLUMNS, TASK_COLUMNS, cache_key

from .chammi_fixture import write_chammi

# the paper's layout (last-block CLS only), at the tiny model's size
TINY = FeaturePreset("tiny", n_last_blocks=1, avgpool=False, resize=32, crop=32)


def tiny_model(seed=0):
    return dino_boc.create_model("boc", embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32, seed=seed)


def test_chammi_embeds_once_then_reads_the_cache(tmp_path, caplog):
    root, cache = tmp_path / "CHAMMI", tmp_path / "cache"
    images = write_chammi(root)
    model = tiny_model()
    got = chammi(root, model=model, cache_dir=cache, metric="l2", preset=TINY, num_workers=0, batch_size=16)
    key = cache_key(model, TINY)
    assert got.index.tolist() == [key] and list(got.columns) == [*SUMMARY_COLUMNS, *TASK_COLUMNS]
    assert got[list(TASK_COLUMNS)].notna().all(axis=None)

    # the cache holds, per source and in metadata order, what dino_boc.embed gives for the unfolded images
    meta = load_chammi(root)
    files = {s: cache / key / f"{s}.parquet" for s in ("Allen", "HPA", "CP")}
    blocks = []
    for source, path in files.items():
        table = pd.read_parquet(path)
        rows = meta[meta["chammi_source"] == source]
        assert table["Metadata_file_path"].tolist() == rows["file_path"].tolist()
        feats = table[[c for c in table.columns if not c.startswith("Metadata_")]].to_numpy()
        k = images[rows["file_path"].iloc[0]].shape[0]
        assert feats.shape == (len(rows), k * 64)  # K·D: last-block CLS per channel
        expected = np.stack([dino_boc.embed(images[fp], model=model, n_last_blocks=1, avgpool=False, resize=32,
                                            crop=32) for fp in rows["file_path"]])
        np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-4)
        blocks.append(np.pad(feats, ((0, 0), (0, 5 * 64 - feats.shape[1]))))
    pd.testing.assert_frame_equal(got.reset_index(drop=True), chammi_knn(np.vstack(blocks), meta, metric="l2"))

    # a second call reads the three files and writes nothing
    mtimes = {s: p.stat().st_mtime_ns for s, p in files.items()}
    with caplog.at_level(logging.INFO, logger="dino_boc.eval.chammi"):
        again = chammi(root, model=model, cache_dir=cache, metric="l2", preset=TINY, num_workers=0)
    assert caplog.text.count("using cached CHAMMI features") == 3
    assert {s: p.stat().st_mtime_ns for s, p in files.items()} == mtimes
    pd.testing.assert_frame_equal(again, got)
    assert cache_key(tiny_model(seed=1), TINY) != key  # other weights never share this cache


def test_chammi_reports_an_unreadable_image(tmp_path):
    root = tmp_path / "CHAMMI"
    write_chammi(root)
    broken = "HPA/crops/img_003.png"
    (root / broken).write_bytes(b"not a png")
    with pytest.raises(InputError, match="img_003.png"):
        chammi(root, model=tiny_model(), cache_dir=tmp_path / "cache", preset=TINY, num_workers=0)
    assert not (tmp_path / "cache" / cache_key(tiny_model(), TINY) / "HPA.parquet").exists()
