"""CLI errors give their hints in CLI syntax (``--crop 32``), not as Python keywords (``crop=32``)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import dino_boc
from dino_boc.cli import build_parser, main
from dino_boc.cli._hints import option_flags, to_cli


@pytest.fixture(scope="module")
def flags():
    return option_flags(build_parser())


@pytest.mark.parametrize("python, cli", [
    ("pass crop=32 (centre crop) or resize= with crop=", "pass --crop 32 (centre crop) or --resize with --crop"),
    ("pass dims='CYX' if the file's axes are wrong", "pass --dims CYX if the file's axes are wrong"),
    ("pass resume=True (--resume) to continue it", "pass --resume to continue it"),
    ('choose channels=["DNA", "ER"]', "choose --channels DNA,ER"),
    ("n_last_blocks=5 but the model has 4 blocks", "--n-last-blocks 5 but the model has 4 blocks"),
    ("shape=(3, 4); cache_size=x; avgpool=False", "shape=(3, 4); cache_size=x; avgpool=False"),  # no such flags
])
def test_python_keywords_become_flags(flags, python, cli):
    assert to_cli(python, flags) == cli


def test_a_cli_error_prints_the_flag(tmp_path, capsys):
    model = dino_boc.create_model("boc", embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32, seed=0)
    model_dir = model.save_pretrained(tmp_path / "m")
    tifffile.imwrite(tmp_path / "a.tif", np.ones((2, 48, 48), np.uint16), metadata={"axes": "CYX"})
    code = main(["plot", "patches", str(tmp_path / "a.tif"), "--model", str(model_dir), "--crop", "36",
                 "-o", str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert code == 1 and "36x36" in err
    assert "--crop 32" in err and "crop=" not in err
