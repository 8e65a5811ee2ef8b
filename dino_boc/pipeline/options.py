"""The settings of a dataset run, grouped by concern (each a frozen dataclass, validated on creation)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

from dino_boc.errors import ConfigError
from dino_boc.io.axes import ZReduction, check_t, check_z
from dino_boc.io.budget import DEFAULT_MAX_PIXELS

__all__ = ["ReadOptions", "EmbedOptions", "RunOptions", "FIT_TO_PATCH", "DEFAULT_MAX_TOKENS", "TOKEN_WARNING"]

# What happens to a field whose size (after resize) is not a multiple of the patch when no crop is
# given: it is centre-cropped to the largest multiple (at most patch - 1 pixels lost per axis).
FIT_TO_PATCH = "center-crop"

# Whole-field embedding: patch tokens N per channel-image. Attention costs grow with N^2: above
# TOKEN_WARNING (a 1024 x 1024 field at patch 16) a run without --resize/--crop warns once with the count
# and the suggestion; above DEFAULT_MAX_TOKENS (4096 x 4096 at patch 16) an image is an errors-file row.
TOKEN_WARNING = 4096
DEFAULT_MAX_TOKENS = 65536


def _positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a positive integer{' or None' if allow_none else ''}")


@dataclass(frozen=True)
class ReadOptions:
    """How files become ``(K, H, W)`` arrays (see :func:`dino_boc.io.read_image`).

    Attributes:
        channels: channels to keep, in order, by index or name (``None``: all, as stored).
        dims: the files' axes when their metadata is missing or wrong, e.g. ``"CYX"``.
        z: Z-stack reduction, ``"max"`` (default), ``"mean"`` or a plane index.
        t: time point of a time series.
        level: resolution level of pyramidal files (0 = full resolution).
        channel_width: unfold CHAMMI tapes (channels side by side) every this many pixels.
        max_pixels: most values one read may decode at once, checked from the file's header before
            decoding (a larger file is an errors-file row; Z-stacks are reduced plane by plane to fit);
            None: no limit.
    """

    channels: tuple[int | str, ...] | None = None
    dims: str | None = None
    z: ZReduction = "max"
    t: int = 0
    level: int = 0
    channel_width: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.channels is not None:
            chans = (self.channels,) if isinstance(self.channels, (str, int)) else tuple(self.channels)
            if not chans:
                raise ConfigError("channels=[] selects no channel; pass None for all channels or at least one")
            object.__setattr__(self, "channels", chans)
        check_z(self.z)
        check_t(self.t)
        if isinstance(self.level, bool) or not isinstance(self.level, int) or self.level < 0:
            raise ConfigError(f"level={self.level!r} must be an int >= 0 (0 = full resolution)")
        _positive("channel_width", self.channel_width, allow_none=True)
        _positive("max_pixels", self.max_pixels, allow_none=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = None if self.channels is None else list(self.channels)
        return d


@dataclass(frozen=True)
class EmbedOptions:
    """What is embedded and how tokens become one feature row.

    Attributes:
        n_last_blocks: L, CLS tokens of the last L blocks (4 as released).
        avgpool: append the per-channel mean patch token.
        channel_pool: ``"concat"`` (per-channel features) or ``"mean"`` (averaged over channels).
        tile: embed a grid of ``tile x tile`` tiles covering the field and average their features per
            channel (one row per image); None embeds the whole field.
        cell_size: single-cell mode: side of the crop centred on each object (set with masks).
        mask_outside: single-cell mode: zero every pixel outside the object.
        max_tokens: whole fields: most patch tokens N per channel-image (after resize/crop); a larger
            field is an errors-file row that suggests ``tile``/``resize``. None: no limit.
    """

    n_last_blocks: int = 4
    avgpool: bool = True
    channel_pool: Literal["concat", "mean"] = "concat"
    tile: int | None = None
    cell_size: int | None = None
    mask_outside: bool = False
    max_tokens: int | None = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        _positive("n_last_blocks", self.n_last_blocks)
        _positive("max_tokens", self.max_tokens, allow_none=True)
        _positive("tile", self.tile, allow_none=True)
        _positive("cell_size", self.cell_size, allow_none=True)
        if self.channel_pool not in ("concat", "mean"):
            raise ConfigError(f"channel_pool={self.channel_pool!r}; choose 'concat' or 'mean'")


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
        precision: ``"auto"`` (fp16 autocast on CUDA, fp32 on CPU), ``"fp32"``, ``"fp16"``, ``"bf16"``.
        progress: show a progress bar (images/s, ETA) on rank 0.
    """

    batch_size: int = 256
    num_workers: int = 0
    resume: bool = False
    overwrite: bool = False
    strict: bool = False
    keep_shards: bool = False
    shard_size: int = 4096
    device: str | None = None
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        _positive("batch_size", self.batch_size)
        _positive("shard_size", self.shard_size)
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError(f"num_workers={self.num_workers!r} must be an int >= 0")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ConfigError(f"precision={self.precision!r}; choose 'auto', 'fp32', 'fp16' or 'bf16'")


def channel_list(channels: Sequence[int | str] | str | None) -> tuple[int | str, ...] | None:
    """``"DNA,RNA"`` / ``"0,2"`` / a list -> a tuple (digits stay strings; resolve_channels reads them)."""
    if channels is None:
        return None
    if isinstance(channels, str):
        return tuple(c.strip() for c in channels.split(",") if c.strip())
    return tuple(channels)
