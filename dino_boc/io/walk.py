"""Sorted listings that hold one folder (or one page of an object store) per level walked, never the whole list.

:func:`dino_boc.io.sources.iter_sources` lists folders, prefixes and globs through these walkers, which
give the paths in the order a whole sorted listing would (``sorted()`` of every path as a string), but
stream them:

- a local folder is read one directory at a time (``os.scandir``); its entries are sorted so that a
  file ``a.tif`` comes where the string ``.../a.tif`` sorts and a sub-folder ``a`` where ``.../a/...``
  does (after ``a.tif`` and ``a-1.tif``, since ``.`` and ``-`` sort before ``/``; before ``a0.tif``),
  and the walk goes down into a sub-folder at that place;
- an object-store prefix is read one page of keys at a time (:func:`dino_boc.io.fs.list_pages`), one
  "folder" (``/`` delimiter) after another, in the same order. A sub-folder that is itself a result
  (an OME-Zarr prefix ``img.ome.zarr``) is only seen when the listing reaches ``img.ome.zarr/``, after
  ``img.ome.zarr.tif``: results that may still be preceded by such a folder wait in a small buffer
  (only names that extend a result-like folder name by a character sorting before ``/``);
- a glob walks only from its fixed part (``plates/p1`` in ``plates/p1/*/r*.tif``), no deeper than it
  has segments unless it has ``**``. Local globs match as :func:`glob.glob` (``recursive=True``) does:
  ``*``/``?``/``[...]`` within a name, ``**`` across folders, hidden names only when the pattern's name
  starts with ``.``; URL globs as fsspec's ``glob`` (``**`` across folders, hidden names match).

Where they differ from the whole listings they replace: a local pattern with two ``**`` segments gives
each match once (``glob.glob`` repeats some); ``..`` after a wildcard segment matches nothing; URL
walks do not go into OME-Zarr prefixes (``*.zarr``), whose chunks are never results.
"""

from __future__ import annotations

import fnmatch
import glob
import heapq
import itertools
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

from dino_boc.io.fs import list_pages

__all__ = ["walk_local", "walk_url", "LocalGlob", "url_glob_matcher"]

# visit(path, name, is_dir, is_link, state) -> (is a result, state for the sub-folder or None: do not go in)
Visit = Callable[[str, str, bool, bool, Any], "tuple[bool, Any]"]


def walk_local(root: str, visit: Visit, state: Any = None, *, suffix: str = "") -> Iterator[str]:
    """Paths under the local folder ``root`` that ``visit`` accepts, in sorted order, one directory held at a time.

    Args:
        root: the folder; results are ``os.path.join(root, name, ...)`` (``""``: relative to the
            working directory, without ``./``).
        visit: called once per entry (hidden ones too) with its path, name, whether it is a folder
            (following links), whether it is a link, and the folder's ``state``; returns whether the
            entry is a result and the state to walk its contents with (None: not walked).
        state: the state of ``root``.
        suffix: appended to every result (``"/"``: folders named as ``dir/``), and sorted with it.

    Returns:
        An iterator of result paths, sorted as strings. A folder that cannot be read is skipped, as
        ``os.walk`` and ``glob`` skip it. Memory: the entries of each folder on the path being walked
        (as ``os.walk``), not the tree.
    """
    try:
        with os.scandir(root or ".") as it:
            entries = list(it)
    except OSError:
        return
    steps: list[tuple[str, int, str, Any]] = []
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        path = os.path.join(root, entry.name)
        hit, inner = visit(path, entry.name, is_dir, entry.is_symlink(), state)
        if hit:
            steps.append((entry.name + suffix, 0, path + suffix, None))
        if inner is not None and is_dir:
            steps.append((entry.name + "/", 1, path, inner))  # its contents sort as ".../name/..."
    del entries
    steps.sort(key=lambda s: s[:2])  # a result "dir/" before the walk under it
    for _, kind, path, inner in steps:
        if kind == 0:
            yield path
        else:
            yield from walk_local(path, visit, inner, suffix=suffix)


def walk_url(root: str, visit: Visit, *, result_folder: Callable[[str], bool], state: Any = None,
             prefix: str = "", page_size: int | None = None) -> Iterator[str]:
    """URLs under the object-store folder ``root`` that ``visit`` accepts, sorted as strings, one page held at a time.

    Args:
        root: the folder URL (``s3://bucket/plates``).
        visit: as for :func:`walk_local` (``is_link`` is always False).
        result_folder: whether a folder URL could be a result (e.g. ends in ``.zarr``); such a folder is
            seen only when the listing reaches ``<folder>/``, so results it would precede wait until
            the listing is past that point.
        state: the state of ``root``.
        prefix: list only names of ``root`` starting with this stem (a glob's fixed part).
        page_size: keys per listing request (:data:`dino_boc.io.fs.LIST_PAGE_SIZE`).

    Returns:
        An iterator of result URLs. Memory: one page per folder level being walked, plus the results
        waiting for a result-like folder (see the module doc).

    Raises:
        ImageReadError: a listing request that failed.
    """
    start = len(root.rstrip("/")) + 1
    pending: list[tuple[str, int]] = []
    order = itertools.count()

    def positions(url: str, inner_state: Any, stem: str) -> Iterator[str]:
        """Walk one folder; push results, yield the listing's position after each entry."""
        for page in list_pages(url, prefix=stem, page_size=page_size):
            for entry, is_dir in page:
                name = entry.rsplit("/", 1)[-1]
                hit, inner = visit(entry, name, is_dir, False, inner_state)
                if hit:
                    heapq.heappush(pending, (entry, next(order)))
                yield entry + "/" if is_dir else entry
                if inner is not None and is_dir:
                    yield from positions(entry, inner, "")

    for position in positions(root.rstrip("/"), state, prefix):
        mark = _watermark(position, start, result_folder)
        while pending and (mark is None or pending[0][0] < mark):
            yield heapq.heappop(pending)[0]
    while pending:
        yield heapq.heappop(pending)[0]


