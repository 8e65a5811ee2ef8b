"""The settings of a dataset run, grouped by concern (each a frozen dataclass, validated on creation).

:class:`ReadOptions` (how files are read) is owned by ``io`` (:mod:`dino_boc.io.options`) and re-exported
here; :class:`EmbedOptions` and :class:`RunOptions` own their choices and defaults, which the CLI derives
its ``choices=``/``default=`` from.
"""

from __future__ import annotations

from dataclasses import dataclass

from dino_boc.errors import ConfigError
from dino_boc.io.options import PATTERN_PRESETS, ReadOptions, channel_list, check_positive
from dino_boc.models.config import CHANNEL_POOLS, FeatureOverrides
from dino_boc.precision import DEFAULT_PRECISION, PRECISIONS, Precision
from dino_boc.preprocess.tiles import FIT_TO_PATCH
from dino_boc.engine import DEFAULT_BATCH_SIZE
from dino_boc.outputs.shards import DEFAULT_SHARD_SIZE

__all__ = ["ReadOptions", "EmbedOptions", "RunOptions", "FIT_TO_PATCH", "PATTERN_PRESETS", "DEFAULT_MAX_TOKENS",
           "TOKEN_WARNING", "CHANNEL_POOLS", "PRECISIONS", "channel_list"]

# Whole-field embedding: patch tokens N per channel-image. Attention costs grow with N^2: above
# TOKEN_WARNING (a 1024 x 1024 field at patch 16) a run without --resize/--crop warns once with the count
# and the suggestion; above DEFAULT_MAX_TOKENS (4096 x 4096 at patch 16) an image is an errors-file row.
TOKEN_WARNING = 4096
DEFAULT_MAX_TOKENS = 65536


@dataclass(frozen=True, kw_only=True)
class EmbedOptions(FeatureOverrides):
    """What is embedded and how tokens become one feature row.

    The feature-layout options (``n_last_blocks``, ``avgpool``, ``channel_pool``; None: the model's default
    ``model.features``) come from :class:`~dino_boc.models.config.FeatureOverrides`; ``resolve(model.features)``
    gives the run's :class:`~dino_boc.models.config.FeatureSpec`. Every option is keyword-only.

    Attributes:
        tile: embed a grid of ``tile x tile`` tiles covering the field and average their features per
            channel (one row per image); None embeds the whole field.
        cell_size: single-cell mode: side of the crop centred on each object (set with masks).
        mask_outside: single-cell mode: zero every pixel outside the object.
        max_tokens: whole fields: most patch tokens N per channel-image (after resize/crop); a larger
            field is an errors-file row that suggests ``tile``/``resize``. None: no limit.
    """

    tile: int | None = None
    cell_size: int | None = None
    mask_outside: bool = False
    max_tokens: int | None = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("max_tokens", self.max_tokens, allow_none=True)
        check_positive("tile", self.tile, allow_none=True)
        check_positive("cell_size", self.cell_size, allow_none=True)


@dataclass(frozen=True)
class RunOptions:
    """How the run goes; none of these change the numbers (except ``precision``).

    Attributes:
        batch_size: channel-images per forward pass (B·K).
        num_workers: DataLoader worker processes reading and pre-processing files (0: in the main process).
        resume: continue the shards of an interrupted run with the same output (and the same inputs and
            settings: checked against the shards' and a finished output's provenance).
        overwrite: replace an existing output (without it, an existing output is an error).
        strict: raise :class:`~dino_boc.pipeline.FailedInputsError` (CLI: exit 1) when any input failed.
        keep_shards: keep ``<output>.shards/`` after the output is written.
        shard_size: rows per committed shard (memory holds at most this many rows per feature width).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None: this rank's GPU when there is one, else CPU.
        precision: ``"auto"`` (fp16 autocast on CUDA, bf16 on CPUs with native bf16, else fp32), ``"fp32"``,
            ``"fp16"``, ``"bf16"`` (:func:`dino_boc.precision.resolve_precision`).
        progress: show a progress bar (images/s, ETA) on rank 0.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    num_workers: int = 0
    resume: bool = False
    overwrite: bool = False
    strict: bool = False
    keep_shards: bool = False
    shard_size: int = DEFAULT_SHARD_SIZE
    device: str | None = None
    precision: Precision = DEFAULT_PRECISION
    progress: bool = True

    def __post_init__(self) -> None:
        check_positive("batch_size", self.batch_size)
        check_positive("shard_size", self.shard_size)
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError(f"num_workers={self.num_workers!r} must be an int >= 0")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}; choose one of {', '.join(map(repr, PRECISIONS))}")
