"""Hostile files: headers declaring huge images, Z-stacks over the budget, missing OME planes, wrong
suffixes, FIFOs. Memory is measured in a subprocess; pixels are compared with tifffile's own reads."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tifffile

from dino_boc.errors import ImageReadError, ResourceLimitError
from dino_boc.io import read_image


def tiff_bomb(path, side=100352):
    """A ~1 KB tiled deflate TIFF whose header declares side x side pixels (10^10 for the default side)."""
    tifffile.imwrite(path, np.zeros((1024, 1024), np.uint8), tile=(1024, 1024), compression="zlib")
    with tifffile.TiffFile(path, mode="r+b") as f:
        f.pages[0].tags["ImageWidth"].overwrite(side)
        f.pages[0].tags["ImageLength"].overwrite(side)
    return path


def png_bomb(path, side=100000):
    """A PNG header (IHDR) declaring side x side RGB pixels, followed by a tiny IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def npy_bomb(path):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (3, 60000, 60000)})
        f.write(b"\x00" * 64)
    return path


@pytest.mark.parametrize("make", [tiff_bomb, png_bomb, npy_bomb], ids=["tiff", "png", "npy"])
def test_a_header_declaring_a_huge_image_is_refused_before_decoding(tmp_path, make):
    path = make(tmp_path / {"tiff_bomb": "b.tif", "png_bomb": "b.png", "npy_bomb": "b.npy"}[make.__name__])
    assert path.stat().st_size < 5000
    with pytest.raises(ResourceLimitError, match="max_pixels=536,870,912.*--max-pixels"):
        read_image(path)


def zstack(path, z=6, c=2, h=32, w=48, seed=0, compression=None):
    data = np.random.default_rng(seed).integers(0, 60000, size=(z, c, h, w)).astype(np.uint16)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX"}, compression=compression)
    return data


def _peaks(warm: str, snippets: list[str]) -> list[float]:
    """Run each snippet in one fresh interpreter (after reading ``warm``, so codecs are imported); the
    growth of peak RSS (MB) during each, the kernel's high-water mark VmHWM being reset through
    /proc/self/clear_refs before it."""
    script = textwrap.dedent(f"""
        import sys
        from dino_boc.io import read_image
        from dino_boc.errors import DinoBocError

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024

        def reset():
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return status("VmRSS")

        read_image({warm!r})
    """)
    for code in snippets:
        script += "\nbefore = reset()\n" + code + "\nprint(status('VmHWM') - before)\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return [float(x) for x in out.stdout.strip().splitlines()[-len(snippets):]]


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_bombs_and_stacks_over_the_budget_keep_memory_bounded(tmp_path):
    """Peak memory, measured: a 1 KB file declaring 9.4 GiB costs nothing; a 32-plane stack (36 MiB
    decoded) over the budget costs about one plane, against the whole stack read without a budget."""
    bomb = tiff_bomb(tmp_path / "b.tif")
    stack = tmp_path / "s.tif"
    zstack(stack, z=32, c=1, h=768, w=768, compression="zlib")
    zstack(tmp_path / "warm.tif", z=2, c=1, h=8, w=8, compression="zlib")
    read = f"out, _ = read_image({str(stack)!r}, max_pixels=%s)\nassert out.shape == (1, 768, 768)"
    bomb_mb, bounded_mb, whole_mb = _peaks(str(tmp_path / "warm.tif"), [
        f"try:\n    read_image({str(bomb)!r})\n    sys.exit('read a bomb')\nexcept DinoBocError:\n    pass",
        read % (4 * 768 * 768),
        read % "None",
    ])
    assert bomb_mb < 10 and bounded_mb < 12 and whole_mb > 34, (bomb_mb, bounded_mb, whole_mb)


@pytest.mark.parametrize("z", ["max", "mean", 4, -1])
def test_a_stack_over_the_budget_is_reduced_plane_by_plane(tmp_path, z):
    data = zstack(tmp_path / "s.tif")
    whole_budget, _ = read_image(tmp_path / "s.tif", z=z, max_pixels=None)
    small, _ = read_image(tmp_path / "s.tif", z=z, max_pixels=3 * 32 * 48)  # the result + one plane
    raw = tifffile.imread(tmp_path / "s.tif")
    expected = {"max": raw.max(axis=0), "mean": raw.astype(np.float64).mean(axis=0).astype(np.float32)}.get(z)
    expected = raw[z] if expected is None else expected
    np.testing.assert_allclose(small, expected, rtol=1e-6)
    assert small.dtype == whole_budget.dtype and small.shape == (2, 32, 48)
    np.testing.assert_allclose(small, whole_budget, rtol=1e-6)
    with pytest.raises(ResourceLimitError, match="reducing Z/T plane by plane"):
        read_image(tmp_path / "s.tif", z=z, max_pixels=2 * 32 * 48)  # the result alone fills it


