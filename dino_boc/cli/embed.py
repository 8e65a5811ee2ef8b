"""``dino-boc embed``: embed a folder, files, a glob or a table of images into a feature table."""

from __future__ import annotations

import argparse
import logging
import os

from dino_boc.io.options import PATTERN_PRESETS, ReadOptions, channel_list
from dino_boc.outputs.cpg import CPG_FEATURES
from dino_boc.pipeline.options import CHANNEL_POOLS, PRECISIONS, EmbedOptions, RunOptions
from dino_boc.preprocess.config import NORMALIZE_CHOICES, PreprocessConfig

logger = logging.getLogger(__name__)

DEFAULT_CLI_MODEL = "dino-boc-vitt16-nuclei-demo"
FALLBACK_CLI_MODEL = "random-init-boc-vits16"

DESCRIPTION = """\
Turn microscopy images into feature vectors, one row per image (or per cell), in a table that
pycytominer, pandas or scanpy can read. Images may have any number of channels, in any order:
each channel is encoded on its own and the per-channel features are put side by side.

What it reads: TIFF / OME-TIFF, OME-Zarr, PNG / JPEG, .npy, CZI / ND2 / LIF (with the bioio
extra); a folder (searched recursively), a glob ("plate1/*.tif"), a list of files, a CSV / Parquet
table with a 'path' column (its other columns are kept as Metadata_*), or a CellProfiler LoadData
CSV (FileName_<Channel> / PathName_<Channel> columns, one file per channel; FileName_Illum<Ch>
illumination functions are applied with --illum, never embedded as channels).

What it writes: OUT (.parquet, .h5ad or .npy) with Metadata_* columns first, then the features,
and next to it OUT.errors.csv (features.parquet.errors.csv) listing every image that could not
be used and why: the run goes on. Rows are saved as the run goes in OUT.shards/, so an
interrupted run continues with --resume. An existing OUT is replaced only with --overwrite.

Large images are embedded whole by default (a size that is not a multiple of 16 loses at most
15 border pixels); use --tile 224 to average over a grid of tiles instead, or --resize/--crop."""

EPILOG = """\
examples:
  # a folder of multi-channel TIFFs -> one row per image
  dino-boc embed plates/ -o features.parquet --num-workers 4

  # Cell Painting data described by a LoadData CSV (pe2loaddata, Cell Painting Gallery): five channels
  # chosen by their LoadData names, divided by their illumination functions, renamed in the columns;
  # relative PathName_ folders start where pe2loaddata ran
  dino-boc embed load_data_with_illum.csv -o features.parquet --path-root /data/project \\
      --channels OrigDNA,OrigER,OrigRNA,OrigAGP,OrigMito --illum --channel-names DNA,ER,RNA,AGP,Mito

  # single cells: one row per object of the label images in masks/ (matched by file name,
  # e.g. A01.tif <- A01_cp_masks.png), a 96-pixel crop centred on each object
  dino-boc embed images/ --masks masks/ --cell-size 96 -o cells.parquet

  # several GPUs: torchrun --nproc-per-node 4 -m dino_boc embed plates/ -o features.parquet"""


def _z(text: str):
    if text in ("max", "mean"):
        return text
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--z must be 'max', 'mean' or a plane number, got {text!r}") from exc


