"""Peak memory of planning a run over a LoadData table: what ``embed_dataset`` does before the first image.

    python benchmarks/bench_listing.py --rows 100000 1000000 [--whole]

For each row count a LoadData CSV (5 channels, Gallery-like columns; the images need not exist) is
written to a temporary folder, then a fresh Python process reports its peak RSS (``ru_maxrss``) for:

- ``run``: ``pipeline.inputs.gather_inputs`` (the table streamed into the on-disk input index, ids made
  unique, the inputs' identity hashed), a done mask (``outputs.done_mask``) and one pass over the pending
  block a rank embeds (``pipeline.pending``), reading every 1000th record back from the index;
- ``streamed``: ``io.listing.iter_table_records`` alone;
- ``whole`` (``--whole``): ``collect_sources``, which holds every record (the 0.1 behaviour).

Streamed planning should stay within a few MB whatever the row count.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

CHANNELS = ["OrigDNA", "OrigER", "OrigRNA", "OrigAGP", "OrigMito"]

CHILD = """
import resource, sys, time
import numpy as np
from dino_boc.io.listing import iter_table_records
from dino_boc.io import collect_sources
from dino_boc.pipeline.inputs import gather_inputs
from dino_boc.pipeline.options import ReadOptions
from dino_boc.pipeline.pending import Pending, pending_block
path, mode = sys.argv[1], sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if mode == "run":
    inputs = gather_inputs(path, ReadOptions())
    n = len(inputs.records)
    done = np.zeros(n, dtype=bool)
    done[::7] = True  # as a resume would find them
    mine = Pending(done, *pending_block(done, 0, 1))
    assert sum(len(inputs.records[i].paths) for i in mine if i % 1000 == 1) > 0
    inputs.close()
elif mode == "streamed":
    n = sum(1 for _ in iter_table_records(path))
else:
    n = len(collect_sources(path))
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, base / 1024, peak / 1024, dt)
"""


def write_table(path: Path, rows: int) -> None:
    i = np.arange(rows)
    df = pd.DataFrame({"Metadata_Source": "source_4", "Metadata_Batch": "2021_04_26_Batch1",
                       "Metadata_Plate": [f"BR{p:08d}" for p in i // 3456], "Metadata_Well": [f"r{w:04d}" for w in i % 384],
                       "Metadata_Site": i % 9 + 1})
    for k, ch in enumerate(CHANNELS):
        df[f"FileName_{ch}"] = [f"r{w:02d}c{w % 24:02d}f{s:02d}p01-ch{k + 1}sk1fk1fl1.tiff" for w, s in zip(i % 16, i % 9)]
        df[f"PathName_{ch}"] = "s3://cellpainting-gallery/cpg0016-jump/source_4/images/2021_04_26_Batch1/images/BR1/"
    df.to_csv(path, index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--whole", action="store_true", help="also measure collect_sources (holds every record)")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"load_data_{rows}.csv"
            write_table(path, rows)
            for mode in ["run", "streamed"] + (["whole"] if args.whole else []):
                out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True,
                                     check=True).stdout.split()
                n, base, peak, dt = int(out[0]), float(out[1]), float(out[2]), float(out[3])
                results.append({"rows": rows, "mode": mode, "records": n, "rss_after_import_mb": round(base, 1),
                                "peak_rss_mb": round(peak, 1), "seconds": round(dt, 1)})
                print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
