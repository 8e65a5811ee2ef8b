"""``embed_dataset``: embed a whole dataset into a feature table, with workers, shards, resume and torchrun.

One run: list the inputs (every rank the same list) -> rank 0 works out what an earlier run already did
(``resume``) -> each rank takes a contiguous block of the pending inputs -> DataLoader workers read and
pre-process while the main process groups images by shape and runs the model -> rows go to atomic
shards -> rank 0 merges the shards in input order into the output, and removes the shards.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import pandas

import numpy as np
import torch

from dino_boc import distributed as dist
from dino_boc.engine import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, resolve_preprocess, run_tensors
from dino_boc.errors import ConfigError, DinoBocError, InputError, OutputError
from dino_boc.features import Embedding, flatten, model_feature_names
from dino_boc.io.budget import DEFAULT_MAX_PIXELS
from dino_boc.io.fs import run_storage_options
from dino_boc.io.fs import storage_options as using_storage_options
from dino_boc.models.base import EmbeddingModel
from dino_boc.io.axes import DEFAULT_Z, PositionChoice, ZReduction
from dino_boc.io.illum import ILLUMINATION
from dino_boc.outputs import Provenance, ShardWriter, done_mask, finalize, read_manifests, read_provenance
from dino_boc.io.fs import is_url
from dino_boc.outputs.guard import OutputLock, check_output
from dino_boc.outputs.shards import DEFAULT_SHARD_SIZE, ShardDir, drop_bad_shards, remove_shards
from dino_boc.outputs.store import parent_store
from dino_boc.outputs.writers import output_format
from dino_boc.pipeline.batching import Finished, ShapeBatcher
from dino_boc.pipeline.dataset import Failed, InputDataset, identity_collate
from dino_boc.pipeline.inputs import RunInputs, gather_inputs, inputs_identity
from dino_boc.pipeline.pending import Pending, pending_block
from dino_boc.pipeline.options import DEFAULT_MAX_TOKENS, FIT_TO_PATCH, EmbedOptions, ReadOptions, RunOptions, channel_list
from dino_boc.models.config import ChannelPool
from dino_boc.precision import DEFAULT_PRECISION, Precision, resolve_device, resolve_precision
from dino_boc.preprocess import PreprocessConfig
from dino_boc.preprocess.config import Normalize
from dino_boc.weights.resolve import as_model

__all__ = ["embed_dataset", "run_dataset", "FailedInputsError", "DEFAULT_MODEL", "DEFAULT_CELL_SIZE"]

logger = logging.getLogger(__name__)

DEFAULT_CELL_SIZE = 96


class FailedInputsError(InputError):
    """``strict=True`` and some inputs failed; ``summary`` is the run's summary (the output was written)."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


