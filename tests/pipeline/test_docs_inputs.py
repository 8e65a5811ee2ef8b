"""The real-world commands of docs/inputs.md and README.md, run on the real files of tests/data (tiny model).

Each bash block after a ``<!-- the commands of this section are run by tests/pipeline/test_docs_inputs.py -->``
marker is run as written (plus ``--model <tiny> --resize 32 --quiet`` so the CPU run takes seconds) in a
folder where the names the docs use point at tests/data; the test then checks the table a user gets.
"""

from __future__ import annotations

import gzip
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import dino_boc
from dino_boc.cli import main
from dino_boc.io import ImageRecord

from .conftest import L

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
MARKER = "<!-- the commands of this section are run by tests/pipeline/test_docs_inputs.py -->"
LINKS = {
    "cellomics": DATA / "cellprofiler_examples" / "cellomics",
    "imagexpress": DATA / "cellprofiler_examples" / "imagexpress",
    "Images": DATA / "pe2loaddata" / "images",
    "fields": DATA / "stardist" / "cellpose_layout",
}


def doc_commands(page: str) -> list[str]:
    text = (ROOT / page).read_text()
    blocks = re.findall(re.escape(MARKER) + r"\s*```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def _write_plate(root: Path) -> int:
    zarr = pytest.importorskip("zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    group = zarr.group(store=parse_url(str(root), mode="w").store)
    write_plate_metadata(group, ["A"], ["1", "2"], ["A/1", "A/2"], name="P1")
    rng = np.random.default_rng(0)
    for col in ("1", "2"):
        well = group.require_group("A").require_group(col)
        write_well_metadata(well, [{"path": "0"}])
        write_image(rng.integers(0, 4000, size=(2, 48, 48), dtype=np.uint16), well.require_group("0"), axes="cyx")
    return 2


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    for name, target in LINKS.items():
        (tmp_path / name).symlink_to(target, target_is_directory=True)
    for gz in sorted((DATA / "micromanager_mmstack").glob("*.ome.tif.gz")):  # shipped gzipped, as stored upstream
        (tmp_path / "positions").mkdir(exist_ok=True)
        (tmp_path / "positions" / gz.name[: -len(".gz")]).write_bytes(gzip.decompress(gz.read_bytes()))
    _write_plate(tmp_path / "plate.ome.zarr")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", ["docs/inputs.md", "README.md"])
def test_docs_commands_run_on_real_files(workspace, model, model_dir, page):
    commands = doc_commands(page)
    firsts = {shlex.split(c, comments=True)[2] for c in commands}
    assert firsts and firsts <= set(CHECKS), commands  # each command has its check below
    if page == "docs/inputs.md":
        assert firsts == set(CHECKS)
    for command in commands:
        argv = shlex.split(command, comments=True)
        assert argv[:2] == ["dino-boc", "embed"]
        code = main(argv[1:] + ["--model", model_dir, "--resize", "32", "--quiet", "--n-last-blocks", str(L)])
        assert code == 0, command
        out = argv[argv.index("-o") + 1]
        df = pd.read_parquet(out)
        check = CHECKS[argv[2]]
        check(df)
        (workspace / out).unlink()


def _positions(df):
    assert df["Metadata_Position"].tolist() == [0, 1, 2, 3]  # four positions, one dataset in four files


def _cellomics(df):
    assert len(df) == 1 and df["Metadata_channels"].tolist() == ["d0;d1;d2"]
    assert df["Metadata_Well"].tolist() == ["D03"] and df["Metadata_Site"].tolist() == ["00"]


def _imagexpress(df):
    assert len(df) == 1 and df["Metadata_channels"].tolist() == ["w1;w2"] and df["Metadata_Well"].tolist() == ["C01"]


def _phenix(df):
    assert len(df) == 1 and df["Metadata_Well"].tolist() == ["A01"] and df["Metadata_channels"].tolist() == ["ch6"]


def _plate(df):
    assert df["Metadata_Well"].tolist() == ["A1", "A2"] and set(df["Metadata_Plate"]) == {"P1"}


def _cells(df):
    labels = tifffile.imread(LINKS["fields"] / "img2d_cp_masks.tif")
    objects = np.unique(labels[labels > 0])
    assert sorted(df["Metadata_cell_label"].tolist()) == objects.tolist()  # one row per cellpose object


CHECKS = {"positions/": _positions, "cellomics/": _cellomics, "imagexpress/": _imagexpress, "Images/": _phenix,
          "plate.ome.zarr": _plate, "fields/": _cells}


def test_grouped_cellomics_equals_the_files_named_by_hand(model):
    """The preset's grouping gives the features of the same three files listed as one LoadData-style record."""
    folder = LINKS["cellomics"]
    files = sorted(str(p) for p in folder.glob("*.tif"))
    by_hand = ImageRecord(id="by hand", paths=tuple(files), channel_names=("d0", "d1", "d2"))
    want = dino_boc.embed_dataset(by_hand, model=model, n_last_blocks=L, resize=32, progress=False)
    got = dino_boc.embed_dataset(folder, model=model, n_last_blocks=L, resize=32, pattern="cellomics", progress=False)
    features = [c for c in want.columns if not c.startswith("Metadata_")]
    assert features == [c for c in got.columns if not c.startswith("Metadata_")]
    np.testing.assert_array_equal(got[features].to_numpy(), want[features].to_numpy())