def _position(text: str):
    if text == "each":
        return text
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--position must be a number or 'each', got {text!r}") from exc


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``embed``; every choice and default comes from the option dataclasses (ReadOptions, EmbedOptions,
    RunOptions, PreprocessConfig), so the CLI and the Python API cannot drift apart."""
    read, emb, run_ = ReadOptions, EmbedOptions, RunOptions
    p = sub.add_parser("embed", help="embed images (folder, files, glob, table) into a feature table",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folders, image files, glob patterns or tables (CSV/Parquet)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output table: .parquet (recommended), .h5ad (AnnData) or .npy (+ .index.csv); a path or an "
                        "s3:// / gs:// URL (shards go to the bucket as the run goes, the table last)")
    p.add_argument("--model", default=None, metavar="NAME",
                   help=f"model name, folder or checkpoint (default: {DEFAULT_CLI_MODEL}; 'dino-boc weights list' "
                        "shows the names; the paper's model is dino-boc-vitl16)")
    g = p.add_argument_group("reading the images")
    g.add_argument("--channels", metavar="NAMES",
                   help="channels to use, in this order, by name (OrigDNA,OrigMito) or number from 0 (0,2)")
    g.add_argument("--channel-names", metavar="NAMES",
                   help="names for the channels used, in order (DNA,ER,RNA,AGP,Mito): they replace the file's names "
                        "(ImageJ slice labels, ch0, ch1, ...) in the feature columns")
    g.add_argument("--illum", action="store_true",
                   help="LoadData CSVs: divide each channel by its FileName_Illum<Ch> illumination function (.npy), as "
                        "CellProfiler's CorrectIlluminationApply does; without it Illum columns are ignored")
    g.add_argument("--path-root", metavar="DIR",
                   help="LoadData CSVs: the folder their relative PathName_ values start at (where pe2loaddata or "
                        "CellProfiler ran); tried first, then the CSV's folder, then the current folder")
    g.add_argument("--dims", metavar="AXES", help="axes of the files when their metadata is missing or wrong, e.g. CYX, YXC, ZCYX")
    g.add_argument("--z", type=_z, default=read.z, metavar="max|mean|N",
                   help=f"z-stacks: 'max' projection, 'mean', or a plane number (default {read.z})")
    g.add_argument("--t", type=int, default=read.t, metavar="N", help=f"time series: which time point (default {read.t}, the first)")
    g.add_argument("--level", type=int, default=read.level, metavar="N",
                   help=f"pyramidal files: resolution level (default {read.level}, full)")
    g.add_argument("--channel-width", type=int, metavar="PX", help="CHAMMI tapes: width in pixels of one channel in the strip")
    g.add_argument("--position", type=_position, default=read.position, metavar="N|each",
                   help="multi-position files (Micro-Manager, OME-TIFF with one image per position): which stage "
                        f"position (default {read.position}), or 'each' for one row per position (Metadata_Position)")
    g.add_argument("--pattern", metavar="PRESET|REGEX",
                   help="one file per channel: group files into multi-channel images by a vendor preset ("
                        f"{', '.join(PATTERN_PRESETS)}) or a regex with named groups, one of them 'channel', "
                        r"e.g. '(?P<well>[A-P]\d{2})_s(?P<site>\d)_(?P<channel>w\d)'")
    g.add_argument("--max-pixels", type=int, default=read.max_pixels, metavar="N",
                   help=f"most values (pixels x channels x planes) one file may decode at once, checked from its header "
                        f"before reading; a larger file is an errors-file row (default {read.max_pixels:,}; 0: no limit)")
    g = p.add_argument_group("image size and intensity")
    g.add_argument("--resize", type=int, metavar="PX", help="resize so the shorter side is this many pixels (0: no resize)")
    g.add_argument("--crop", type=int, metavar="PX", help="centre crop to this many pixels (0: none); must be a multiple of 16")
    g.add_argument("--normalize", choices=NORMALIZE_CHOICES,
                   help=f"intensity normalisation per channel (default: the model's; {PreprocessConfig.normalize!r} "
                        "as the paper)")
    g.add_argument("--tile", type=int, metavar="PX", help="large images: average the features of a grid of TILE-pixel tiles")
    g.add_argument("--max-tokens", type=int, default=emb.max_tokens, metavar="N",
                   help=f"whole fields: most patch tokens per channel (a 4096x4096 field at patch 16 is 65,536); a larger "
                        f"field is an errors-file row suggesting --tile/--resize (default {emb.max_tokens:,}; 0: no limit)")
    g = p.add_argument_group("single cells")
    g.add_argument("--masks", metavar="MASKS", help="label images (folder or glob; one integer per cell, 0 = background, as cellpose "
                                   "or CellProfiler write), the objects of a LoadData CSV's ObjectsFileName_<O> "
                                   "columns (e.g. Nuclei), or the input table's column naming them")
    g.add_argument("--cell-size", type=int, metavar="PX", help="side of the crop around each cell (default: --crop, else 96)")
    g.add_argument("--mask-outside", action="store_true", help="set pixels outside the cell to 0")
    g = p.add_argument_group("features")
    g.add_argument("--n-last-blocks", type=int, default=None, metavar="N",
                   help="use the CLS tokens of the last N blocks (default: the model's, 4 for Cell-DINO)")
    g.add_argument("--no-avgpool", action="store_true", help="leave out the per-channel mean patch token")
    g.add_argument("--channel-pool", choices=CHANNEL_POOLS, default=emb.channel_pool,
                   help="'concat' per-channel features or 'mean' over channels (default: the model's; concat "
                        "except OpenPhenom)")
    g = p.add_argument_group("running")
    g.add_argument("--batch-size", type=int, default=run_.batch_size, metavar="N",
                   help=f"single-channel images per model call (lower it if the GPU runs out of memory; default "
                        f"{run_.batch_size})")
    g.add_argument("--num-workers", type=int, default=run_.num_workers, metavar="N",
                   help=f"processes reading images while the model runs (e.g. 4-8 on a GPU machine; default "
                        f"{run_.num_workers})")
    g.add_argument("--device", metavar="DEVICE", help="cpu, cuda, cuda:1 ... (default: the GPU if there is one)")
    g.add_argument("--precision", choices=PRECISIONS, default=run_.precision,
                   help="'auto': fp16 on GPU, bf16 on CPUs with native bf16 (AVX512-BF16/AMX), else fp32")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run with the same output, inputs "
                                                          "and settings (a difference is refused)")
    g.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (without it an existing OUT is "
                                                             "an error)")
    g.add_argument("--strict", action="store_true", help="exit with status 1 if any image failed")
    g.add_argument("--keep-shards", action="store_true", help="keep OUT.shards/ after the table is written")
    g.add_argument("--shard-size", type=int, default=run_.shard_size, metavar="ROWS",
                   help=f"rows per shard file (default {run_.shard_size})")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no info messages")
    add_storage_arguments(p)
    g = p.add_argument_group("Cell Painting Gallery layout")
    g.add_argument("--layout", choices=["table", "cpg"], default="table",
                   help="cpg: also write ROOT/embeddings/<model>/<batch>/<plate>/<well>-<site>/embedding.parquet and "
                        "ROOT/profiles/<model>/<batch>/<plate>/<plate>.parquet (needs Metadata_Batch/Plate/Well/Site)")
    g.add_argument("--layout-root", metavar="ROOT", help="folder or s3:// URL of the cpg layout (default: OUT's folder)")
    g.add_argument("--cpg-features", choices=list(CPG_FEATURES), default="wide",
                   help="features in the cpg files: wide columns, one all_emb list column, or <ch>_emb per channel")
    p.set_defaults(func=run)


def add_storage_arguments(p: argparse.ArgumentParser) -> None:
    """``--anon`` and ``--storage-option`` for s3:// gs:// https:// inputs (i17)."""
    g = p.add_argument_group("object stores (s3://, gs://, https:// inputs)")
    g.add_argument("--anon", action="store_true",
                   help="read public buckets without credentials (e.g. s3://cellpainting-gallery)")
    g.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an fsspec/s3fs option, repeatable, e.g. endpoint_url=http://127.0.0.1:9000; "
                        "AWS_ENDPOINT_URL, AWS_PROFILE and credentials files are honoured as s3fs does")