def embed_dataset(
    source: Any,
    output: str | os.PathLike | None = None,
    *,
    model: EmbeddingModel | str = DEFAULT_MODEL,
    channels: Sequence[int | str] | str | None = None,
    dims: str | None = None,
    z: ZReduction = DEFAULT_Z,
    t: int = 0,
    level: int = 0,
    channel_width: int | None = None,
    channel_names: Sequence[str] | str | None = None,
    illum: bool = False,
    path_root: str | os.PathLike | None = None,
    position: PositionChoice = 0,
    pattern: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    storage_options: Mapping[str, Any] | None = None,
    n_last_blocks: int | None = None,
    avgpool: bool | None = None,
    channel_pool: ChannelPool | None = None,
    resize: int | None = None,
    crop: int | None = None,
    normalize: Normalize | None = None,
    tile: int | None = None,
    masks: Any = None,
    cell_size: int | None = None,
    mask_outside: bool = False,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    strict: bool = False,
    keep_shards: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    device: str | None = None,
    precision: Precision = DEFAULT_PRECISION,
    progress: bool = True,
) -> "dict[str, Any] | pandas.DataFrame | None":
    """Embed every image of a dataset: one feature row per image (or per cell), written as it goes.

    Every bad input (unreadable, truncated, wrong axes, NaN, too small, missing channel file, unknown
    channel name, ...) is skipped and listed with its reason in ``<output>.errors.csv``; the run
    goes on. Rows are committed in shards (``<output>.shards/``), so an interrupted run continues with
    ``resume=True`` and gives the same table. An existing output is never replaced unless
    ``overwrite=True``; ``<output>.lock`` keeps a second run from writing the same local output at once.
    The output may be an object-store URL (``s3://bucket/run/features.parquet``): the shards and their
    manifests are then written to the bucket as the run goes (a crash never leaves a shard a resume
    trusts, see docs/outputs.md), and the table is uploaded last; a URL has no lock, so run one writer
    per output URL. Under ``torchrun`` every process embeds its own block of inputs; rank 0 merges them
    in input order.

    Memory does not grow with the number of inputs: tables are read in chunks and listings a page or a
    folder at a time into the run's input index (past 4,096 inputs a SQLite file in ``$TMPDIR``, under
    1 KB per input, deleted at the end; :mod:`dino_boc.pipeline.index`), and a resume finds what is
    done as one bit per input.

    Whole fields (the default): with no ``crop``, the full image (after ``resize``) is embedded, thanks
    to position-embedding interpolation; a size that is not a multiple of the patch (16) is centre-
    cropped to the largest multiple (at most 15 pixels per axis; provenance ``options.fit_to_patch``).
    For very large fields use ``tile`` (or ``resize``/``crop``).

    Args:
        source: a folder, an image file, a glob (``"plates/**/*.tif"``), a CSV/Parquet table with a ``path``
            column (other columns become ``Metadata_*``), a CellProfiler LoadData CSV, an
            :class:`~dino_boc.io.ImageRecord`, or a list of these (see :func:`dino_boc.io.collect_sources`).
        output: ``.parquet``, ``.h5ad`` or ``.npy`` path or URL (``s3://``, ``gs://``, with the storage options of
            :mod:`dino_boc.io.fs`); None returns the table instead.
        model: a loaded model or a name/path for :func:`dino_boc.load_model`.
        channels: channels to keep, in order: indices or names (``["DNA", "RNA"]``, ``"0,2"``).
        dims: axes of the files when their metadata is missing or wrong, e.g. ``"CYX"``
            (see :func:`dino_boc.io.read_image`).
        z: Z-stack reduction: ``"max"`` projection (default), ``"mean"`` or a plane index.
        t: time point of a time series.
        level: resolution level of pyramidal files (0 = full resolution).
        channel_width: CHAMMI tapes: width of one channel in the strip.
        channel_names: names for the channels kept, in order (``"DNA,ER,RNA"`` or a list): they replace
            the file's names (ImageJ slice labels, ``ch0``...) and name the feature columns.
        illum: LoadData tables: divide each ``Orig<Ch>`` image by its ``FileName_Illum<Ch>`` function as
            CellProfiler's CorrectIlluminationApply does (recorded in provenance ``options.illumination``).
            Without it, ``Illum`` columns are ignored (never embedded as channels).
        path_root: LoadData tables: the folder relative ``PathName_`` values start at (the folder
            pe2loaddata or CellProfiler ran in); tried before the table's folder and the working directory.
        position: stage position of multi-position files (Micro-Manager, multi-image OME-TIFF), or
            ``"each"``: one row per position, with ``Metadata_Position``.
        pattern: per-channel files (one 2-D file per channel): group them into multi-channel images by a
            vendor preset (``"cellomics"``, ``"imagexpress"``, ``"phenix"``, ``"operetta"``, ``"incucyte"``)
            or a regular expression with named groups, one of them ``channel`` (docs/inputs.md).
        max_pixels: most values one read may decode at once, checked from each file's header before
            decoding; a file over it is an errors-file row (TIFF Z-stacks are reduced plane by plane to
            fit). None: no limit.
        storage_options: fsspec options for ``s3://``/``gs://`` inputs (``{"anon": True}`` for public
            buckets, ``{"endpoint_url": ...}``, credentials): one set for the whole run (on top of those of
            an enclosing :func:`dino_boc.io.fs.storage_options` block), used by every read, in DataLoader
            workers too; never written to the output, provenance, errors file or logs.
        n_last_blocks: L, CLS tokens of the last L blocks (docs/features.md); None: the model's default.
        avgpool: append the per-channel mean of the last block's patch tokens; None: the model's default.
        channel_pool: ``"concat"`` per-channel blocks, or ``"mean"`` over channels; None: the model's default.
        resize: shorter side after resizing (None: the model's default; 0: none).
        crop: centre-crop side (None: the model's default, else the whole field; 0: none).
        normalize: ``"self"``, ``"percentile"``, ``"none"``, ... (:data:`~dino_boc.preprocess.config.Normalize`;
            None: the model's default).
        tile: embed a grid of ``tile x tile`` tiles covering each field, averaging their features per
            channel (one row per image).
        masks: single-cell mode: label images (a folder, glob or list, matched to the images by file
            stem: ``A01.tif`` <- ``A01.tif``/``A01_masks.tif``/``A01_cp_masks.png``), or the name of a
            column of the input table holding each row's label image. One row per object.
        cell_size: single-cell crop side S (default: ``crop`` if given, else 96); the crop is centred on
            the object's centroid and zero-padded at the borders.
        mask_outside: single-cell mode: zero the pixels outside the object.
        max_tokens: whole fields: most patch tokens per channel (after resize/crop); a larger field is
            an errors-file row suggesting ``tile``/``resize`` (above 4096 tokens, e.g. a 2048² field, a
            run without ``resize``/``crop`` warns once with the count). None: no limit.
        batch_size: channel-images per forward pass (lower it on out-of-memory errors).
        num_workers: DataLoader processes reading files while the model runs (e.g. 4-8 on a GPU node).
        resume: continue the shards of an interrupted run with the same output, inputs and settings
            (a resume whose inputs or settings differ from the shards' or the finished output's is refused).
        overwrite: replace an existing output (and the shards of an earlier run of it).
        strict: raise :class:`FailedInputsError` after writing the output if any input failed.
        keep_shards: keep ``<output>.shards/`` (a folder, or objects under the URL prefix) after a successful run.
        shard_size: rows per shard file.
        device: ``"cuda"``, ``"cpu"``, ...; None: this rank's GPU if any, else CPU.
        precision: ``"auto"`` (fp16 autocast on CUDA; bf16 on CPUs with native bf16, AVX512-BF16 or AMX;
            fp32 elsewhere), ``"fp32"``, ``"fp16"`` (CUDA only), ``"bf16"``; the resolved one is recorded in
            the provenance (``options.precision``).
        progress: show a progress bar (images/s and time left).

    Returns:
        The summary dict of :func:`dino_boc.outputs.finalize` when ``output`` is given
            (``n_ok``, ``n_failed``, ``by_reason``, ``errors_file``, ...), else a ``pandas.DataFrame``
            (``Metadata_*`` columns then features, with ``df.attrs["summary"]``, ``df.attrs["errors"]``
            and ``df.attrs["provenance"]``); None on ranks other than 0 under torchrun.

    Raises:
        ConfigError: bad settings, an output folder holding another run's shards (pass ``resume``), a
            resume whose inputs or settings differ from the earlier run's.
        OutputError: an existing output without ``overwrite``/``resume``, an output that is a folder or in
            a read-only folder, another run writing it; a full disk while writing (shards are kept).
        InputError: no inputs found; :class:`FailedInputsError` with ``strict``.
        ModelNotFoundError, WeightsError: the model cannot be loaded.

    Example:
        >>> dino_boc.embed_dataset("plates/", "features.parquet", model="dino-boc-vitl16", num_workers=4)
        >>> cells = dino_boc.embed_dataset("fields/", masks="masks/", cell_size=96)
    """
    read = ReadOptions(channels=channel_list(channels), dims=dims, z=z, t=t, level=level, channel_width=channel_width,
                       channel_names=channel_list(channel_names), illum=illum,
                       path_root=None if path_root is None else str(path_root),
                       position=position, pattern=pattern, max_pixels=max_pixels, storage_options=storage_options)
    embed = EmbedOptions(n_last_blocks=n_last_blocks, avgpool=avgpool, channel_pool=channel_pool, tile=tile,
                         cell_size=cell_size, mask_outside=mask_outside, max_tokens=max_tokens)
    run = RunOptions(batch_size=batch_size, num_workers=num_workers, resume=resume, overwrite=overwrite, strict=strict,
                     keep_shards=keep_shards, shard_size=shard_size, device=device, precision=precision,
                     progress=progress)
    return run_dataset(source, output, model=model, read=read, embed=embed, run=run,
                       resize=resize, crop=crop, normalize=normalize, masks=masks)


