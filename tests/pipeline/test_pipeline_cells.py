"""Single-cell mode: centroids and crops from label images, one row per cell equal to embedding the crop."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

import dino_boc
from dino_boc.errors import InputError
from dino_boc.preprocess.cells import crop_cells, object_centroids

from .conftest import L
from .helpers import feature_block, image, write_cyx

ATOL = 1e-5


def label_image(h=48, w=56):
    """Four objects: a rectangle, an L shape, one touching the top-left border, one with a large id."""
    lab = np.zeros((h, w), dtype=np.uint16)
    lab[10:20, 12:30] = 3
    lab[30:44, 5:9] = 7
    lab[40:44, 5:20] = 7
    lab[0:3, 0:4] = 1
    lab[25:28, 40:55] = 60000
    return lab


def loop_centroids(lab):
    """Independent: mean row and column of each object's pixels, one object at a time."""
    out = {}
    for v in np.unique(lab):
        if v:
            ys, xs = np.nonzero(lab == v)
            out[int(v)] = (ys.mean(), xs.mean())
    return out


def loop_crop(img, lab, obj, cy, cx, size, mask_outside):
    """Independent: pixel-by-pixel copy into a zero canvas."""
    k, h, w = img.shape
    top, left = int(np.round(cy)) - size // 2, int(np.round(cx)) - size // 2
    out = np.zeros((k, size, size), dtype=img.dtype)
    for i in range(size):
        for j in range(size):
            y, x = top + i, left + j
            if 0 <= y < h and 0 <= x < w and (not mask_outside or lab[y, x] == obj):
                out[:, i, j] = img[:, y, x]
    return out


def test_centroids_match_a_loop_over_objects():
    lab = label_image()
    ids, cents = object_centroids(lab.astype(np.int64))
    want = loop_centroids(lab)
    assert ids.tolist() == sorted(want)
    np.testing.assert_allclose(cents, [want[i] for i in ids.tolist()], rtol=0, atol=1e-12)


@pytest.mark.parametrize("mask_outside", [False, True])
def test_crops_are_centred_zero_padded_and_masked(rng, mask_outside):
    lab = label_image()
    img = image(rng, 2, 48, 56)
    cells = crop_cells(img, lab, 16, mask_outside=mask_outside)
    assert cells.crops.shape == (4, 2, 16, 16) and cells.crops.dtype == img.dtype
    for obj, (cy, cx), crop in zip(cells.labels, cells.centroids, cells.crops):
        np.testing.assert_array_equal(crop, loop_crop(img, lab, obj, cy, cx, 16, mask_outside))
    border = cells.crops[list(cells.labels).index(1)]
    assert (border[:, :6, :] == 0).all()  # the object at the top-left border: rows above the image are padding


def test_label_image_checks(rng):
    img = image(rng, 1, 16, 16)
    with pytest.raises(InputError, match="16x16"):
        crop_cells(img, np.zeros((8, 8), np.uint16), 8)
    with pytest.raises(InputError, match="negative"):
        crop_cells(img, -np.ones((16, 16), np.int32), 8)
    with pytest.raises(InputError, match="non-integer"):
        crop_cells(img, np.full((16, 16), 0.5), 8)
    assert len(crop_cells(img, np.zeros((16, 16), np.uint8), 8)) == 0