_BEFORE_SLASH = re.compile(r"[\x00-\x2e]")  # characters that sort before "/"


def _watermark(position: str, start: int, result_folder: Callable[[str], bool]) -> str | None:
    """The smallest result a later listing entry may still bring: a folder ``P`` whose ``P/`` is yet to
    come though ``P`` sorts before ``position`` (``P`` a prefix of it followed by a character before ``/``)."""
    for m in _BEFORE_SLASH.finditer(position, start):
        candidate = position[: m.start()]
        if result_folder(candidate):
            return candidate
    return None


class LocalGlob:
    """A local glob pattern as :func:`glob.glob` (``recursive=True``) matches it, one name at a time.

    The pattern is cut into its fixed folder (``root``) and name patterns, one per path segment;
    matching runs as a small automaton over the segments (``**`` matches zero or more folders).

    Args:
        pattern: e.g. ``plates/*/images/r*.tif`` or ``data/**/*.ome.zarr`` (``~`` already expanded).
    """

    def __init__(self, pattern: str) -> None:
        self.dirs_only = pattern.endswith("/") and len(pattern.rstrip("/")) > 0
        parts = pattern.rstrip("/").split("/") if self.dirs_only else pattern.split("/")
        fixed = next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))
        self.root = "/".join(parts[:fixed]) or ("/" if pattern.startswith("/") else "")
        self.segments = parts[fixed:]

    def start(self) -> frozenset[int]:
        """The automaton's states at ``root``."""
        return self._closure({0})

    def accepts(self, states: frozenset[int]) -> bool:
        """Whether a path that reached ``states`` matches the whole pattern."""
        return len(self.segments) in states

    def step(self, states: frozenset[int], name: str, is_dir: bool) -> frozenset[int]:
        """The states after one more path segment ``name`` (``is_dir``: it is a folder, links followed)."""
        out = set()
        last = len(self.segments) - 1
        for s in states:
            if s > last:
                continue
            seg = self.segments[s]
            if seg == "**":  # any number of visible folders; the last ``**`` also matches files
                if not name.startswith(".") and (is_dir or s == last):
                    out.add(s)
            elif _name_matches(seg, name):
                out.add(s + 1)
        return self._closure(out)

    def _closure(self, states: set[int]) -> frozenset[int]:
        out = set(states)
        todo = list(states)
        while todo:
            s = todo.pop()
            if s < len(self.segments) and self.segments[s] == "**" and s + 1 not in out:
                out.add(s + 1)
                todo.append(s + 1)
        return frozenset(out)

    def matches(self) -> Iterator[str]:
        """Every match, sorted as strings (folders too: ``dir/`` for a pattern ending in ``/``)."""
        if not self.segments:
            return
        first = self.start()
        if self.accepts(first) and self.root and os.path.isdir(self.root):  # ``dir/**`` matches ``dir/`` itself
            yield os.path.join(self.root, "")

        def visit(path: str, name: str, is_dir: bool, is_link: bool, states: frozenset[int]):
            after = self.step(states, name, is_dir)
            hit = self.accepts(after) and (is_dir or not self.dirs_only)
            walk_on = is_dir and any(s < len(self.segments) for s in after)
            return hit, (after if walk_on else None)

        yield from walk_local(self.root, visit, first, suffix="/" if self.dirs_only else "")


def _name_matches(segment: str, name: str) -> bool:
    """One path segment as glob matches it: literally without wildcards; else fnmatch, case-sensitive,
    a hidden name only when the pattern segment starts with ``.``."""
    if not glob.has_magic(segment):
        return name == segment
    if name.startswith(".") and not segment.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, segment)


def url_glob_matcher(pattern: str, strip: Callable[[str], str]) -> tuple[str, str, int | None, Callable[[str, bool], bool]]:
    """What to list for a URL glob, and its test, as fsspec's ``glob`` does.

    Args:
        pattern: ``s3://bucket/plates/*/r*.tiff``.
        strip: the filesystem's ``_strip_protocol`` (fsspec matches paths without ``s3://``).

    Returns:
        (folder URL to walk from, stem its names start with, depth limit in segments (None with ``**``),
        ``test(url, is_dir)``).
    """
    from fsspec.utils import glob_translate

    protocol, rest = pattern.split("://", 1)
    first = min((i for i in (rest.find(c) for c in "*?[") if i >= 0), default=len(rest))
    cut = rest.rfind("/", 0, first)
    folder, stem = (rest[:cut], rest[cut + 1: first]) if cut >= 0 else ("", rest[:first])
    depth = None if "**" in rest else rest[cut + 1:].count("/") + 1
    stripped = strip(pattern)
    slash_dirs = pattern.endswith("/") or stripped.endswith("/**")
    regex = re.compile(glob_translate(stripped + ("/" if pattern.endswith("/") else "")))

    def test(url: str, is_dir: bool) -> bool:
        path = strip(url)
        return regex.match(path + "/" if slash_dirs and is_dir else path) is not None

    return f"{protocol}://{folder}", stem, depth, test