def test_a_time_series_over_the_budget_decodes_only_its_time_point(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, size=(5, 3, 2, 16, 16)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "t.tif", data, imagej=True, metadata={"axes": "TZCYX"})
    out, _ = read_image(tmp_path / "t.tif", t=3, z="max", max_pixels=3 * 16 * 16)
    np.testing.assert_array_equal(out, tifffile.imread(tmp_path / "t.tif")[3].max(axis=0))


def test_an_ome_tiff_whose_xml_promises_a_missing_plane_fails(tmp_path):
    data = np.arange(2 * 3 * 16 * 16, dtype=np.uint16).reshape(2, 3, 16, 16)
    tifffile.imwrite(tmp_path / "ok.ome.tif", data, ome=True, metadata={"axes": "ZCYX"})
    with tifffile.TiffFile(tmp_path / "ok.ome.tif") as tif:
        xml = tif.ome_metadata
    assert 'SizeZ="2"' in xml
    tifffile.imwrite(tmp_path / "cut.ome.tif", data.reshape(6, 16, 16), description=xml.replace('SizeZ="2"', 'SizeZ="3"'),
                     metadata=None)
    np.testing.assert_array_equal(read_image(tmp_path / "ok.ome.tif", z=1)[0], data[1])
    with pytest.raises(ImageReadError, match="describes 9 planes but 3 are missing"):
        read_image(tmp_path / "cut.ome.tif")


def test_a_tiff_named_png_is_read_as_tiff(tmp_path):
    data = np.random.default_rng(2).integers(0, 4000, size=(2, 16, 24)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "two.png", data, metadata={"axes": "CYX"}, photometric="minisblack")
    out, _ = read_image(tmp_path / "two.png")
    np.testing.assert_array_equal(out, tifffile.imread(tmp_path / "two.png"))
    assert out.shape == (2, 16, 24)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_tif_is_refused_without_blocking(tmp_path, fifo):
    pipe = fifo(tmp_path / "pipe.tif")
    with pytest.raises(ImageReadError, match="FIFO \\(named pipe\\), not a regular file"):
        read_image(tmp_path / "pipe.tif")
    assert not pipe.opened  # refused from its file type, never opened (which would block)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")
def test_permission_denied_is_not_called_corrupt(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint8))
    (tmp_path / "a.tif").chmod(0)
    with pytest.raises(ImageReadError, match="permission denied") as info:
        read_image(tmp_path / "a.tif")
    assert "corrupt" not in str(info.value).replace("not known to be corrupt", "")


def test_pillows_own_pixel_limit_is_a_resource_limit_not_corruption(tmp_path):
    path = png_bomb(tmp_path / "b.png", side=15000)  # 225 M pixels: over Pillow's limit, budget switched off
    with pytest.raises(ResourceLimitError, match="refuses to decode"):
        read_image(path, max_pixels=None)


def test_an_ome_zarr_declaring_a_huge_level_is_refused_before_loading(tmp_path):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "big.ome.zarr"), mode="w")
    shape = (5, 2, 30000, 30000)  # TCYX: 9 G values in all, 1.8 G per time point, no chunk written
    if hasattr(group, "create_array"):
        group.create_array("s0", shape=shape, chunks=(1, 1, 1024, 1024), dtype="uint16")
    else:  # zarr 2
        group.create_dataset("s0", shape=shape, chunks=(1, 1, 1024, 1024), dtype="uint16")
    axes = [{"name": a, "type": k} for a, k in (("t", "time"), ("c", "channel"), ("y", "space"), ("x", "space"))]
    group.attrs.update({"multiscales": [{"version": "0.4", "axes": axes, "datasets": [{"path": "s0"}]}]})
    with pytest.raises(ResourceLimitError, match=r"\(2, 30000, 30000\).*for loading"):  # one time point is loaded
        read_image(tmp_path / "big.ome.zarr", t=3)
    small = np.arange(2 * 2 * 16 * 16, dtype=np.uint16).reshape(2, 2, 16, 16)
    group["s0"] = small  # a real image with the same metadata reads as before
    np.testing.assert_array_equal(read_image(tmp_path / "big.ome.zarr", t=1)[0], small[1])
