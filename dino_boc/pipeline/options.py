"""The settings of a dataset run, grouped by concern (each a frozen dataclass, validated on creation)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

from dino_boc.errors import ConfigError
from dino_boc.io.axes import PositionChoice, ZReduction, check_position, check_t, check_z
from dino_boc.io.budget import DEFAULT_MAX_PIXELS
from dino_boc.io.grouping import PRESETS, file_pattern
from dino_boc.precision import PRECISIONS, Precision
from dino_boc.preprocess.tiles import FIT_TO_PATCH

__all__ = ["ReadOptions", "EmbedOptions", "RunOptions", "FIT_TO_PATCH", "PATTERN_PRESETS", "DEFAULT_MAX_TOKENS",
           "TOKEN_WARNING"]

# vendor presets for ReadOptions.pattern (the CLI's --pattern choices come from here)
PATTERN_PRESETS = tuple(PRESETS)

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
        channel_names: names given to the K channels kept (after ``channels``), in order: they replace
            the file's names (e.g. ImageJ slice labels) or the ``ch0``, ``ch1`` ... defaults, and name the
            feature columns. Every image must then have exactly that many channels.
        illum: LoadData tables: divide each channel by its ``FileName_Illum<Ch>`` illumination function,
            as CellProfiler's CorrectIlluminationApply does (recorded in provenance).
        path_root: LoadData tables: the folder their relative ``PathName_`` values start at (tried
            before the table's folder and the working directory).
        position: stage position of multi-position files (Micro-Manager, multi-image OME-TIFF), or
            ``"each"``: one row per position with ``Metadata_Position``.
        pattern: group per-channel files into multi-channel images: a preset name (see
            :data:`PATTERN_PRESETS`) or a regular expression with named groups, one of them ``channel``
            (see :mod:`dino_boc.io.grouping`).
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
    channel_names: tuple[str, ...] | None = None
    illum: bool = False
    path_root: str | None = None
    position: PositionChoice = 0
    pattern: str | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.channel_names is not None:
            names = tuple(channel_list(self.channel_names) or ())
            if not names or len(set(names)) != len(names):
                raise ConfigError(
                    f"channel_names={self.channel_names!r}: give one distinct name per channel, e.g. 'DNA,ER,RNA'"
                )
            if self.channels is not None and len(channel_list(self.channels) or ()) != len(names):
                raise ConfigError(
                    f"channels={self.channels!r} keeps {len(channel_list(self.channels) or ())} channels but "
                    f"channel_names={self.channel_names!r} names {len(names)}; give one name per kept channel"
                )
            object.__setattr__(self, "channel_names", names)
        if self.path_root is not None:
            object.__setattr__(self, "path_root", str(self.path_root))
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
        check_position(self.position)
        if self.pattern is not None:
            file_pattern(self.pattern)  # a bad preset name or regex fails here, before any work
        _positive("max_pixels", self.max_pixels, allow_none=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = None if self.channels is None else list(self.channels)
        d["channel_names"] = None if self.channel_names is None else list(self.channel_names)
        return d


@dataclass(frozen=True)
class EmbedOptions:
    """What is embedded and how tokens become one feature row.

    Attributes:
        n_last_blocks: L, CLS tokens of the last L blocks (0: none, only patch means); None: the model's
            default (``model.features``).
        avgpool: append the per-channel mean patch token; None: the model's default.
        channel_pool: ``"concat"`` (per-channel features) or ``"mean"`` (averaged over channels); None: the
            model's default.
        tile: embed a grid of ``tile x tile`` tiles covering the field and average their features per
            channel (one row per image); None embeds the whole field.
        cell_size: single-cell mode: side of the crop centred on each object (set with masks).
        mask_outside: single-cell mode: zero every pixel outside the object.
        max_tokens: whole fields: most patch tokens N per channel-image (after resize/crop); a larger
            field is an errors-file row that suggests ``tile``/``resize``. None: no limit.
    """

    n_last_blocks: int | None = None
    avgpool: bool | None = None
    channel_pool: Literal["concat", "mean"] | None = None
    tile: int | None = None
    cell_size: int | None = None
    mask_outside: bool = False
    max_tokens: int | None = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        if self.n_last_blocks is not None and (
                isinstance(self.n_last_blocks, bool) or not isinstance(self.n_last_blocks, int) or self.n_last_blocks < 0):
            raise ConfigError(f"n_last_blocks={self.n_last_blocks!r} must be a non-negative integer (0: no CLS) or None")
        _positive("max_tokens", self.max_tokens, allow_none=True)
        _positive("tile", self.tile, allow_none=True)
        _positive("cell_size", self.cell_size, allow_none=True)
        if self.channel_pool not in ("concat", "mean", None):
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
        precision: ``"auto"`` (fp16 autocast on CUDA, bf16 on CPUs with native bf16, else fp32), ``"fp32"``,
            ``"fp16"``, ``"bf16"`` (:func:`dino_boc.precision.resolve_precision`).
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
    precision: Precision = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        _positive("batch_size", self.batch_size)
        _positive("shard_size", self.shard_size)
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError(f"num_workers={self.num_workers!r} must be an int >= 0")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}; choose one of {', '.join(map(repr, PRECISIONS))}")


def channel_list(channels: Sequence[int | str] | str | None) -> tuple[int | str, ...] | None:
    """``"DNA,RNA"`` / ``"0,2"`` / a list -> a tuple (digits stay strings; resolve_channels reads them)."""
    if channels is None:
        return None
    if isinstance(channels, str):
        return tuple(c.strip() for c in channels.split(",") if c.strip())
    return tuple(channels)
