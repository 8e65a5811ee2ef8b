"""Streamed local listings: the order and records of a whole sorted listing (os.walk + sorted, glob.glob),
one directory at a time."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import pytest

from dino_boc.errors import InputError
from dino_boc.io import collect_sources
from dino_boc.io.formats import format_of, is_zarr_dir
from dino_boc.io.grouping import PRESETS, PresetGuess, guess_preset
from dino_boc.io.sources import iter_sources
from dino_boc.io.walk import LocalGlob

# names around the characters that sort before "/" ('-', '.', ' ') and after it ('0', '_'), upper case,
# non-ASCII, hidden entries, OME-Zarr folders (not searched) and names that extend a zarr folder's name
FILES = ["a.tif", "a-1.tif", "a_1.tif", "a/b.tif", "a/c/d.tif", "a0.tif", "a.b/x.tif", "A.tif", "b.TIF",
         ".hid.tif", ".hdir/x.tif", "z/.hid/y.tif", "z/y.tif", "z/y.png", "n.txt", "img.ome.zarr.tif",
         "img.ome.zarr-1/q.tif", "img.ome.zarr0.tif", "sp ace.tif", "sp/ace.tif", "deep/a/b/c/e.npy",
         "deep/a.b/c.tif", "deep/a-b/c.tif", "deep/a/b.tif", "u/\u00fc.tif", "u/u.tif", "t/tab.csv"]
ZARRS = ["img.ome.zarr", "sub/k.zarr", "a/c.zarr"]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    for name in FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    for name in ZARRS:
        (root / name / "0").mkdir(parents=True)
        (root / name / ".zattrs").write_text("{}")
        (root / name / "0" / "x.tif").write_bytes(b"x")
    (root / "t" / "tab.csv").write_text("path,w\na.tif,1\nzz.tif,2\n")
    os.symlink(root / "deep", root / "link")  # os.walk does not follow it; glob's ** does
    return root


def _walked(folder: Path, recursive: bool) -> list[str]:
    """What a folder listing is, computed the plain way: os.walk, everything at once, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [str(here / d) for d in dirnames if is_zarr_dir(here / d)]
        dirnames[:] = [d for d in dirnames if not is_zarr_dir(here / d)]
        found += [str(here / f) for f in filenames if not f.startswith(".") and format_of(here / f) is not None]
        if not recursive:
            break
    return sorted(found)


@pytest.mark.parametrize("recursive", [True, False])
def test_folder_gives_the_sorted_walk(tree, recursive):
    got = [r.paths[0] for r in iter_sources(tree, recursive=recursive)]
    assert got == _walked(tree, recursive)
    assert got == [r.paths[0] for r in collect_sources(str(tree) + "/", recursive=recursive)]
    assert len(got) == (25 if recursive else 10)  # not vacuous


PATTERNS = ["*", "*.tif", "**", "**/*.tif", "a/**", "**/", "*/", "a*/*.tif", "deep/*/c*", "deep/**/c.tif", ".*",
            "**/.hid/*", "[a-b]*", "z/*", "link/**", "**/*.zarr", "*/*/*", "a/**/*", "./a/*.tif", "a//*.tif",
            "[!a]*.tif", "?.tif", "no-such/*", "**/0/*"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_glob_matches_glob_glob_in_order(tree, pattern, monkeypatch):
    monkeypatch.chdir(tree)
    assert list(LocalGlob(pattern).matches()) == sorted(glob.glob(pattern, recursive=True))
    absolute = str(tree / pattern)
    assert list(LocalGlob(absolute).matches()) == sorted(glob.glob(absolute, recursive=True))


def test_glob_records_follow_the_sorted_matches(tree, monkeypatch):
    monkeypatch.chdir(tree)
    got = collect_sources("**")
    want = []
    for match in sorted(glob.glob("**", recursive=True)):  # what each match becomes, one by one
        p = Path(match)
        if p.is_file() and p.suffix == ".csv":
            want += [os.path.join("t", "a.tif"), os.path.join("t", "zz.tif")]  # rows start at the table's folder
        elif is_zarr_dir(p) or (p.is_file() and format_of(p) is not None):
            want.append(str(p))
    assert [r.paths[0] for r in got] == want


def test_records_come_before_later_folders_are_listed(tmp_path):
    """One directory at a time: a file added to a later folder after the first record is still found."""
    for name in ("a/1.tif", "a/2.tif", "b/1.tif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    records = iter_sources(tmp_path)
    first = next(records)
    (tmp_path / "b" / "0.tif").write_bytes(b"x")
    assert [first.paths[0], *(r.paths[0] for r in records)] == [
        str(tmp_path / n) for n in ("a/1.tif", "a/2.tif", "b/0.tif", "b/1.tif")]


def test_empty_inputs_fail_when_iterated_and_bad_options_at_the_call(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    records = iter_sources(tmp_path)
    with pytest.raises(InputError, match="no images found"):
        next(records)
    with pytest.raises(ValueError, match="z="):
        iter_sources(tmp_path, z="median")


def test_pattern_groups_files_across_the_listing(tmp_path):
    """Incucyte names put the channel before the well: the files of one image are not adjacent."""
    names = [f"VID1_{ch}_{well}_1_00d00h00m.tif" for ch in ("green", "phase") for well in ("A1", "B1")]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    records = list(iter_sources(tmp_path, pattern="incucyte"))
    assert [r.metadata["Metadata_Well"] for r in records] == ["A1", "B1"]
    assert [r.paths for r in records] == [
        tuple(str(tmp_path / f"VID1_{ch}_{w}_1_00d00h00m.tif") for ch in ("green", "phase")) for w in ("A1", "B1")]


def test_streamed_preset_guess_equals_the_rule_on_the_whole_list(tmp_path, caplog):
    names = [f"P_{w}f00d{c}.tif" for w in ("A01", "B02") for c in (0, 1)] + ["other.tif"]
    guess = PresetGuess()
    for name in names:
        guess.add(name)
    assert guess.preset == guess_preset(names) == "cellomics"
    assert guess_preset(["P_A01f00d0.tif", "x.tif", "y.tif", "z.tif", "w.tif"]) is None  # 1 of 5: too few
    assert guess_preset(["P_A01f00d0.tif", "P_A01f01d0.tif"]) is None  # one channel
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        list(iter_sources(tmp_path))
    assert "5 files look like per-channel cellomics exports" in caplog.text and "P_A01f00d0.tif" in caplog.text
    assert set(PRESETS) >= {"cellomics"}