def run_dataset(
    source: Any,
    output: str | os.PathLike | None,
    *,
    model: EmbeddingModel | str,
    read: ReadOptions,
    embed: EmbedOptions,
    run: RunOptions,
    resize: int | None = None,
    crop: int | None = None,
    normalize: str | None = None,
    masks: Any = None,
):
    """:func:`embed_dataset` with its settings grouped in dataclasses (same behaviour and return value)."""
    if output is not None:
        output_format(output)  # an unknown suffix fails before any work
        check_output(output, overwrite=run.overwrite, resume=run.resume)  # so does an output that cannot be written
    if embed.tile is not None and masks is not None:
        raise ConfigError("tile= and masks= cannot be combined: choose tiles of whole fields or single-cell crops")
    read = replace(read, storage_options=run_storage_options(read.storage_options))  # the run's one set
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    rank, world, local = dist.init_distributed()
    try:
        with using_storage_options(read.storage_options):  # listings here; workers get them in ``read``
            return _run(source, output, model=model, read=read, embed=embed, run=run, resize=resize, crop=crop,
                        normalize=normalize, masks=masks, rank=rank, world=world, local=local)
    finally:
        if owns_group:
            dist.cleanup()


def _run(source, output, *, model, read, embed, run, resize, crop, normalize, masks, rank, world, local):
    device = resolve_device(run.device, local_rank=local)
    model = _load_model(model, device, explicit=run.device is not None or world > 1)
    device = next(model.parameters()).device
    embed = replace(embed, **embed.resolve(model.features).to_dict())  # None: the model's default
    cfg, embed = _geometry(model, resize, crop, normalize, embed, cells=masks is not None)
    if embed.n_last_blocks > model.config.depth:
        raise ConfigError(f"n_last_blocks={embed.n_last_blocks} but the model has {model.config.depth} blocks; "
                          f"choose 1..{model.config.depth} (--n-last-blocks)")
    inputs = gather_inputs(source, read, masks)  # streamed into an on-disk index (flat memory)
    try:
        n = len(inputs.records)
        provenance = _provenance(model, cfg, read, embed, resolve_precision(run.precision, device), inputs)
        shard_dir, out_path, tmp = _paths(output)
        lock = OutputLock(out_path) if output is not None and rank == 0 else None
        try:
            done = _plan(shard_dir, provenance, run, n, lock=lock, output=None if output is None else out_path)
            mine = Pending(done, *pending_block(done, rank, world))
            if done.any():
                logger.info("resuming: %d of %d inputs already done", int(done.sum()), n)
            dist.barrier()
            _embed_block(inputs, mine, model=model, cfg=cfg, read=read, embed=embed, run=run, shard_dir=shard_dir,
                         provenance=provenance, rank=rank)
            dist.barrier()
            summary = _finish(shard_dir, out_path, rank, keep=run.keep_shards and tmp is None)
        finally:
            if lock is not None:
                lock.release()
    finally:
        inputs.close()
    summary.update(n_inputs=n, n_resumed=int(done.sum()))
    return _result(summary, output, out_path, tmp, provenance, rank, strict=run.strict)


