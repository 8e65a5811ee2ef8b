"""Per-channel files -> multi-channel images: a file-name pattern with named groups, as CellProfiler's
metadata regular expressions.

Many instruments export one 2-D file per channel (Cellomics ``..._D03f00d0.tif``, ImageXpress
``..._B02_s1_w1<GUID>.tif``, Phenix/Operetta ``r01c01f01p01-ch1sk1fk1fl1.tiff``, Incucyte
``VID1_phase_A1_1_00d00h00m.tif``). Read one file at a time, every channel would become its own row and
DNA, actin and PH3 would share the same ``ch0_*`` feature columns. A pattern groups them instead:

- the named group ``channel`` says which channel a file holds; its text is the channel's name
  (``d0``, ``w1``, ``ch1``, ``phase``; a bare number ``1`` becomes ``ch1``);
- every other named group (``plate``, ``well``, ``site``, ``plane``, ``timepoint``, ...) says which image
  the file belongs to and becomes a metadata column (``Metadata_Well``, ``Metadata_Site``, ...); groups
  ``row``/``col`` (Phenix ``r01c01``) also give ``Metadata_Well`` (``A01``);
- files of one image are read in channel order (numeric where the names end in numbers: ``ch2`` before
  ``ch10``); an image missing a channel that others have gets ``""`` for it and fails when read, with
  a row in the errors file, while the run goes on.

Patterns are matched against the file name (case-insensitive; with ``/`` in it, against the path
relative to the folder). :data:`PRESETS` has the common vendors' patterns by name.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dino_boc.errors import ConfigError
from dino_boc.io.record import ImageRecord

__all__ = ["PRESETS", "FilePattern", "file_pattern", "group_files", "guess_preset", "PresetGuess"]

logger = logging.getLogger(__name__)

_GUID = r"\[?[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\]?"
_HARMONY = r"r(?P<row>\d{2})c(?P<col>\d{2})f(?P<site>\d{2})p(?P<plane>\d{2})-(?P<channel>ch\d+)sk(?P<timepoint>\d+)fk\d+fl\d+\.tiff?$"

PRESETS: Mapping[str, str] = {
    # Thermo Cellomics ArrayScan: <plate>_<well>f<field>d<channel>.tif (also .C01/.DIB exports as TIFF)
    "cellomics": r"^(?P<plate>.+)_(?P<well>[a-p]\d{2})f(?P<site>\d{2})(?P<channel>d\d)\.tiff?$",
    # Molecular Devices ImageXpress: <plate>_<well>[_s<site>]_w<wavelength>[_][<GUID>].tif
    "imagexpress": rf"^(?P<plate>.*?)_?(?P<well>[a-p]\d{{2}})(?:_s(?P<site>\d+))?_(?P<channel>w\d)_?(?:{_GUID})?\.tiff?$",
    # PerkinElmer/Revvity Opera Phenix and Operetta (Harmony export): r01c01f01p01-ch1sk1fk1fl1.tiff
    "phenix": "^" + _HARMONY,
    "operetta": "^" + _HARMONY,
    # Sartorius Incucyte export: <experiment>_<channel>_<well>_<field>_<DDdHHhMMm>.tif
    "incucyte": r"^(?P<experiment>[^_]+)_(?P<channel>[a-z]+)_(?P<well>[a-p]\d{1,2})_(?P<site>\d+)_(?P<timepoint>\d+d\d+h\d+m)\.tiff?$",
}

_METADATA_NAMES = {"plate": "Plate", "well": "Well", "site": "Site", "plane": "Plane", "timepoint": "Timepoint",
                   "row": "Row", "col": "Col", "experiment": "Experiment", "field": "Site"}


@dataclass(frozen=True)
class FilePattern:
    """A compiled file-name pattern.

    Attributes:
        name: the preset name, or ``"custom"``.
        regex: the compiled pattern (case-insensitive); must have a ``channel`` group.
    """

    name: str
    regex: re.Pattern

    def match(self, relative: str) -> re.Match | None:
        """Match a file's name (or its path relative to the folder when the pattern contains ``/``)."""
        text = relative if "/" in self.regex.pattern else Path(relative).name
        return self.regex.search(text)


def file_pattern(pattern: str) -> FilePattern:
    """A preset name from :data:`PRESETS` or a regular expression with a ``(?P<channel>...)`` group.

    Raises:
        ConfigError: not a preset and not a valid expression, or no ``channel`` group.
    """
    key = pattern.strip().lower()
    if key in PRESETS:
        return FilePattern(key, re.compile(PRESETS[key], re.IGNORECASE))
    try:
        regex = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(
            f"pattern={pattern!r} is neither a preset ({', '.join(PRESETS)}) nor a valid regular expression: {exc}"
        ) from exc
    if "channel" not in regex.groupindex:
        raise ConfigError(
            f"pattern={pattern!r} has no (?P<channel>...) group; name the part of the file name that says the "
            r"channel, e.g. '^(?P<well>[A-P]\d{2})_s(?P<site>\d+)_(?P<channel>w\d)\.tif$', or use a preset: "
            f"{', '.join(PRESETS)}"
        )
    return FilePattern("custom", regex)


