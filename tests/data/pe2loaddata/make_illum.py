"""Regenerate the SYNTHETIC illumination functions and load_data_with_illum.csv of this folder.

Run from tests/data/pe2loaddata/. The columns are appended the way pe2loaddata's append_illum_cols.py
does (channels sorted, Orig removed: FileName_Illum<Ch>, PathName_Illum<Ch>; file <plate>_Illum<Ch>.npy).
The functions are smooth float64 (H, W) arrays >= 1, as CellProfiler's CorrectIlluminationCalculate
writes them (rescaled so that the robust minimum is 1); their values are made up.
"""

import csv

import numpy as np

PLATE = "BR00121482"
ROOT = "tests/data/Version1"
CHANNELS = ["OrigAGP", "OrigBrightfield", "OrigDNA", "OrigER", "OrigMito", "OrigRNA"]  # sorted, as pe2loaddata

yy, xx = np.mgrid[0:64, 0:72]
for i, ch in enumerate(CHANNELS):
    r2 = ((yy - 32.0) / 64) ** 2 + ((xx - 36.0) / 72) ** 2
    illum = 1.0 + (0.5 + 0.1 * i) * (0.5 - r2) / 0.5  # brightest in the centre, 1 at the far corners
    np.save(f"{ROOT}/illum/{PLATE}_Illum{ch.replace('Orig', '')}.npy", illum)

with open(f"{ROOT}/load_data_version1.csv", newline="") as f:
    rows = list(csv.reader(f))
header = sum([[f"{p}_Illum{c.replace('Orig', '')}" for p in ("FileName", "PathName")] for c in CHANNELS], [])
extra = sum([[f"{PLATE}_Illum{c.replace('Orig', '')}.npy", f"{ROOT}/illum/"] for c in CHANNELS], [])
with open(f"{ROOT}/load_data_with_illum.csv", "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(rows[0] + header)
    for row in rows[1:]:
        w.writerow(row + extra)
