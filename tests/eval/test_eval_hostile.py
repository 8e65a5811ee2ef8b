"""Malformed evaluation inputs: options that cannot train are refused before any data is read, a label per
row cannot allocate gigabytes, corrupt tables and empty CHAMMI CSVs are clear errors, and the CHAMMI
feature cache follows the weights (a replaced model folder is embedded again; a truncated cache file too)."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import dino_boc
from dino_boc.cli import main
from dino_boc.errors import ConfigError, ImageReadError, InputError
from dino_boc.eval import FeaturePreset, chammi, chammi_knn, fit_linear_sweep, linear_probe, load_chammi
from dino_boc.eval.chammi import cache_key

from .chammi_fixture import write_chammi
from .test_cli_eval import separable_table

TINY = FeaturePreset("tiny", n_last_blocks=1, avgpool=False, resize=32, crop=32)


# ------------------------------------------------------------------------------------------ linear
@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "0"], "--batch-size 0 must be an integer >= 1"),
    (["--batch-size", "-5"], "--batch-size -5 must be an integer >= 1"),
    (["--epochs", "0"], "--epochs 0 must be an integer >= 1"),
])
def test_cli_options_are_checked_before_the_table_is_read(tmp_path, capsys, flags, message):
    missing = tmp_path / "not-written-yet.parquet"  # the option error comes first, so it is never opened
    code = main(["eval", "linear", str(missing), "--label", "Metadata_moa", "--split", "Metadata_split", *flags])
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"epochs": -1}, {"lrs": (1e-3, math.nan)}, {"lrs": ()},
                                {"lrs": (-0.1,)}, {"weight_decays": (-1e-4,)}, {"epochs": 2.5}])
def test_sweep_options_in_python(kw):
    x, y = np.random.default_rng(0).normal(size=(12, 3)), np.arange(12) % 2
    with pytest.raises(ConfigError):
        fit_linear_sweep(x, y, device="cpu", **kw)


def test_untrained_classifiers_are_never_scored():
    x, y = np.random.default_rng(0).normal(size=(12, 3)), np.arange(12) % 2
    with pytest.raises(ConfigError, match="epochs=0"):
        linear_probe(x, y, x, y, x, y, epochs=0, device="cpu")


def test_a_sweep_above_the_memory_ceiling_is_refused():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 64)), np.arange(200) % 10
    need = 4 * 42 * 10 * (4 * 64 + 3 * 200)  # weights, two moments, gradient + three batch buffers, float32
    with pytest.raises(InputError, match=r"needs about .* GiB, above the"):
        fit_linear_sweep(x, y, epochs=1, device="cpu", max_bytes=need - 1)
    fit_linear_sweep(x, y, epochs=1, device="cpu", max_bytes=need)  # exactly enough: trains


_LABEL_PER_ROW = """
import json, resource, sys
from dino_boc.cli import main
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
code = main(["eval", "linear", sys.argv[1], "--label", "Metadata_id", "--split", "Metadata_split", "--device", "cpu"])
print("RESULT " + json.dumps({"code": code, "before_mb": before,
                              "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_a_label_per_row_is_refused_with_bounded_memory(tmp_path):
    """20 000 rows, each its own class: the sweep would hold 42 x 64 x 20 000 weights four times over plus
    (42, 256, 20 000) logits (> 4 GB); it is refused before allocating, peak memory measured in a subprocess."""
    n, f = 20_000, 64
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(n, f)).astype(np.float32), columns=[f"f{i}" for i in range(f)])
    table.insert(0, "Metadata_id", [f"cell{i}" for i in range(n)])
    table.insert(1, "Metadata_split", np.where(np.arange(n) % 10 < 8, "train", np.where(np.arange(n) % 10 == 8,
                                                                                          "val", "test")))
    table.to_parquet(tmp_path / "features.parquet", index=False)
    proc = subprocess.run([sys.executable, "-c", _LABEL_PER_ROW, str(tmp_path / "features.parquet")],
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stderr[-2000:]
    got = json.loads(line[len("RESULT "):])
    assert got["code"] == 1
    assert "train_y has 16000 classes for 16000 training rows" in proc.stderr
    assert got["peak_mb"] - got["before_mb"] < 600, got


def _table_file(tmp_path, name="features.parquet"):
    path = tmp_path / name
    separable_table().to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no_rows", "empty_csv", "directory_suffix"])
def test_corrupt_feature_tables_are_clear_errors(tmp_path, capsys, damage):
    if damage == "truncated":
        path = _table_file(tmp_path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        expect = "probably corrupt or truncated"
    elif damage == "garbage":
        path = tmp_path / "features.parquet"
        path.write_bytes(b"PAR1" + bytes(range(256)) * 8)
        expect = "probably corrupt or truncated"
    elif damage == "no_rows":
        path = tmp_path / "features.parquet"
        separable_table().iloc[:0].to_parquet(path, index=False)
        expect = "has no rows"
    elif damage == "empty_csv":
        path = tmp_path / "features.csv"
        path.write_bytes(b"")
        expect = "probably corrupt or truncated"
    else:
        path = tmp_path / "features.txt"
        path.write_text("x")
        expect = "expected a .parquet or .csv feature table"
    assert main(["eval", "linear", str(path), "--label", "Metadata_moa", "--split", "Metadata_split"]) == 1
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ CHAMMI inputs
@pytest.mark.parametrize("content,error,message", [
    (b"", InputError, "is empty (0 bytes)"),
    (None, InputError, "has a header but no rows"),
    (b"\xff\xfe\x00garbage\x00\xff" * 50, ImageReadError, "cannot read"),
])
def test_empty_or_corrupt_chammi_csv(tmp_path, content, error, message):
    root = tmp_path / "CHAMMI"
    write_chammi(root)
    csv = root / "HPA" / "enriched_meta.csv"
    if content is None:  # keep the header line only
        content = csv.read_bytes().splitlines(keepends=True)[0]
    csv.write_bytes(content)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_chammi(root)
    with pytest.raises(error):
        chammi(root, model="random-init-boc-vits16", cache_dir=tmp_path / "cache", num_workers=0)
    assert not (tmp_path / "cache").exists()  # nothing embedded or cached


@pytest.mark.parametrize("kw,message", [({"batch_size": 0}, "batch_size=0"), ({"num_workers": -1}, "num_workers=-1"),
                                        ({"metric": "manhattan"}, "metric='manhattan'")])
def test_chammi_options_are_checked_before_any_work(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):  # the root does not exist: the options are looked at first
        chammi(tmp_path / "no-release", model="random-init-boc-vits16", cache_dir=tmp_path / "cache", **kw)


# ------------------------------------------------------------------------------------------ CHAMMI cache
def _tiny(seed):
    return dino_boc.create_model("boc", embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32, seed=seed)


def _expected(root, model):
    """The benchmark table computed independently: dino_boc.embed per image, then chammi_knn."""
    from dino_boc.eval import ChammiImages

    meta = load_chammi(root)
    images = ChammiImages(root, meta)
    feats = [dino_boc.embed(images[i], model=model, n_last_blocks=1, avgpool=False, resize=32, crop=32)
             for i in range(len(meta))]
    width = max(f.shape[0] for f in feats)
    x = np.stack([np.pad(f, (0, width - f.shape[0])) for f in feats])
    return chammi_knn(x, meta, metric="l2")


def test_replaced_weights_are_embedded_again_and_a_truncated_cache_too(tmp_path, caplog):
    root, cache, folder = tmp_path / "CHAMMI", tmp_path / "cache", tmp_path / "model"
    write_chammi(root)
    run = dict(model=str(folder), cache_dir=cache, metric="l2", preset=TINY, num_workers=0, batch_size=16)
    _tiny(0).save_pretrained(folder)
    first = chammi(root, **run)

    new = _tiny(1)
    new.save_pretrained(folder)  # same folder, other weights: the old scores must not come back
    with caplog.at_level(logging.INFO, logger="dino_boc.eval.chammi"):
        second = chammi(root, **run)
    assert "using cached CHAMMI features" not in caplog.text
    assert second.index[0] != first.index[0] and second.index[0].startswith("model-")
    np.testing.assert_allclose(second.to_numpy(), _expected(root, new).to_numpy(), atol=1e-3)
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.index[0], second.index[0]])

    meta = json.loads((folder / "config.json").read_text())  # same weights, other preprocessing: another key
    meta["preprocess"]["scale"] = 65535.0
    (tmp_path / "rescaled").mkdir()
    (tmp_path / "rescaled" / "config.json").write_text(json.dumps(meta))
    (tmp_path / "rescaled" / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    rescaled = cache_key(dino_boc.load_model(tmp_path / "rescaled", device="cpu"), TINY, label="model")
    assert rescaled.startswith("model-") and rescaled != second.index[0]

    allen = cache / second.index[0] / "Allen.parquet"  # an interrupted copy of the cache: embedded again
    allen.write_bytes(allen.read_bytes()[:100])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dino_boc.eval.chammi"):
        again = chammi(root, **run)
    assert "are unreadable" in caplog.text and caplog.text.count("using cached CHAMMI features") == 2
    pd.testing.assert_frame_equal(again, second)
    assert len(pd.read_parquet(allen)) == (load_chammi(root)["chammi_source"] == "Allen").sum()


def test_non_finite_validation_rows_are_refused_before_training():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    bad = x.copy()
    bad[4, 2] = np.inf
    with pytest.raises(InputError, match="val_x contains NaN or inf"):
        linear_probe(x, y, bad, y, x, y, epochs=10**6, device="cpu")  # would take hours if it trained first


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5])
def test_knn_chunk_size_must_be_positive(chunk_size):
    from dino_boc.eval import nearest_neighbors

    x = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(InputError, match="chunk_size"):
        nearest_neighbors(x, x, chunk_size=chunk_size, device="cpu")