def _load_model(model: EmbeddingModel | str | os.PathLike, device: torch.device, *, explicit: bool) -> EmbeddingModel:
    if isinstance(model, EmbeddingModel):
        return model.to(device).eval() if explicit else model.eval()
    return as_model(model, device=device)


def _geometry(model: EmbeddingModel, resize, crop, normalize, embed: EmbedOptions, *, cells: bool):
    """The run's PreprocessConfig and the single-cell size; checks that the final size fits the patch."""
    p = model.config.patch_size
    if cells:
        size = embed.cell_size or crop or DEFAULT_CELL_SIZE
        cfg = resolve_preprocess(model, resize, crop if embed.cell_size and crop else 0, normalize)
        embed = replace(embed, cell_size=size)
        final, what = cfg.crop or cfg.resize or size, "cell crop size"
    else:
        cfg = resolve_preprocess(model, resize, crop, normalize)
        final = cfg.crop or cfg.resize or embed.tile
        what = "tile size" if embed.tile else "crop/resize"
    if final is not None and (final < p or final % p):
        raise ConfigError(
            f"the {what} gives {final}x{final}-pixel images, not a multiple of the model's {p}-pixel patch; "
            f"choose a multiple of {p} (e.g. {max(p, (final // p) * p)})"
        )
    return cfg, embed


