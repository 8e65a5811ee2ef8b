"""Write docs/cli.md from the real ``--help`` of every ``dino-boc`` command (run from the repository root).

``python docs/gen_cli.py`` regenerates the page; ``tests/test_docs_cli.py`` fails when it is stale.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HEADER = """# Command line

`dino-boc` is a thin shell over the Python API: each command calls one public function. Every
command and action prints its options with `--help`; this page is generated from those texts
(`python docs/gen_cli.py`), so it matches the installed version.

Common runs:

```bash
dino-boc embed plates/ -o features.parquet --crop 224          # a folder of TIFFs
dino-boc embed load_data.csv -o features.h5ad --illum           # CellProfiler LoadData CSV (Orig*, Illum*)
dino-boc embed images/ --masks masks/ --cell-size 96 -o cells.parquet   # one row per cell
dino-boc embed plates/ -o features.parquet --resume             # continue an interrupted run
torchrun --nproc-per-node 4 -m dino_boc embed plates/ -o features.parquet   # several GPUs
dino-boc weights add channel_adaptive_dino_vitl16.pth           # the paper's weights, once
dino-boc train tiny_cpu data.sources='[{path: crops.tif, kind: stack}]'
dino-boc export runs/my_run my_model/
dino-boc eval linear features.parquet --label Metadata_label --split Metadata_split
dino-boc plot embedding features.parquet --color Metadata_Plate -o umap.png
```

Exit codes: 0 success; 1 an error (the message says what to change) or, for `embed`, nothing embedded
or `--strict` with failures; 2 a usage error.
"""


def _parsers(parser: argparse.ArgumentParser, prefix: str):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prefix} {name}")


def render() -> str:
    os.environ["COLUMNS"] = "100"
    from dino_boc.cli import build_parser

    parts = [HEADER]
    for name, parser in _parsers(build_parser(), "dino-boc"):
        parser.prog = name
        parts.append(f"\n## `{name}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/cli.md")
    out.write_text(render())
    print(f"wrote {out}")
