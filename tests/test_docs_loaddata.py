"""The LoadData commands shown in README.md and docs/inputs.md run as written (from the repository root,
on the pe2loaddata field of tests/data/pe2loaddata), with a tiny model instead of the default one."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dino_boc
from dino_boc.cli import main
from dino_boc.outputs import feature_columns

REPO = Path(__file__).parents[1]


def _command(doc: Path) -> list[str]:
    """The ``dino-boc embed ...load_data_with_illum.csv`` command of a bash block, continuation lines joined."""
    for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("dino-boc embed") and "load_data_with_illum.csv" in line:
                return shlex.split(line)[1:]
    raise AssertionError(f"{doc} shows no LoadData command with illumination")


@pytest.mark.parametrize("doc", ["README.md", "docs/inputs.md"])
def test_documented_loaddata_command_runs(doc, tmp_path, monkeypatch):
    args = _command(REPO / doc)
    assert "--illum" in args and "--path-root" in args and any("OrigDNA" in a for a in args)
    out = tmp_path / Path(args[args.index("-o") + 1]).name
    args[args.index("-o") + 1] = str(out)
    model = dino_boc.create_model("boc", embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32, seed=0)
    model_dir = model.save_pretrained(tmp_path / "tiny")
    monkeypatch.chdir(REPO)
    assert main(args + ["--model", str(model_dir), "--n-last-blocks", "2", "--quiet"]) == 0
    if out.suffix == ".h5ad":
        import anndata

        adata = anndata.read_h5ad(out)
        df = pd.concat([adata.obs.reset_index(drop=True), pd.DataFrame(adata.X, columns=adata.var_names)], axis=1)
    else:
        df = pd.read_parquet(out)
    assert len(df) == 1 and df["Metadata_channels"].astype(str).tolist() == ["DNA;ER;RNA;AGP;Mito"]
    assert str(df["Metadata_Plate"][0]) == "BR00121482"
    assert feature_columns(df)[0].startswith("DNA_") and np.isfinite(df[feature_columns(df)].to_numpy()).all()
    (errors,) = tmp_path.glob("*errors.csv")
    assert pd.read_csv(errors).empty  # every channel and illumination file was found and read
