"""Dataset embedding: ``embed_dataset(source, output)`` with workers, shape-grouped batches, shards, resume,
torchrun, failures recorded per input, tiling of large fields and single-cell crops.

See docs/datasets.md (how to run it) and docs/inputs.md (what it reads).
"""

from dino_boc.pipeline.options import EmbedOptions, ReadOptions, RunOptions
from dino_boc.pipeline.run import DEFAULT_CELL_SIZE, FailedInputsError, embed_dataset, run_dataset

__all__ = [
    "embed_dataset", "run_dataset", "FailedInputsError", "ReadOptions", "EmbedOptions", "RunOptions",
    "DEFAULT_CELL_SIZE",
]
