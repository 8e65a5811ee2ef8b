"""The run's input list streamed to disk (InputIndex), the done mask and each rank's pending block."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pandas as pd
import pytest

import dino_boc
from dino_boc.distributed import shard_indices
from dino_boc.io import ImageRecord, collect_sources, read_loaddata
from dino_boc.pipeline import index as index_module
from dino_boc.pipeline.index import InputIndex
from dino_boc.pipeline.inputs import gather_inputs
from dino_boc.pipeline.options import ReadOptions
from dino_boc.pipeline.pending import Pending, pending_block

from .conftest import L
from .helpers import image, write_cyx


def _records(n: int) -> list[ImageRecord]:
    # ids repeat (every 4th input shares the id of the one before), as two tables named alike would give
    return [ImageRecord(id=f"r{i - (i % 4 == 3)}", paths=(f"/data/img{i}.tif", f"/data/img{i}_2.tif"),
                        channel_names=("DNA", "ER"), metadata={"Metadata_Site": str(i)}) for i in range(n)]


def _digest(records, masks) -> dict:
    h = hashlib.sha256()
    for r, m in zip(records, masks):
        h.update(json.dumps([r.id, list(r.paths), list(r.channel_names), m or ""]).encode() + b"\n")
    return {"count": len(records), "sha256": h.hexdigest()}


@pytest.mark.parametrize("spill", [4096, 5])  # held in memory; written to SQLite after 5 inputs
def test_index_keeps_order_ids_and_identity_in_memory_or_on_disk(monkeypatch, spill):
    monkeypatch.setattr(index_module, "SPILL", spill)
    records = _records(23)
    masks = [f"/m/{i}.tif" for i in range(23)]
    index = InputIndex.build(zip(records, masks))
    expected = collect_sources(records)  # collect_sources' rule for repeated ids: "#2", "#3", ...
    assert (index.path is None) == (spill > 23)
    assert list(index) == expected and [index[i] for i in range(23)] == expected and index[-1] == expected[-1]
    assert index[3:6] == expected[3:6] and list(index.masks) == masks and index.mask(7) == masks[7]
    assert index.identity == _digest(expected, masks)
    copy = pickle.loads(pickle.dumps(index))  # what a DataLoader worker gets
    assert list(copy) == expected and copy.masks[22] == masks[22]
    with pytest.raises(IndexError):
        index[23]
    folder = None if index.path is None else index.path.parent
    copy.close()  # a worker's copy never deletes the file
    assert folder is None or folder.is_dir()
    index.close()
    assert folder is None or not folder.exists()


def test_a_spilled_index_is_read_by_another_process(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "SPILL", 2)
    index = InputIndex.build((r, None) for r in _records(9))
    blob = tmp_path / "index.pkl"
    blob.write_bytes(pickle.dumps(index))
    code = f"import pickle; ix = pickle.load(open({str(blob)!r}, 'rb')); print(ix[8].id, len(ix), ix.masks)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [collect_sources(_records(9))[8].id, "9", "None"]
    index.close()


def test_an_index_that_cannot_be_written_is_our_error(tmp_path):
    code = textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from dino_boc.io import ImageRecord
        from dino_boc.errors import OutputError
        from dino_boc.pipeline import index
        index.SPILL = 10
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        rows = ((ImageRecord(id=str(i), paths=("/x" * 50 + str(i),)), None) for i in range(5000))
        try:
            index.InputIndex.build(rows, directory={str(tmp_path)!r})
        except OutputError as exc:
            print("OK", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.startswith("OK") and "TMPDIR" in out.stdout, out.stderr
    assert not any(tmp_path.iterdir())  # the half-written index is removed


def test_gather_streams_a_loaddata_table_with_illum_and_path_root(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "SPILL", 7)
    n = 30
    table = pd.DataFrame({"Metadata_Well": [f"A{i:02d}" for i in range(n)], "Metadata_Plate": "000123"})
    for ch in ("OrigDNA", "OrigER", "IllumDNA", "IllumER"):
        table[f"FileName_{ch}"] = [f"{ch}_{i}.tif" if ch.startswith("Orig") else f"{ch}.npy" for i in range(n)]
        table[f"PathName_{ch}"] = "images" if ch.startswith("Orig") else "illum"
    csv = tmp_path / "tables" / "load_data.csv"
    csv.parent.mkdir()
    table.to_csv(csv, index=False)
    read = ReadOptions(illum=True, path_root=str(tmp_path), channels=["OrigER", "OrigDNA"])
    inputs = gather_inputs(str(csv), read)
    try:
        expected = read_loaddata(csv, channels=["OrigER", "OrigDNA"], illum=True, path_root=tmp_path)
        got = list(inputs.records)
        assert [r.paths for r in got] == [r.paths for r in expected]
        assert got[4].paths == (str(tmp_path / "images" / "OrigER_4.tif"), str(tmp_path / "images" / "OrigDNA_4.tif"))
        assert got[4].illum == (str(tmp_path / "illum" / "IllumER.npy"), str(tmp_path / "illum" / "IllumDNA.npy"))
        assert got[29].metadata == {"Metadata_Well": "A29", "Metadata_Plate": "000123"}  # text kept as written
        assert [r.id for r in got] == [f"load_data.csv#{i}" for i in range(n)]
        assert inputs.records.path is not None  # spilled to disk
    finally:
        inputs.close()


def _loaddata_csv(path, rows: int) -> None:
    i = np.arange(rows)
    df = pd.DataFrame({"Metadata_Plate": "BR00117010", "Metadata_Well": [f"r{w:02d}" for w in i % 384]})
    for ch in ("OrigDNA", "OrigER", "OrigRNA", "OrigAGP", "OrigMito"):
        df[f"FileName_{ch}"] = [f"r{k:06d}-{ch}.tiff" for k in i]
        df[f"PathName_{ch}"] = "s3://cellpainting-gallery/cpg0016-jump/source_4/images/BR00117010/"
    df.to_csv(path, index=False)


def test_gathering_memory_does_not_grow_with_the_number_of_inputs(tmp_path):
    """Python allocations while listing 6,000 vs 24,000 LoadData rows: the peak is the same within a
    few MB (one table chunk and the first records before they go to disk), where a list would grow 4x."""
    peaks = {}
    for rows in (6_000, 24_000):
        csv = tmp_path / f"load_data_{rows}.csv"
        _loaddata_csv(csv, rows)
        tracemalloc.start()
        inputs = gather_inputs(str(csv), ReadOptions())
        peaks[rows] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        assert len(inputs.records) == rows and inputs.records[rows - 1].paths[0].endswith(f"r{rows - 1:06d}-OrigDNA.tiff")
        inputs.close()
    # what 18,000 more records would hold as a list (measured the same way): the bar the index must stay under
    tracemalloc.start()
    held = read_loaddata(tmp_path / "load_data_24000.csv")
    grown = tracemalloc.get_traced_memory()[0] / 2**20 * 18_000 / 24_000
    tracemalloc.stop()
    del held
    assert grown > 10 and abs(peaks[24_000] - peaks[6_000]) < 3, (peaks, grown)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_pending_blocks_equal_sharding_the_pending_list(world):
    rng = np.random.default_rng(world)
    for n in (0, 1, 7, 100):
        done = rng.random(n) < 0.4
        pending = [i for i in range(n) if not done[i]]
        for rank in range(world):
            mine = Pending(done, *pending_block(done, rank, world))
            expected = [pending[j] for j in shard_indices(len(pending), rank, world)]
            assert list(mine) == expected and len(mine) == len(expected)


def test_a_run_with_the_index_on_disk_and_workers_equals_one_in_memory(tmp_path, rng, model, monkeypatch):
    paths = [write_cyx(tmp_path / f"img{i:02d}.tif", image(rng, 2), ["DNA", "ER"]) for i in range(9)]
    kw = dict(model=model, n_last_blocks=L, progress=False, batch_size=4, shard_size=2)
    memory = dino_boc.embed_dataset([str(p) for p in paths], **kw)
    monkeypatch.setattr(index_module, "SPILL", 3)
    disk = dino_boc.embed_dataset([str(p) for p in paths], num_workers=2, **kw)
    pd.testing.assert_frame_equal(memory, disk)
    assert memory.attrs["provenance"]["options"]["inputs"] == disk.attrs["provenance"]["options"]["inputs"]