def _channel_name(text: str) -> str:
    return f"ch{text}" if text.isdigit() else text


def _channel_order(name: str) -> tuple:
    m = re.search(r"(\d+)$", name)
    return (name[: m.start()].lower(), int(m.group(1))) if m else (name.lower(), -1)


def _well(groups: dict[str, str]) -> str | None:
    """``A01`` from Phenix ``row``/``col`` numbers (row 1 = A)."""
    row, col = groups.get("row"), groups.get("col")
    if row is None or col is None or not row.isdigit() or not 1 <= int(row) <= 26:
        return None
    return f"{chr(ord('A') + int(row) - 1)}{int(col):02d}"


def group_files(
    paths: Sequence[str | os.PathLike], pattern: str | FilePattern, *, root: str | os.PathLike | None = None
) -> tuple[list[ImageRecord], list[str]]:
    """Group per-channel files into one :class:`ImageRecord` per image.

    Args:
        paths: image files (each a single 2-D plane).
        pattern: a :data:`PRESETS` name, a regular expression, or a :class:`FilePattern`.
        root: the folder the paths were found in (patterns with ``/`` match the path relative to it).

    Returns:
        (records in order of their first file's path, with ``channel_names`` and ``Metadata_<Group>``
        metadata; the files the pattern did not match).

    Raises:
        ConfigError: a bad pattern, or two files for one channel of one image.
    """
    fp = pattern if isinstance(pattern, FilePattern) else file_pattern(pattern)
    groups: dict[tuple, dict[str, str]] = {}
    metadata: dict[tuple, dict[str, str]] = {}
    unmatched: list[str] = []
    for path in sorted(str(p) for p in paths):
        relative = os.path.relpath(path, root).replace(os.sep, "/") if root is not None else path
        m = fp.match(relative)
        if m is None or not m.group("channel"):
            unmatched.append(path)
            continue
        found = {k: v for k, v in m.groupdict().items() if v}  # an optional group that matched nothing: absent
        channel = _channel_name(found.pop("channel"))
        key = (str(Path(path).parent),) + tuple(sorted(found.items()))
        files = groups.setdefault(key, {})
        if channel in files:
            raise ConfigError(
                f"two files for channel {channel!r} of one image with pattern {fp.name!r}: {files[channel]!r} and "
                f"{path!r}; add the part of the name that tells them apart as a named group"
            )
        files[channel] = path
        metadata[key] = _metadata(found)
    channels = sorted({c for files in groups.values() for c in files}, key=_channel_order)
    records = []
    for key, files in sorted(groups.items(), key=lambda kv: min(kv[1].values())):
        missing = [c for c in channels if c not in files]
        if missing:
            logger.warning("%s: no file for channel(s) %s; that image will fail", min(files.values()), missing)
        record_id = min(files.values())
        records.append(
            ImageRecord(
                id=record_id,
                paths=tuple(files.get(c, "") for c in channels),
                channel_names=tuple(channels),
                metadata=metadata[key],
            )
        )
    return records, unmatched


def _metadata(found: dict[str, str]) -> dict[str, str]:
    out = {f"Metadata_{_METADATA_NAMES.get(k.lower(), k[:1].upper() + k[1:])}": v for k, v in found.items()}
    well = _well({k.lower(): v for k, v in found.items()})
    if well is not None and "Metadata_Well" not in out:
        out["Metadata_Well"] = well
    if "Metadata_Well" in out:
        out["Metadata_Well"] = out["Metadata_Well"].upper()
    return out


class PresetGuess:
    """:func:`guess_preset` fed one file at a time: memory is a few counters per preset, whatever the count.

    Example:
        >>> guess = PresetGuess()
        >>> for path in paths:
        ...     guess.add(path)
        >>> guess.preset  # "cellomics", ... or None
    """

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None
        self._regex = {preset: re.compile(regex, re.IGNORECASE) for preset, regex in PRESETS.items()}
        self._hits = dict.fromkeys(PRESETS, 0)
        self._channels: dict[str, set[str]] = {preset: set() for preset in PRESETS}

    def add(self, path: str | os.PathLike) -> None:
        """Count one more file."""
        name = Path(path).name
        self.count += 1
        self.first = str(path) if self.first is None else self.first
        for preset, regex in self._regex.items():
            m = regex.search(name)
            if m:
                self._hits[preset] += 1
                if len(self._channels[preset]) < 2:  # two distinct channels are all the rule asks
                    self._channels[preset].add(m.group("channel").lower())

    @property
    def preset(self) -> str | None:
        """The first preset matching most files (at least half, at least 2) with at least 2 channels."""
        if self.count < 2:
            return None
        for preset in PRESETS:
            if self._hits[preset] >= max(2, self.count // 2) and len(self._channels[preset]) >= 2:
                return preset
        return None


def guess_preset(paths: Sequence[str | os.PathLike]) -> str | None:
    """The preset under which ``paths`` look like per-channel exports (most files grouped, >= 2 channels)."""
    guess = PresetGuess()
    for path in paths:
        guess.add(path)
    return guess.preset