def _provenance(model, cfg: PreprocessConfig, read: ReadOptions, embed: EmbedOptions, precision: str,
                inputs: RunInputs) -> Provenance:
    reading = {k: v for k, v in read.to_dict().items() if k != "max_pixels"}  # a budget does not change numbers
    options: dict[str, Any] = {**reading, "z_projection": read.z, "precision": precision,
                               "inputs": inputs_identity(inputs)}
    if read.illum:
        options["illumination"] = ILLUMINATION
    if embed.cell_size is not None:
        options["single_cell"] = {"size": embed.cell_size, "mask_outside": embed.mask_outside, "centre": "centroid"}
    elif embed.tile is None and cfg.crop is None:
        options["fit_to_patch"] = FIT_TO_PATCH
    card = getattr(model, "card", {}) or {}
    for key in ("family", "source", "revision", "licence"):  # a zoo model's Hub repo, pinned revision and licence
        if card.get(key):
            options[f"model_{key}"] = str(card[key])
    tiling = None if embed.tile is None else {"size": embed.tile, "reduce": "mean", "grid": "cover"}
    return Provenance.from_model(model, **embed.resolve(model.features).to_dict(), preprocessing=cfg, tiling=tiling,
                                 options=options)


def _paths(output) -> tuple[ShardDir, Path | str, Path | None]:
    """(shard folder, final output, temporary folder to delete or None). An output URL keeps its shards in
    the bucket too: ``s3://b/run/x.parquet`` -> ``s3://b/run/x.parquet.shards``."""
    if output is not None and is_url(output):
        url = str(output)
        return f"{url}.shards", url, None
    if output is not None:
        out = Path(output)
        return out.with_name(out.name + ".shards"), out, None
    tmp = Path(dist.broadcast_object(tempfile.mkdtemp(prefix="dino_boc_") if dist.is_main() else None))
    return tmp / "shards", tmp / "features.parquet", tmp


def _plan(shard_dir: ShardDir, provenance: Provenance, run: RunOptions, n: int, *, lock: OutputLock | None,
          output: Path | None) -> np.ndarray:
    """Rank 0 locks the output and decides what is done (and whether the folder may be used); every rank
    gets the answer: a bool mask ``(n,)`` of the inputs done (sent as bits: n/8 bytes)."""
    answer: tuple[bytes, str | None, bool] = (b"", None, False)
    if dist.is_main():
        try:
            if lock is not None:
                lock.acquire()
            if output is not None:
                _check_finished(output, provenance, run)
            if run.overwrite and not run.resume and remove_shards(shard_dir):
                logger.info("overwrite: removed the shards of an earlier run in %s", shard_dir)
            answer = (np.packbits(_done(shard_dir, provenance, run.resume, n)).tobytes(), None, False)
        except OutputError as exc:
            answer = (b"", str(exc), True)
        except DinoBocError as exc:
            answer = (b"", str(exc), False)
    bits, problem, is_output = dist.broadcast_object(answer)
    if problem:
        raise (OutputError if is_output else ConfigError)(problem)
    return np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=n).astype(bool)


def _inputs_changed(old: Provenance, new: Provenance) -> str | None:
    was, now = old.options.get("inputs"), new.options.get("inputs")
    if was is None or was == now:
        return None
    return (f"its inputs differ from the earlier run's ({was['count']} inputs then, {now['count']} now, or other files "
            f"or order); resuming would mix two datasets. Give the same inputs in the same order, or start again")


