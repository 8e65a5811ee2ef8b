"""One vocabulary: the CLI's choices and defaults are the Python API's (no second spelling to drift)."""

from __future__ import annotations

import argparse
import inspect
import typing

import pytest

from dino_boc.cli import build_parser
from dino_boc.cli.embed import options
from dino_boc.eval import chammi
from dino_boc.eval.linear import linear_probe
from dino_boc.io import ReadOptions
from dino_boc.pipeline import EmbedOptions, RunOptions, embed_dataset
from dino_boc.plot.embedding import embedding


def _action(parser: argparse.ArgumentParser, path: list[str], dest: str) -> argparse.Action:
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return next(a for a in parser._actions if a.dest == dest)


def test_embed_defaults_are_embed_datasets_defaults():
    """Every ``dino-boc embed`` flag that names an ``embed_dataset`` argument has that argument's default."""
    parser = build_parser()
    sig = inspect.signature(embed_dataset).parameters
    checked = 0
    for action in _action(parser, ["embed"], "inputs").container._actions:
        if action.dest in sig and action.dest not in ("masks", "model"):
            default = sig[action.dest].default
            assert action.default == default or (action.default is False and default is None), action.dest
            checked += 1
    assert checked >= 20


def _accepted(func, param: str) -> set:
    """The string values a public function's ``Literal`` annotation accepts (resolved from its type hints)."""
    annotation = inspect.signature(func).parameters[param].annotation
    hint = eval(annotation, vars(inspect.getmodule(func))) if isinstance(annotation, str) else annotation
    stack, found = [hint], set()
    while stack:
        t = stack.pop()
        if typing.get_origin(t) is typing.Literal:
            found |= {v for v in typing.get_args(t) if isinstance(v, str)}
        else:
            stack.extend(typing.get_args(t))
    return found


@pytest.mark.parametrize("dest", ["precision", "channel_pool", "normalize"])
def test_embed_choices_are_what_embed_dataset_accepts(dest):
    assert set(_action(build_parser(), ["embed"], dest).choices) == _accepted(embed_dataset, dest)


def test_cli_builds_the_default_option_objects(tmp_path):
    args = build_parser().parse_args(["embed", str(tmp_path), "-o", str(tmp_path / "f.parquet")])
    assert options(args) == (ReadOptions(), EmbedOptions(), RunOptions())


def test_cli_options_carry_every_flag(tmp_path):
    args = build_parser().parse_args([
        "embed", str(tmp_path), "-o", str(tmp_path / "f.parquet"), "--channels", "DNA,RNA", "--channel-names",
        "a,b", "--z", "2", "--position", "each", "--max-pixels", "0", "--max-tokens", "0", "--no-avgpool",
        "--channel-pool", "mean", "--batch-size", "8", "--precision", "fp32", "--quiet",
    ])
    read, embed, run = options(args)
    assert read == ReadOptions(channels=("DNA", "RNA"), channel_names=("a", "b"), z=2, position="each", max_pixels=None)
    assert embed == EmbedOptions(avgpool=False, channel_pool="mean", max_tokens=None)
    assert run == RunOptions(batch_size=8, precision="fp32", progress=False)


@pytest.mark.parametrize("path, dest, func, param", [
    (["eval", "chammi"], "metric", chammi, "metric"),
    (["eval", "chammi"], "batch_size", chammi, "batch_size"),
    (["eval", "chammi"], "num_workers", chammi, "num_workers"),
    (["eval", "linear"], "epochs", linear_probe, "epochs"),
    (["eval", "linear"], "batch_size", linear_probe, "batch_size"),
    (["plot", "embedding"], "method", embedding, "method"),
    (["plot", "embedding"], "seed", embedding, "seed"),
    (["eval", "linear"], "seed", linear_probe, "seed"),
])
def test_eval_and_plot_defaults_are_the_functions_defaults(path, dest, func, param):
    action = _action(build_parser(), path, dest)
    par = inspect.signature(func).parameters[param]
    assert action.default == par.default
    if action.choices is not None:
        assert set(action.choices) == _accepted(func, param)
