"""Regenerate docs/images/profiles_map.png (docs/profiles.md) from the CPJUMP1 test table (CPU, about a minute).

Run from the repository root: ``python docs/images/make_profiles_map.py``. It runs ``dino-boc eval profiles``
and ``dino-boc eval map`` exactly as a user would and copies the figure; the summary table is printed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from dino_boc.cli import main  # noqa: E402

TABLE = Path("tests/data/jump_cpjump1/cpjump1_u2os_compound_48h_wells.csv.gz")
CONTROL = "Metadata_control_type == 'negcon'"
OUT = Path("docs/images/profiles_map.png")

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        profiles = Path(tmp) / "reprofiled.parquet"
        main(["eval", "profiles", str(TABLE), "-o", str(profiles), "--aggregate", "none", "--control", CONTROL,
              "--sphere", "ZCA-cor"])
        main(["eval", "map", str(TABLE), "-o", f"{tmp}/map", "--pert-col", "Metadata_pert_iname", "--control",
              CONTROL, "--plate-col", "Metadata_Plate", "--target-col", "Metadata_target_list", "--compare",
              str(profiles), "--name", "published", "--compare-name", "re-profiled"])
        shutil.copyfile(f"{tmp}/map/map.png", OUT)
    print(f"wrote {OUT}")
