"""The public CHAMMI release (Zenodo record 7988357): metadata tables and "tape" images.

Layout of the unpacked release (``root``)::

    morphem70k_v2.csv          file_path, train_test_split, label, chunk, channel_width (all sources)
    Allen/enriched_meta.csv    WTC-11, 3 channels   (Task_one, Task_two; Structure, ...)
    HPA/enriched_meta.csv      HPA, 4 channels      (Task_one..Task_three; cell_type, ...)
    CP/enriched_meta.csv       Cell Painting, 5 ch. (Task_one..Task_four; Plate, source, ...)
    Allen/..., HPA/..., CP/... the images, ``file_path`` relative to ``root``

Each image stores its K channels side by side in one 2-D plane of shape (H, K·channel_width); the
benchmark unfolds it with ``reshape((H, channel_width, -1), order="F")`` (MorphEm ``fold_channels``), i.e.
channel c is the column block ``[c·channel_width, (c+1)·channel_width)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dino_boc.errors import InputError
from dino_boc.io.formats import reading

__all__ = [
    "SOURCES",
    "ChammiSource",
    "METADATA_FILE",
    "SOURCE_COLUMN",
    "load_chammi",
    "chammi_sources",
    "read_tape_image",
    "ChammiImages",
]

logger = logging.getLogger(__name__)

METADATA_FILE = "morphem70k_v2.csv"
ENRICHED_FILE = "enriched_meta.csv"
#: Column that :func:`load_chammi` adds: the source folder of each row ("Allen", "HPA" or "CP").
SOURCE_COLUMN = "chammi_source"


@dataclass(frozen=True)
class ChammiSource:
    """One CHAMMI data source and its tasks, as the benchmark defines them.

    Attributes:
        folder: folder name in the release (and first component of ``file_path``).
        name: name used in the paper's tables and in result columns.
        n_channels: K of every image of the source.
        tasks: the ``Task_*`` flag columns scored for this source, in table order.
        leave_out: (task, group column) scored leave-one-group-out, or None.
        channels: the channel names in image order (as CHAMMI-75's benchmark code lists them for its 75-dataset
            models; they matter only for fixed-channel models, which need all of theirs).
    """

    folder: str
    name: str
    n_channels: int
    tasks: tuple[str, ...]
    leave_out: tuple[str, str] | None = None
    channels: tuple[str, ...] = ()


#: Sources in the order of the concatenated metadata (and of ``run_benchmark`` in MorphEm).
SOURCES: tuple[ChammiSource, ...] = (
    ChammiSource("Allen", "WTC", 3, ("Task_one", "Task_two"), channels=("nucleus", "membrane", "protein")),
    ChammiSource("HPA", "HPA", 4, ("Task_one", "Task_two", "Task_three"), ("Task_three", "cell_type"),
                 channels=("microtubules", "protein", "nucleus", "ER")),
    ChammiSource("CP", "CP", 5, ("Task_one", "Task_two", "Task_three", "Task_four"), ("Task_four", "Plate"),
                 channels=("DNA", "ER", "RNA", "AGP", "Mito")),
)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(
            f"{path} does not exist; expected the unpacked CHAMMI release (Zenodo record 7988357) with "
            f"{METADATA_FILE} and Allen/, HPA/, CP/ each holding {ENRICHED_FILE} — pass its folder as root"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); expected the CHAMMI metadata table — re-download the release")
    try:
        with open(path, "rb"):
            pass
    except PermissionError as exc:  # not a corrupt file
        raise InputError(f"cannot open {path}: permission denied; fix its permissions") from exc
    with reading(path, "pandas"):
        table = pd.read_csv(path, low_memory=False)
    if table.empty:
        raise InputError(f"{path} has a header but no rows; expected one row per CHAMMI image — re-download the "
                         "release")
    return table


def load_chammi(root: str | Path) -> pd.DataFrame:
    """Read the CHAMMI metadata: the Allen, HPA and CP ``enriched_meta.csv`` rows, concatenated in that order.

    Rows keep the columns of their file (columns a source lacks are NaN). ``channel_width`` is taken from
    ``morphem70k_v2.csv`` (joined on ``file_path``) for rows whose ``enriched_meta.csv`` lacks it; a
    disagreement between the two files is logged. One column is added: ``chammi_source`` (the folder).

    Args:
        root: folder of the unpacked release.

    Returns:
        DataFrame with one row per image, index 0..N-1, aligned with the features :func:`chammi_knn` expects.

    Raises:
        InputError: a file is missing, a required column is absent, or a row has no channel width.
    """
    root = Path(root)
    index = _read_csv(root / METADATA_FILE)
    for col in ("file_path", "channel_width"):
        if col not in index.columns:
            raise InputError(f"{root / METADATA_FILE} has no {col!r} column; expected {METADATA_FILE} from CHAMMI")
    widths = index.drop_duplicates("file_path").set_index("file_path")["channel_width"]
    frames = []
    for src in SOURCES:
        df = _read_csv(root / src.folder / ENRICHED_FILE)
        missing = [c for c in ("file_path", "train_test_split", "Label", *src.tasks) if c not in df.columns]
        if src.leave_out is not None and src.leave_out[1] not in df.columns:
            missing.append(src.leave_out[1])
        if missing:
            raise InputError(
                f"{root / src.folder / ENRICHED_FILE} lacks columns {missing}; expected the benchmark's "
                "enriched metadata — re-download the CHAMMI release"
            )
        from_index = df["file_path"].map(widths)
        if "channel_width" not in df.columns:
            df["channel_width"] = from_index
        else:
            both = df["channel_width"].notna() & from_index.notna()
            n_diff = int((df.loc[both, "channel_width"] != from_index[both]).sum())
            if n_diff:
                logger.warning("%s: %d rows have a channel_width different from %s; using %s",
                               src.folder, n_diff, METADATA_FILE, ENRICHED_FILE)
            df["channel_width"] = df["channel_width"].fillna(from_index)
        n_unknown = int(df["channel_width"].isna().sum())
        if n_unknown:
            raise InputError(
                f"{n_unknown} {src.folder} rows have no channel_width in {ENRICHED_FILE} nor in {METADATA_FILE}; "
                "expected one per image — check that both files come from the same release"
            )
        df["channel_width"] = df["channel_width"].astype(np.int64)
        if SOURCE_COLUMN in df.columns:
            raise InputError(f"{root / src.folder / ENRICHED_FILE} already has a {SOURCE_COLUMN!r} column")
        df[SOURCE_COLUMN] = src.folder
        frames.append(df)
        logger.info("CHAMMI %s: %d images", src.folder, len(df))
    return pd.concat(frames, ignore_index=True)


def chammi_sources(metadata: pd.DataFrame) -> np.ndarray:
    """The source folder ("Allen", "HPA", "CP") of each metadata row.

    Uses the ``chammi_source`` column when present, else the first component of ``file_path`` (accepting
    ``Metadata_``-prefixed names as the dataset pipeline writes them).

    Raises:
        InputError: neither column is present, or a row belongs to no known source.
    """
    for col in (SOURCE_COLUMN, "Metadata_" + SOURCE_COLUMN):
        if col in metadata.columns:
            out = metadata[col].astype(str).to_numpy()
            break
    else:
        for col in ("file_path", "Metadata_file_path"):
            if col in metadata.columns:
                out = metadata[col].astype(str).str.replace("\\", "/").str.split("/").str[0].to_numpy()
                break
        else:
            raise InputError(
                f"metadata has neither {SOURCE_COLUMN!r} nor 'file_path'; expected the rows of the CHAMMI "
                "enriched_meta.csv files (load them with dino_boc.eval.load_chammi)"
            )
    known = {s.folder for s in SOURCES}
    bad = sorted(set(out) - known)
    if bad:
        raise InputError(f"metadata rows of unknown source {bad[:5]}; expected file paths under {sorted(known)}")
    return out


def read_tape_image(path: str | Path, channel_width: int) -> np.ndarray:
    """Read one CHAMMI image and unfold its channels (through :func:`dino_boc.io.read_image`).

    Args:
        path: a PNG or (OME-)TIFF file holding one 2-D plane of shape (H, K·channel_width).
        channel_width: W, the width of one channel.

    Returns:
        Array (K, H, W) of the file's dtype; channel c is the column block ``[c·W, (c+1)·W)``.

    Raises:
        ImageReadError: the file is missing or unreadable.
        InputError: it is not one 2-D plane, or its width is not a multiple of ``channel_width``.
    """
    from dino_boc.io import read_image

    array, _ = read_image(path, channel_width=int(channel_width))
    return array


class ChammiImages(Sequence):
    """The images of CHAMMI metadata rows, read lazily: ``images[i]`` is an array (K, H, W).

    Args:
        root: folder of the release.
        metadata: rows with ``file_path`` and ``channel_width`` (e.g. from :func:`load_chammi`).
    """

    def __init__(self, root: str | Path, metadata: pd.DataFrame):
        self.root = Path(root)
        self.paths = metadata["file_path"].astype(str).tolist()
        self.widths = metadata["channel_width"].astype(np.int64).tolist()
        self.n_channels = {s.folder: s.n_channels for s in SOURCES}
        self.sources = chammi_sources(metadata)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        image = read_tape_image(self.root / self.paths[i], self.widths[i])
        expected = self.n_channels[self.sources[i]]
        if image.shape[0] != expected:
            raise InputError(
                f"{self.paths[i]} unfolds to {image.shape[0]} channels; expected {expected} for "
                f"{self.sources[i]} — check its channel_width ({self.widths[i]})"
            )
        return image