def storage_arguments(args: argparse.Namespace) -> dict:
    """The run's one set of fsspec options from ``--anon`` / ``--storage-option`` (for every URL it reads
    or writes; ``--anon`` is ``token="anon"`` for gs://)."""
    from dino_boc.io.fs import parse_storage_option

    options = dict(parse_storage_option(text) for text in args.storage_option)
    if args.anon:
        options["anon"] = True
    return options


def default_model_name() -> str:
    """The model NAME the CLI uses without ``--model``: :data:`DEFAULT_CLI_MODEL` when the registry has it, else
    the random stand-in (said loudly). The Python API's default is :data:`dino_boc.weights.registry.DEFAULT_MODEL`."""
    from dino_boc.weights.registry import REGISTRY

    if DEFAULT_CLI_MODEL in REGISTRY:
        return DEFAULT_CLI_MODEL
    logger.warning(
        "the default model %r is not installed; using %r, a RANDOMLY INITIALISED model whose features carry no "
        "learned biology. Pass --model for real features.", DEFAULT_CLI_MODEL, FALLBACK_CLI_MODEL,
    )
    return FALLBACK_CLI_MODEL


def options(args: argparse.Namespace) -> tuple[ReadOptions, EmbedOptions, RunOptions]:
    """The parsed flags as the pipeline's option objects (0 means "no limit" for --max-pixels/--max-tokens)."""
    read = ReadOptions(
        channels=channel_list(args.channels), dims=args.dims, z=args.z, t=args.t, level=args.level,
        channel_width=args.channel_width, channel_names=channel_list(args.channel_names), illum=args.illum,
        path_root=args.path_root, position=args.position, pattern=args.pattern, max_pixels=args.max_pixels or None,
        storage_options=storage_arguments(args),
    )
    embed = EmbedOptions(
        n_last_blocks=args.n_last_blocks, avgpool=False if args.no_avgpool else None, channel_pool=args.channel_pool,
        tile=args.tile, cell_size=args.cell_size, mask_outside=args.mask_outside, max_tokens=args.max_tokens or None,
    )
    run = RunOptions(
        batch_size=args.batch_size, num_workers=args.num_workers, resume=args.resume, overwrite=args.overwrite,
        strict=args.strict, keep_shards=args.keep_shards, shard_size=args.shard_size, device=args.device,
        precision=args.precision, progress=not args.quiet,
    )
    return read, embed, run


