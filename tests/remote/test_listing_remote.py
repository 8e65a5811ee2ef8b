"""Paged object-store listings (moto's S3 and a GCS JSON-API server on 127.0.0.1): the records and order of
a whole listing, a page of keys at a time, and the first record before the listing is done."""

from __future__ import annotations

import logging

import pytest

from dino_boc.errors import InputError
from dino_boc.io import collect_sources
from dino_boc.io import fs as dfs
from dino_boc.io.formats import SUPPORTED_SUFFIXES
from dino_boc.io.sources import iter_sources

# many keys in one folder (several pages of 3), names around "/" in sort order, an OME-Zarr prefix
# listed only at its "img.ome.zarr/" (after "img.ome.zarr.tif"), hidden names (listed on stores)
KEYS = [f"flat/f{i:02d}.tif" for i in range(10)] + [
    "a.tif", "a-1.tif", "a_1.tif", "a/b.tif", "a/c/d.npy", "a0.png", "A.tif", ".h.tif", "n.txt",
    "img.ome.zarr.tif", "img.ome.zarr-1/q.tif", "img.ome.zarr0.tif", "img.ome.zarr/zarr.json", "img.ome.zarr/0/c",
    "sp ace.tif", "u/\u00fc.tif", "u/u.tif"]


def _whole_listing(fs, root: str) -> list[str]:
    """What a prefix lists, computed the plain way: fsspec's glob of everything (files and folders), sorted,
    images by suffix, nothing inside an OME-Zarr."""
    found = sorted(fs.glob(f"{root}/**"))
    return [f"{root.split('://')[0]}://{p}" if "://" in root else p for p in found
            if ".zarr/" not in p.lower() and p.lower().endswith(SUPPORTED_SUFFIXES)]


@pytest.fixture
def bucket(s3):
    if not s3.exists("paged"):  # the server lives for the session: the bucket is made once
        s3.mkdir("paged")
        for key in KEYS:
            s3.pipe(f"paged/tree/{key}", b"x")
    return "s3://paged/tree"


def _pages(caplog) -> int:
    return sum("listing s3://paged" in r.getMessage() or "listing gs://" in r.getMessage() for r in caplog.records)


def test_s3_prefix_a_page_at_a_time_equals_the_whole_listing(bucket, s3, monkeypatch, caplog):
    monkeypatch.setattr(dfs, "LIST_PAGE_SIZE", 3)
    want = ["s3://" + p for p in _whole_listing(s3, "paged/tree")]
    assert len(want) == 25 and "s3://paged/tree/img.ome.zarr" in want  # not vacuous
    with caplog.at_level(logging.DEBUG, logger="dino_boc.io.fs"):
        records = iter_sources(bucket)
        first = next(records)
        pages_at_first = _pages(caplog)
        rest = list(records)
    assert [first.paths[0], *(r.paths[0] for r in rest)] == want
    assert [r.id for r in rest] == want[1:]
    assert pages_at_first == 2  # a one-key probe (is it a prefix?), then the first page of 3
    assert _pages(caplog) >= 4 + len(KEYS) // 3  # "flat/" alone takes 4 pages of 3
    assert not dfs.filesystem(bucket).dircache  # no listing was kept (fsspec's isdir/glob keep them whole)
    assert [r.paths[0] for r in collect_sources(bucket + "/flat")] == [f"{bucket}/flat/f{i:02d}.tif" for i in range(10)]


@pytest.mark.parametrize("pattern", ["*", "**", "*.tif", "**/*.tif", "img.ome.zarr*", "flat/f0*", "[a-b]*",
                                     "*/*", "a/**"])
def test_s3_globs_match_fsspec_glob_in_order(bucket, s3, monkeypatch, pattern):
    monkeypatch.setattr(dfs, "LIST_PAGE_SIZE", 2)
    want = sorted("s3://" + p for p in s3.glob(f"paged/tree/{pattern}")
                  if ".zarr/" not in p.lower() and p.lower().endswith(SUPPORTED_SUFFIXES))
    assert want  # not vacuous
    assert [r.paths[0] for r in iter_sources(f"{bucket}/{pattern}")] == want


def test_missing_bucket_or_prefix_is_an_input_error(bucket):
    for url in ("s3://no-such-bucket/plates", "s3://paged/no-such-prefix"):
        with pytest.raises(InputError, match="not an image, table, OME-Zarr or prefix"):
            collect_sources(url)


def test_s3_not_recursive_lists_one_level(bucket, s3):
    want = sorted("s3://" + p for p in s3.glob("paged/tree/*") if p.lower().endswith(SUPPORTED_SUFFIXES))
    assert [r.paths[0] for r in iter_sources(bucket, recursive=False)] == want
    assert len(want) == 10


def test_gcs_prefix_is_listed_with_page_tokens(gcs, monkeypatch, caplog):
    root, _, calls = gcs
    for key in KEYS:
        (root / "paged" / "tree" / key).parent.mkdir(parents=True, exist_ok=True)
        (root / "paged" / "tree" / key).write_bytes(b"x")
    monkeypatch.setattr(dfs, "LIST_PAGE_SIZE", 3)
    with dfs.storage_options(token="anon"):
        want = ["gs://" + p for p in _whole_listing(dfs.filesystem("gs://paged"), "paged/tree")]
        records = iter_sources("gs://paged/tree")
        first = next(records)
        listed_at_first = sum(1 for c in calls if c.get("maxResults") == "3")
        got = [first.paths[0], *(r.paths[0] for r in records)]
    assert got == want and len(want) == 25
    paged = [c for c in calls if c.get("maxResults") == "3"]
    assert listed_at_first == 1 and sum("pageToken" in c for c in paged) >= 3
    assert all(c["delimiter"] == "/" for c in paged)