def _check_finished(output: Path | str, provenance: Provenance, run: RunOptions) -> None:
    """A finished output (a file or an object) is resumed only with the same inputs and settings."""
    if not run.resume:
        return
    store, name = parent_store(output)
    if not store.exists(name):
        return
    try:
        old = read_provenance(output)
    except (DinoBocError, OSError, ValueError) as exc:
        raise ConfigError(f"cannot resume {output}: its provenance cannot be read ({exc}); pass overwrite=True "
                          "(--overwrite) to replace it") from exc
    why = _inputs_changed(old, provenance)
    diff = [k for k in old.differences(provenance) if k != "dino_boc_version"]
    if why or diff:
        raise ConfigError(f"cannot resume the finished output {output}: " + (why or f"it was made with other {diff}")
                          + "; pass overwrite=True (--overwrite) to replace it, or choose another output")


def _done(shard_dir: ShardDir, provenance: Provenance, resume: bool, n: int) -> np.ndarray:
    manifests = read_manifests(shard_dir)
    used = [m for m in manifests if m.shards or m.failures]
    if used and not resume:
        raise ConfigError(f"{shard_dir} holds the shards of an earlier run of this output; pass resume=True "
                          "(--resume) to continue it, overwrite=True (--overwrite) to start again, or delete it")
    if not used:
        return np.zeros(n, dtype=bool)
    why = _inputs_changed(used[0].provenance, provenance)
    if why:
        raise ConfigError(f"cannot resume {shard_dir}: {why} (or delete that folder)")
    diff = used[0].provenance.differences(provenance)
    if diff:
        raise ConfigError(f"cannot resume {shard_dir}: the earlier run differs in {diff}; use the same "
                          "model and settings, or delete that folder to start again")
    drop_bad_shards(shard_dir)
    return done_mask(shard_dir, n)