def run(args: argparse.Namespace) -> int:
    from dino_boc.io.fs import storage_options
    from dino_boc.pipeline import FailedInputsError, run_dataset

    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    read, embed, run_opts = options(args)
    with storage_options(read.storage_options):  # the run's one set: inputs, the output and --layout-root
        try:
            summary = run_dataset(args.inputs, args.output, model=args.model or default_model_name(), read=read,
                                  embed=embed, run=run_opts, resize=args.resize, crop=args.crop,
                                  normalize=args.normalize, masks=args.masks)
            code = 0
        except FailedInputsError as exc:
            summary, code = exc.summary, 1
        if args.layout == "cpg" and summary["n_ok"] and int(os.environ.get("RANK", "0")) == 0:
            write_layout(args, args.output)
    if int(os.environ.get("RANK", "0")) == 0:
        print_summary(summary)
    return 1 if summary["n_ok"] == 0 else code


def write_layout(args: argparse.Namespace, table: str) -> None:
    """``--layout cpg``: the Gallery layout from the table just written."""
    from dino_boc.io.fs import is_url, url_parent
    from dino_boc.outputs.cpg import write_cpg_layout

    model = os.path.basename(str(args.model or default_model_name()).rstrip("/"))
    default_root = url_parent(args.output) if is_url(args.output) else os.path.dirname(os.path.abspath(args.output))
    root = args.layout_root or default_root
    done = write_cpg_layout(table, root, model=model, features=args.cpg_features)
    print(f"cpg layout: {done.n_sites} sites, {done.n_wells} wells under {root}")


def print_summary(summary: dict) -> None:
    """The final lines of a run: counts, failures by reason, where things are."""
    print(f"embedded {summary['n_ok']} of {summary['n_ok'] + summary['n_failed']} inputs "
          f"({summary['n_rows']} rows, {summary['feature_columns']} feature columns) -> {summary['output']}")
    if summary.get("n_resumed"):
        print(f"  (resumed: {summary['n_resumed']} inputs had been handled by the interrupted run)")
    if summary["n_failed"]:
        print(f"failed: {summary['n_failed']}")
        for reason, count in sorted(summary["by_reason"].items(), key=lambda kv: -kv[1]):
            print(f"  {count:6d}  {reason}")
    print(f"errors file: {summary['errors_file']}")
    if summary.get("shards"):
        print(f"shards kept in: {summary['shards']}")
