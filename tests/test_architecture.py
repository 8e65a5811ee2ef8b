"""The import graph of docs/architecture.md, as CI checks it (import-linter contracts in pyproject.toml)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[test]')")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "dino_boc", tmp_path / "dino_boc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_its_contracts():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout and " KEPT" in res.stdout


@pytest.mark.parametrize("module,line,contract", [
    # a function-level import of the public API from the model layer (what models/base.py once did)
    ("models/base.py", "def _up():\n    from dino_boc.embed import embed\n", "Layers"),
    # the library importing the command line at module level
    ("weights/load.py", "import dino_boc.cli.embed\n", "command line"),
    # the library importing training
    ("pipeline/run.py", "from dino_boc.train import config as _train_config\n", "imports training"),
])
def test_an_upward_import_breaks_a_contract(tmp_path, module, line, contract):
    root = _copy(tmp_path)
    path = root / "dino_boc" / module
    path.write_text(path.read_text() + "\n\n" + line)
    res = _lint(root)
    assert res.returncode != 0, res.stdout
    broken = [ln for ln in res.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    assert any(contract in ln for ln in broken) or contract in res.stdout.split("Broken contracts")[-1], res.stdout
    assert module.replace("/", ".").removesuffix(".py") in res.stdout  # the report names the offending module


def _fresh(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.parametrize("argv", [["--help"], ["--version"], []])
def test_top_level_help_imports_neither_torch_nor_timm(argv):
    out = _fresh(
        "import contextlib, io, sys\n"
        "from dino_boc.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))\n"
    )
    assert out == "[]"


def test_top_level_help_is_that_of_the_full_parser(capsys):
    from dino_boc.cli import build_parser, main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out == build_parser().format_help()


def test_dino_boc_embed_stays_the_function_when_the_module_is_imported_first():
    out = _fresh(
        "import dino_boc.embed, dino_boc.engine, importlib\n"
        "import dino_boc\n"
        "m = importlib.import_module('dino_boc.embed')\n"
        "print(callable(dino_boc.embed), dino_boc.embed is m.embed, dino_boc.feature_names.__name__)\n"
    )
    assert out == "True True model_feature_names"
