import re

import numpy as np
import pandas as pd
import pytest

from dino_boc.cli import main
from dino_boc.cli.eval import markdown_table
from dino_boc.eval import PRESETS, chammi_knn, linear_probe, load_chammi
from dino_boc.eval.chammi import SUMMARY_COLUMNS, TASK_COLUMNS, cache_key

from .chammi_fixture import write_chammi


def table_rows(text: str) -> list[list[str]]:
    """Cells of every line of a Markdown table in ``text`` (other lines ignored)."""
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            for line in text.splitlines() if line.startswith("|")]


def test_markdown_table_layout():
    df = pd.DataFrame({"name": ["a|b", "c"], "score": [1.25, np.nan], "n": [3, 4]}, index=["r1", "r2"])
    df.index.name = "model"
    rows = table_rows(markdown_table(df, digits=1, index=True))
    assert rows[0] == ["model", "name", "score", "n"]
    assert rows[1] == ["---"] * 4
    assert rows[2] == ["r1", "a\\|b", "1.2", "3"] and rows[3] == ["r2", "c", "", "4"]


# ------------------------------------------------------------------------------------------ linear
def separable_table(seed: int = 0) -> pd.DataFrame:
    """Three classes around distant centres in 6-D, split 30 / 12 / 15 per class, plus unused rows."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 6)) * 6.0
    rows, feats = [], []
    for split, n in (("train", 10), ("val", 4), ("test", 5), ("spare", 2)):
        for c, name in enumerate(("DMSO", "drugA", "drugB")):
            for _ in range(n):
                rows.append({"Metadata_well": f"w{len(rows)}", "Metadata_moa": name, "Metadata_split": split})
                feats.append(centres[c] + rng.normal(size=6))
    feats = np.asarray(feats, dtype=np.float32)
    return pd.concat([pd.DataFrame(rows), pd.DataFrame(feats, columns=[f"cls_{i}" for i in range(6)])], axis=1)


def test_eval_linear_end_to_end(tmp_path, capsys):
    table = separable_table()
    path = tmp_path / "features.parquet"
    table.to_parquet(path, index=False)
    out, sweep = tmp_path / "result.csv", tmp_path / "sweep.csv"
    code = main(["eval", "linear", str(path), "--label", "moa", "--split", "Metadata_split", "--epochs", "8",
                 "--device", "cpu", "-o", str(out), "--sweep", str(sweep)])
    assert code == 0
    got = pd.read_csv(out)
    assert len(got) == 1
    assert got[["n_features", "n_train", "n_val", "n_test"]].iloc[0].tolist() == [6, 30, 12, 15]  # "spare" unused
    # the same probe, on splits cut independently here
    x = table[[f"cls_{i}" for i in range(6)]].to_numpy()
    parts = [(x[(table["Metadata_split"] == s).to_numpy()], table.loc[table["Metadata_split"] == s, "Metadata_moa"])
             for s in ("train", "val", "test")]
    ref = linear_probe(*parts[0], *parts[1], *parts[2], epochs=8, device="cpu", seed=0)
    assert got["lr"].iloc[0] == pytest.approx(ref.lr) and got["weight_decay"].iloc[0] == pytest.approx(ref.weight_decay)
    assert got["test_accuracy"].iloc[0] == pytest.approx(ref.test_accuracy) == 1.0
    sw = pd.read_csv(sweep)
    assert len(sw) == 14 * 3 and got["val_macro_f1"].iloc[0] == pytest.approx(sw["val_macro_f1"].max())
    rows = table_rows(capsys.readouterr().out)
    assert rows[0][:3] == ["n_features", "lr", "weight_decay"] and rows[1][0] == "---"
    assert rows[2][rows[0].index("test_accuracy")] == "1.0000"


def test_eval_linear_reads_csv_too(tmp_path):
    path = tmp_path / "features.csv"
    separable_table(1).to_csv(path, index=False)
    out = tmp_path / "r.csv"
    assert main(["eval", "linear", str(path), "--label", "Metadata_moa", "--split", "split", "--epochs", "4",
                 "--device", "cpu", "-o", str(out)]) == 0
    assert pd.read_csv(out)["n_test"].iloc[0] == 15


def test_eval_linear_explains_a_missing_validation_split(tmp_path, capsys):
    table = separable_table()
    table["Metadata_split"] = table["Metadata_split"].replace({"val": "train"})
    path = tmp_path / "f.parquet"
    table.to_parquet(path, index=False)
    assert main(["eval", "linear", str(path), "--label", "moa", "--split", "split"]) == 1
    err = capsys.readouterr().err
    assert "Metadata_split == 'val'" in err and "validation split" in err


def test_eval_linear_rejects_text_feature_columns(tmp_path, capsys):
    table = separable_table().assign(treatment="x")  # forgot the Metadata_ prefix
    path = tmp_path / "f.parquet"
    table.to_parquet(path, index=False)
    assert main(["eval", "linear", str(path), "--label", "moa", "--split", "split"]) == 1
    assert "['treatment'] are not numeric" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ chammi
def test_eval_chammi_from_cached_features(tmp_path, capsys):
    root, cache = tmp_path / "CHAMMI", tmp_path / "cache"
    write_chammi(root)
    meta = load_chammi(root)
    key = cache_key(None, PRESETS["chammi"], "fixture-model")
    rng = np.random.default_rng(11)
    blocks = []
    for folder, width in (("Allen", 6), ("HPA", 8), ("CP", 10)):
        part = meta[meta["chammi_source"] == folder]
        feats = rng.normal(size=(len(part), width)).astype(np.float32)
        table = pd.concat([pd.DataFrame({"Metadata_file_path": part["file_path"].to_numpy()}),
                           pd.DataFrame(feats, columns=[f"cls_{i}" for i in range(width)])], axis=1)
        (cache / key).mkdir(parents=True, exist_ok=True)
        table.to_parquet(cache / key / f"{folder}.parquet", index=False)
        blocks.append(np.pad(feats, ((0, 0), (0, 10 - width))))
    out = tmp_path / "results.csv"
    # "fixture-model" names no loadable model: a result proves the cached features were used
    code = main(["eval", "chammi", "--root", str(root), "--model", "fixture-model", "--cache-dir", str(cache),
                 "--cache-name", "fixture-model", "--metric", "l2", "-o", str(out)])
    assert code == 0
    expected = chammi_knn(np.vstack(blocks), meta, metric="l2")
    got = pd.read_csv(out, index_col="model")
    assert got.index.tolist() == [key] and list(got.columns) == [*SUMMARY_COLUMNS, *TASK_COLUMNS]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy())
    rows = table_rows(capsys.readouterr().out)
    assert rows[0] == ["model", *SUMMARY_COLUMNS, *TASK_COLUMNS]
    assert rows[2] == [key, *(f"{v:.1f}" for v in expected.iloc[0])]


def test_eval_help_lists_both_actions(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "chammi" in text and "linear" in text
