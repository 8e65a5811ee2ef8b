import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dino_boc.errors import ConfigError, InputError
from dino_boc.outputs import ShardWriter, done_indices, done_mask, finalize, read_manifests
from dino_boc.outputs.shards import MANIFEST_NAME, rank_dir
from outputs_helpers import expected_frame, feed, make_items, make_provenance


def _ok(items):
    return {it["index"] for it in items if "reason" not in it}


def _table(path):
    return pq.read_table(path).replace_schema_metadata(None)


def test_manifest_lists_committed_shards(tmp_path):
    items = make_items(20, seed=1)
    writer = ShardWriter(tmp_path, make_provenance(), shard_size=4)
    feed(writer, items)
    writer.close()

    (manifest,) = read_manifests(tmp_path)
    assert manifest.closed and manifest.rank == 0
    covered = set()
    for shard in manifest.shards:
        table = pq.read_table(rank_dir(tmp_path, 0) / shard["file"])
        index = table.column("Metadata_index").to_pylist()
        assert index == sorted(index) and len(index) == shard["rows"]
        assert {i for s, e in shard["indices"] for i in range(s, e)} == set(index)
        width = len(manifest.feature_schemas[shard["schema"]])
        assert table.schema.field("__features__").type.list_size == width
        covered |= set(index)
    assert covered == _ok(items)
    assert {f["index"] for f in manifest.failures} == {it["index"] for it in items} - _ok(items)
    assert done_indices(tmp_path) == set(range(20))
    assert done_indices(tmp_path, include_failed=False) == _ok(items)
    assert done_indices(tmp_path / "missing") == set()


def test_each_shard_has_one_feature_width(tmp_path):
    items = make_items(30, seed=2)
    with ShardWriter(tmp_path, make_provenance(), shard_size=5) as writer:
        feed(writer, items)
    (manifest,) = read_manifests(tmp_path)
    widths = sorted({len(v) for v in manifest.feature_schemas.values()})
    assert widths == [6, 10]