@pytest.fixture
def fields(tmp_path, rng):
    """Two fields with cellpose-style masks (``*_cp_masks.png``) in a separate folder, one without objects."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    data = {"f1": image(rng, 2, 48, 56), "f2": image(rng, 2, 48, 56), "f3": image(rng, 2, 48, 56)}
    for name, arr in data.items():
        write_cyx(tmp_path / "images" / f"{name}.tif", arr, ["DNA", "ER"])
    lab = label_image()
    iio.imwrite(tmp_path / "masks" / "f1_cp_masks.png", lab)
    tifffile.imwrite(tmp_path / "masks" / "f2_masks.tif", lab[::-1].copy())
    tifffile.imwrite(tmp_path / "masks" / "f3.tif", np.zeros_like(lab))
    return tmp_path, data, {"f1": lab, "f2": lab[::-1].copy(), "f3": np.zeros_like(lab)}


@pytest.mark.parametrize("mask_outside", [False, True])
def test_one_row_per_cell_equal_to_embedding_the_crop(fields, model, mask_outside):
    root, data, labels = fields
    df = dino_boc.embed_dataset(root / "images", model=model, n_last_blocks=L, progress=False,
                                masks=root / "masks", cell_size=16, mask_outside=mask_outside)
    meta = [c for c in df.columns if c.startswith("Metadata_")]
    assert list(df.columns[:len(meta)]) == meta  # metadata first, then features
    assert meta[-3:] == ["Metadata_cell_label", "Metadata_centroid_y", "Metadata_centroid_x"]
    assert df["Metadata_index"].tolist() == [0] * 4 + [1] * 4  # f3 has no object: no row, no error
    assert df.attrs["summary"]["n_failed"] == 0
    row = 0
    for name in ("f1", "f2"):
        want_cents = loop_centroids(labels[name])
        for obj in sorted(want_cents):
            cy, cx = want_cents[obj]
            assert df["Metadata_cell_label"][row] == obj
            assert df["Metadata_centroid_y"][row] == pytest.approx(cy) and df["Metadata_centroid_x"][row] == pytest.approx(cx)
            crop = loop_crop(data[name], labels[name], obj, cy, cx, 16, mask_outside)
            want = dino_boc.embed(crop, model=model, n_last_blocks=L)
            np.testing.assert_allclose(feature_block(df, row, ["DNA", "ER"]), want, atol=ATOL, rtol=0)
            row += 1
    opts = df.attrs["provenance"]["options"]["single_cell"]
    assert opts == {"size": 16, "mask_outside": mask_outside, "centre": "centroid"}


def test_masks_from_a_table_column_and_crop_as_cell_size(fields, model):
    root, data, labels = fields
    table = pd.DataFrame({"path": ["images/f1.tif", "images/f2.tif"],
                          "mask": ["masks/f1_cp_masks.png", "masks/f2_masks.tif"]})
    table.to_csv(root / "fields.csv", index=False)
    df = dino_boc.embed_dataset(root / "fields.csv", model=model, n_last_blocks=L, progress=False, masks="mask", crop=16)
    assert len(df) == 8 and df["Metadata_mask"][0] == "masks/f1_cp_masks.png"
    by_folder = dino_boc.embed_dataset(root / "images", model=model, n_last_blocks=L, progress=False,
                                       masks=root / "masks", cell_size=16)
    np.testing.assert_allclose(df.filter(like="_cls").to_numpy(), by_folder.filter(like="_cls").to_numpy(), atol=ATOL)


def test_an_image_without_label_image_fails_alone(fields, model):
    root, _, _ = fields
    (root / "masks" / "f2_masks.tif").unlink()
    df = dino_boc.embed_dataset(root / "images", model=model, n_last_blocks=L, progress=False,
                                masks=root / "masks", cell_size=16)
    assert set(df["Metadata_index"]) == {0}
    errors = df.attrs["errors"]
    assert [e["index"] for e in errors] == [1] and "no label image" in errors[0]["reason"]


def test_an_image_with_more_channels_than_the_batch_size_equals_embedding_it_whole(tmp_path, model, rng):
    data = image(rng, 20, 32, 32)
    write_cyx(tmp_path / "wide.tif", data)
    df = dino_boc.embed_dataset(tmp_path / "wide.tif", model=model, n_last_blocks=L, progress=False, batch_size=4)
    want = dino_boc.embed(data, model=model, n_last_blocks=L)  # all 20 channels in one forward pass
    np.testing.assert_allclose(feature_block(df, 0, 20), want, atol=ATOL, rtol=0)


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_a_field_with_thousands_of_objects_streams_its_crops(tmp_path, rng):
    """4096 objects of 48-pixel crops are 72 MiB of float32 crops at once; the input as the DataLoader
    hands it over, and going through all its crops one at a time, stays far below (measured in a
    subprocess). Crops are compared with crop_cells' own."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    field = image(rng, 2, 512, 512)
    write_cyx(tmp_path / "img" / "f.tif", field)
    lab = ((np.arange(512)[:, None] // 8) * 64 + np.arange(512)[None, :] // 8 + 1).astype(np.uint16)
    tifffile.imwrite(tmp_path / "lab" / "f.tif", lab)
    eager_mb = 4096 * 2 * 48 * 48 * 4 / 2**20
    code = textwrap.dedent(f"""
        import numpy as np
        from dino_boc.pipeline import EmbedOptions, ReadOptions
        from dino_boc.pipeline.dataset import InputDataset
        from dino_boc.pipeline.inputs import gather_inputs
        from dino_boc.preprocess import PreprocessConfig

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        inputs = gather_inputs({str(tmp_path / "img")!r}, ReadOptions(), {str(tmp_path / "lab")!r})
        ds = InputDataset(inputs.records, preprocess=PreprocessConfig(resize=None, crop=None), patch_size=8,
                          read=ReadOptions(), embed=EmbedOptions(cell_size=48), masks=inputs.masks)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS")
        item = ds[0]
        assert tuple(item.tensors.shape) == (4096, 2, 48, 48) and len(item.rows) == 4096
        total = sum(float(item.tensors[j][0, 24, 24]) for j in range(len(item.rows)))
        print(status("VmHWM") - before)
        np.save({str(tmp_path / "some.npy")!r}, np.stack([item.tensors[j].numpy() for j in (0, 100, 4095)]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    grown = float(out.stdout.strip().splitlines()[-1])
    assert grown < eager_mb / 3, (grown, eager_mb)
    from dino_boc.pipeline.dataset import prepare_field
    from dino_boc.preprocess import PreprocessConfig

    cells = crop_cells(field, lab, 48)
    want = [prepare_field(cells.crops[j], PreprocessConfig(resize=None, crop=None), 8, fit=False).numpy()
            for j in (0, 100, 4095)]
    np.testing.assert_allclose(np.load(tmp_path / "some.npy"), np.stack(want), atol=1e-6)