def _prefetch(run: RunOptions, embed: EmbedOptions) -> int | None:
    """Items each worker keeps ready. About one batch of images in flight in all (at most 128 inputs), so
    the next batch is ready when the model finishes one; tiles and cells bring many images per input."""
    if run.num_workers == 0:
        return None
    per_input = 1 if embed.tile is None and embed.cell_size is None else 16
    in_flight = min(128, max(1, run.batch_size // per_input))
    return max(2, -(-in_flight // run.num_workers))


def _embed_block(inputs: RunInputs, mine: "Pending", *, model, cfg, read, embed, run, shard_dir, provenance, rank):
    """Embed the inputs ``mine`` of this rank into its shards."""
    from tqdm.auto import tqdm

    dataset = InputDataset(inputs.records, preprocess=cfg, patch_size=model.config.patch_size, read=read,
                           embed=embed, masks=inputs.masks)
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=mine, num_workers=run.num_workers, collate_fn=identity_collate,
        pin_memory=device.type == "cuda", prefetch_factor=_prefetch(run, embed),
    )
    forward = partial(run_tensors, model, n_last_blocks=embed.n_last_blocks, avgpool=embed.avgpool,
                      batch_size=run.batch_size, precision=run.precision)
    independent = getattr(model, "channels_independent", model.config.arch == "boc")  # each channel on its own
    batcher = ShapeBatcher(forward, batch_size=run.batch_size, split_channels=independent)
    rows = _RowMaker(model, embed)
    bar = tqdm(total=len(mine), unit="img", desc=f"embed (rank {rank})" if rank else "embed",
               disable=not run.progress or rank != 0, dynamic_ncols=True, smoothing=0.05)
    failed = 0
    with ShardWriter(shard_dir, provenance, run.shard_size, rank, resume=run.resume) as writer, bar:
        def write(done: list) -> None:
            nonlocal failed
            for d in done:
                if isinstance(d, Failed):
                    writer.add_failure(d.index, d.path, d.reason)
                    failed += 1
                    bar.set_postfix(failed=failed, refresh=False)
                elif d.item.rows:
                    feats = rows.features(d)
                    bad = ~np.isfinite(feats).all(axis=1)
                    if bad.any():  # never counted as embedded: the whole input goes to the errors file
                        writer.add_failure(d.item.index, d.item.source, _non_finite(int(bad.sum()), len(bad)))
                        failed += 1
                    else:
                        writer.add([d.item.index] * len(d.item.rows), d.item.rows, feats, rows.names(d))
                bar.update(1)

        for item in loader:
            write([item] if isinstance(item, Failed) else batcher.put(item))
        write(batcher.flush())
    logger.debug("rank %d: %d forward passes, %d inputs, %d failed", rank, batcher.forward_calls, len(mine), failed)


def _non_finite(n_bad: int, n_rows: int) -> str:
    return (f"InputError: {n_bad} of {n_rows} feature rows are not finite (NaN or inf); the image's values "
            "probably overflow float32 (e.g. near 1e38) or hold NaN/inf. Rescale the image, or check the model's "
            "weights if every input fails this way")


class _RowMaker:
    """Token results of one input -> its feature rows (tiles averaged per channel) and column names."""

    def __init__(self, model: EmbeddingModel, embed: EmbedOptions) -> None:
        self.model, self.spec = model, embed.resolve(model.features)
        self.blocks = tuple(range(model.config.depth - self.spec.n_last_blocks, model.config.depth))
        self._names: dict[tuple[str, ...], list[str]] = {}

    def features(self, done: Finished) -> np.ndarray:
        parts = [None if done.results[0][k] is None else np.stack([r[k] for r in done.results]) for k in range(3)]
        if done.item.reduce == "mean":  # tiles: average the structured tokens, then flatten (same layout)
            parts = [None if a is None else a.mean(axis=0, keepdims=True) for a in parts]
        emb = Embedding(cls=parts[0], global_cls=parts[1], patch_mean=parts[2],
                        channel_names=done.item.channel_names, blocks=self.blocks)
        return flatten(emb, channel_pool=self.spec.channel_pool)

    def names(self, done: Finished) -> list[str]:
        key = tuple(done.item.channel_names)
        if key not in self._names:
            self._names[key] = model_feature_names(self.model, list(key), **self.spec.to_dict())
        return self._names[key]


def _finish(shard_dir: ShardDir, out_path: Path | str, rank: int, *, keep: bool) -> dict[str, Any]:
    """Rank 0 merges the shards into the output, a file or a URL (and removes the shards unless ``keep``);
    all ranks get the summary."""
    summary: dict[str, Any] | str = {}
    if rank == 0:
        try:
            summary = finalize(shard_dir, out_path)
        except DinoBocError as exc:
            summary = f"{type(exc).__name__}: {exc}"
        else:
            if keep:
                summary["shards"] = str(shard_dir)
            else:
                try:
                    remove_shards(shard_dir)
                except DinoBocError as exc:  # the output is complete; leftover shards are only clutter
                    logger.warning("could not remove %s: %s", shard_dir, exc)
    summary = dist.broadcast_object(summary)
    if isinstance(summary, str):
        kind = OutputError if summary.startswith(OutputError.__name__) else ConfigError
        raise kind(f"merging the shards in {shard_dir} failed: {summary}")
    return summary


def _result(summary, output, out_path: Path, tmp: Path | None, provenance: Provenance, rank: int, *, strict: bool):
    n_failed, n_ok = summary["n_failed"], summary["n_ok"]
    if n_ok == 0:
        logger.error("nothing was embedded: all %d inputs failed (see the errors file / summary)", n_failed)
    elif n_failed:
        logger.warning("%d of %d inputs failed: %s", n_failed, n_failed + n_ok, summary["by_reason"])
    table = None
    if output is None and rank == 0:
        import pandas as pd

        table = pd.read_parquet(out_path)
        errors = pd.read_csv(summary["errors_file"]).to_dict("records")
        summary = {**summary, "output": None, "errors_file": None}
        table.attrs.update(summary=summary, errors=errors, provenance=provenance.to_dict())
        shutil.rmtree(tmp, ignore_errors=True)
    if strict and n_failed:
        where = summary["errors_file"] or "df.attrs['errors']"
        raise FailedInputsError(f"{n_failed} of {n_failed + n_ok} inputs failed {summary['by_reason']}; see {where}",
                                summary)
    if output is None:
        return table
    return summary
