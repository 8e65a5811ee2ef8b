"""docs/cli.md is generated from the commands' --help and must not go stale."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_page_matches_the_help_texts():
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    expected = gen.render()
    actual = (ROOT / "docs" / "cli.md").read_text()
    assert actual == expected, "docs/cli.md is stale: run `python docs/gen_cli.py`"
    for command in ("embed", "weights", "train", "export", "eval", "plot"):
        assert f"## `dino-boc {command}`" in actual