def test_stray_files_are_ignored_then_removed(tmp_path):
    items = make_items(12, seed=3, fail_every=0)
    writer = ShardWriter(tmp_path, make_provenance(), shard_size=4)
    feed(writer, items[:8])
    writer.close()
    folder = rank_dir(tmp_path, 0)
    # a shard renamed into place whose manifest update never happened, and a half-written temp file
    shutil.copy(folder / "shard-000000.parquet", folder / "shard-000007.parquet")
    (folder / ".shard-000008.parquet.tmp").write_bytes((folder / "shard-000001.parquet").read_bytes()[:50])

    assert done_indices(tmp_path) == set(range(8))
    finalize(tmp_path, tmp_path / "out.parquet")
    assert _table(tmp_path / "out.parquet").num_rows == 8

    writer = ShardWriter(tmp_path, make_provenance(), shard_size=4, resume=True)
    assert not (folder / "shard-000007.parquet").exists()
    assert not (folder / ".shard-000008.parquet.tmp").exists()
    feed(writer, items[8:])
    writer.close()
    finalize(tmp_path, tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(_table(tmp_path / "out.parquet").to_pandas(), expected_frame(items))


def _crash_after(shard_dir, items, k, shard_size):
    """Feed inputs until k shards are committed, then stop without closing (as kill -9 would)."""
    writer = ShardWriter(shard_dir, make_provenance(created="2024-01-01T00:00:00+00:00"), shard_size, resume=True)
    for it in items:
        feed(writer, [it], batch=1)
        if len(read_manifests(shard_dir)[0].shards) >= k:
            break
    folder = rank_dir(shard_dir, 0)
    last = sorted(folder.glob("shard-*.parquet"))[-1]
    seq = int(last.stem.split("-")[1])
    shutil.copy(last, folder / f"shard-{seq + 1:06d}.parquet")  # renamed, manifest not yet updated
    (folder / f".shard-{seq + 2:06d}.parquet.tmp").write_bytes(last.read_bytes()[: last.stat().st_size // 2])


def test_resume_after_crash_equals_uninterrupted_run(tmp_path):
    items = make_items(40, seed=4)
    clean = tmp_path / "clean"
    with ShardWriter(clean, make_provenance(), shard_size=5) as writer:
        feed(writer, items)
    finalize(clean, tmp_path / "clean.parquet")

    crashed = tmp_path / "crashed"
    _crash_after(crashed, items, k=3, shard_size=5)
    done = done_indices(crashed)
    assert 0 < len(done) < len(items)

    writer = ShardWriter(crashed, make_provenance(), shard_size=5, resume=True)
    feed(writer, [it for it in items if it["index"] not in done])
    writer.close()
    summary = finalize(crashed, tmp_path / "resumed.parquet")

    assert _table(tmp_path / "resumed.parquet").equals(_table(tmp_path / "clean.parquet"))
    assert (tmp_path / "resumed.parquet.errors.csv").read_text() == (tmp_path / "clean.parquet.errors.csv").read_text()
    assert summary["n_ok"] == len(_ok(items)) and summary["complete"]
    meta = json.loads(pq.read_schema(tmp_path / "resumed.parquet").metadata[b"dino_boc"])
    assert meta["created"] == "2024-01-01T00:00:00+00:00"  # the first start's provenance is kept


def test_existing_shards_need_resume_and_same_provenance(tmp_path):
    with ShardWriter(tmp_path, make_provenance(), shard_size=2) as writer:
        feed(writer, make_items(4, seed=5, fail_every=0))
    with pytest.raises(ConfigError, match="resume=True"):
        ShardWriter(tmp_path, make_provenance(), shard_size=2)
    with pytest.raises(ConfigError, match="model_name"):
        ShardWriter(tmp_path, make_provenance(model_name="other"), shard_size=2, resume=True)
    assert json.loads((rank_dir(tmp_path, 0) / MANIFEST_NAME).read_text())["closed"] is True


def test_context_manager_keeps_buffered_rows_on_error(tmp_path):
    items = make_items(5, seed=6, fail_every=0)
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, make_provenance(), shard_size=100) as writer:
            feed(writer, items)
            raise RuntimeError("worker died")
    (manifest,) = read_manifests(tmp_path)
    assert not manifest.closed
    assert done_indices(tmp_path) == set(range(5))


def test_add_validates_its_inputs(tmp_path):
    writer = ShardWriter(tmp_path, make_provenance())
    rows = [{"Metadata_path": "a"}, {"Metadata_path": "b"}]
    feats = np.zeros((2, 3), dtype=np.float32)
    names = ["f0", "f1", "f2"]
    with pytest.raises(InputError, match="one of each"):
        writer.add([0], rows, feats, names)
    with pytest.raises(InputError, match=r"\(n, F\)"):
        writer.add([0, 1], rows, np.zeros(2), names)
    with pytest.raises(InputError, match="feature names"):
        writer.add([0, 1], rows, feats, names[:2])
    with pytest.raises(InputError, match="unique"):
        writer.add([0, 1], rows, feats, ["f0", "f0", "f1"])
    with pytest.raises(InputError, match="metadata"):
        writer.add([0, 1], rows, feats, ["f0", "f1", "Metadata_x"])
    with pytest.raises(InputError, match=">= 0"):
        writer.add([-1, 1], rows, feats, names)
    with pytest.raises(InputError, match="integers"):
        writer.add([0.5, 1.0], rows, feats, names)
    with pytest.raises(InputError, match="Metadata_index"):
        writer.add([0, 1], [{"Metadata_index": 3}, {}], feats, names)
    with pytest.raises(InputError, match="must start with"):
        writer.add([0, 1], [{"plate": 3}, {}], feats, names)
    writer.close()
    with pytest.raises(ConfigError, match="closed"):
        writer.add([0, 1], rows, feats, names)
    with pytest.raises(ConfigError, match="shard_size"):
        ShardWriter(tmp_path / "x", make_provenance(), shard_size=0)


def test_done_mask_equals_done_indices(tmp_path):
    items = make_items(20, seed=3)
    writer = ShardWriter(tmp_path, make_provenance(), shard_size=4)
    feed(writer, items)
    writer.close()
    mask = done_mask(tmp_path, 25)
    assert mask.shape == (25,) and set(np.flatnonzero(mask).tolist()) == done_indices(tmp_path) == set(range(20))
    ok = set(np.flatnonzero(done_mask(tmp_path, 20, include_failed=False)).tolist())
    assert ok == done_indices(tmp_path, include_failed=False) == _ok(items)
    with pytest.raises(ConfigError, match="another run"):
        done_mask(tmp_path, 10)  # manifests naming inputs this run does not have
    assert not done_mask(tmp_path / "missing", 3).any()
