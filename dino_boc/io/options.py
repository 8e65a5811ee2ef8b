"""How files become ``(K, H, W)`` arrays: :class:`ReadOptions`, owned by ``io`` (one dataclass, used by
:func:`dino_boc.io.read_image` callers, the dataset pipeline and the CLI)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

from dino_boc.errors import ConfigError
from dino_boc.io.axes import DEFAULT_Z, PositionChoice, ZReduction, check_position, check_t, check_z
from dino_boc.io.budget import DEFAULT_MAX_PIXELS
from dino_boc.io.grouping import PRESETS, file_pattern

__all__ = ["ReadOptions", "PATTERN_PRESETS", "channel_list", "check_positive"]

# vendor presets for ReadOptions.pattern (the CLI's --pattern choices come from here)
PATTERN_PRESETS = tuple(PRESETS)


def check_positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an int >= 1 (or None where allowed)."""
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
        storage_options: fsspec options for ``s3://``/``gs://`` URLs (``{"anon": True}``, an
            ``endpoint_url``, credentials, ...): the one set of the run, applied to every read, in
            DataLoader workers too (:func:`dino_boc.io.fs.run_storage_options`). Never written
            anywhere: left out of :meth:`to_dict` (and so of provenance), of ``repr`` and of equality.
    """

    channels: tuple[int | str, ...] | None = None
    dims: str | None = None
    z: ZReduction = DEFAULT_Z
    t: int = 0
    level: int = 0
    channel_width: int | None = None
    channel_names: tuple[str, ...] | None = None
    illum: bool = False
    path_root: str | None = None
    position: PositionChoice = 0
    pattern: str | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

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
        check_positive("channel_width", self.channel_width, allow_none=True)
        check_position(self.position)
        if self.pattern is not None:
            file_pattern(self.pattern)  # a bad preset name or regex fails here, before any work
        check_positive("max_pixels", self.max_pixels, allow_none=True)
        if self.storage_options is not None:
            if not isinstance(self.storage_options, Mapping):
                raise ConfigError(f"storage_options of type {type(self.storage_options).__name__}; expected a dict "
                                  "of fsspec options, e.g. {'anon': True}")
            object.__setattr__(self, "storage_options", dict(self.storage_options))

    def to_dict(self) -> dict[str, Any]:
        """The options as plain values for provenance: ``storage_options`` (credentials) left out."""
        d = asdict(replace(self, storage_options=None))  # the options are never copied, let alone written
        d.pop("storage_options")
        d["channels"] = None if self.channels is None else list(self.channels)
        d["channel_names"] = None if self.channel_names is None else list(self.channel_names)
        return d


def channel_list(channels: Sequence[int | str] | str | None) -> tuple[int | str, ...] | None:
    """``"DNA,RNA"`` / ``"0,2"`` / a list -> a tuple (digits stay strings; resolve_channels reads them)."""
    if channels is None:
        return None
    if isinstance(channels, str):
        return tuple(c.strip() for c in channels.split(",") if c.strip())
    return tuple(channels)
