"""``dino-boc eval profiles`` and ``dino-boc eval map``: feature table → well profiles → mAP (copairs)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import get_args

from dino_boc.cli._tables import markdown_table
from dino_boc.eval.profile_map import Distance, MapConfig
from dino_boc.eval.profiles import Aggregate, ChannelSets, Normalize, NormalizeBy, ProfileConfig, SelectOp, Sphere

_PROFILES_HELP = """\
Turn a feature table (dino-boc embed output: one row per image, site or cell; or CellProfiler /
pycytominer profiles) into normalised well profiles, the JUMP Cell Painting recipe: aggregate rows to
wells (median), normalise each plate against its negative controls (robust MAD), select features
(variance, correlation, missing values, outliers), optionally sphere on the controls and correct
batches with Harmony. Every step is pycytominer's or harmonypy's, and each is recorded in the
output's metadata (Parquet) or in PROFILES.profiles.json (CSV). Feature columns are all numeric
columns not starting with 'Metadata_'. See docs/profiles.md.
"""

_MAP_HELP = """\
Score profiles with mean average precision (copairs), as the JUMP consortium: phenotypic activity
(each perturbation's replicate wells retrieved against negative-control wells, from the same plate
with --plate-col; controls not scored) and, with --target-col, phenotypic consistency (median
consensus profiles of the active perturbations retrieved against those with other targets;
'|'-separated targets). Writes OUTDIR/activity.csv (one row per perturbation), OUTDIR/consistency.csv
(one row per target), OUTDIR/summary.csv, OUTDIR/map.json (protocol, versions) and OUTDIR/map.png;
prints the summary. --compare OTHER scores a second profile table the same way (in OUTDIR/compare/)
and plots the two side by side.
"""

_PROFILES_EXAMPLE = """\
example:
  dino-boc eval profiles features.parquet -o profiles.parquet --control "Metadata_pert_type == 'negcon'"
"""

_MAP_EXAMPLE = """\
example:
  dino-boc eval map profiles.parquet -o map/ --pert-col Metadata_pert_iname \\
      --control "Metadata_pert_type == 'negcon'" --plate-col Metadata_Plate --target-col Metadata_target_list
"""


def _defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls)}


def _ops(value: str) -> tuple[str, ...]:
    ops = tuple(v.strip() for v in value.split(",") if v.strip())
    if ops == ("none",):
        return ()
    bad = [op for op in ops if op not in get_args(SelectOp)]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown operation(s) {bad}; expected 'none' or a comma-separated list of "
                                         f"{', '.join(get_args(SelectOp))}")
    return ops


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``profiles`` and ``map`` actions to the ``eval`` subparsers."""
    d = _defaults(ProfileConfig)
    p = sub.add_parser("profiles", help="feature table -> normalised well profiles (pycytominer, JUMP recipe)",
                       description=_PROFILES_HELP, epilog=_PROFILES_EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("features", help="feature table (.parquet, .csv, .csv.gz, .tsv)")
    p.add_argument("-o", "--output", required=True, help="profiles to write (.parquet, .csv or .csv.gz)")
    p.add_argument("--control", default=None,
                   help="pandas query selecting negative-control rows, e.g. \"Metadata_pert_type == 'negcon'\"; "
                        "normalisation and sphering are fitted on them (default: all rows)")
    p.add_argument("--strata", nargs="+", default=list(d["strata"]),
                   help="columns naming one well, to aggregate rows to (default: %(default)s)")
    p.add_argument("--aggregate", choices=get_args(Aggregate), default=d["aggregate"],
                   help="how rows of one well are combined; 'none' for a table of well profiles (default: %(default)s)")
    p.add_argument("--plate-col", default=d["plate_col"], help="plate column (default: %(default)s)")
    p.add_argument("--normalize", choices=get_args(Normalize), default=d["normalize"],
                   help="mad_robustize = (x - median) / (1.4826 MAD) as JUMP (default: %(default)s)")
    p.add_argument("--normalize-by", choices=get_args(NormalizeBy), default=d["normalize_by"],
                   help="fit the normalisation per plate or on the whole table (default: %(default)s)")
    p.add_argument("--mad-epsilon", type=float, default=d["mad_epsilon"],
                   help="added to the MAD; 0 as JUMP, features with MAD 0 then go in selection (default: %(default)s)")
    p.add_argument("--inverse-normal", action="store_true", help="rank-based inverse normal transform after normalising")
    p.add_argument("--select", type=_ops, default=d["select"],
                   help="pycytominer feature_select operations, comma-separated, or 'none' "
                        f"(default: {','.join(d['select'])})")
    p.add_argument("--na-cutoff", type=float, default=d["na_cutoff"],
                   help="drop_na_columns: largest fraction of missing values kept (default: %(default)s)")
    p.add_argument("--corr-threshold", type=float, default=d["corr_threshold"],
                   help="correlation_threshold: drop one of two features correlated above this (default: %(default)s)")
    p.add_argument("--outlier-cutoff", type=float, default=d["outlier_cutoff"],
                   help="drop_outliers: drop features with a |value| above this (default: %(default)s)")
    p.add_argument("--sphere", choices=get_args(Sphere), default=d["sphere"],
                   help="whitening fitted on the control rows (default: %(default)s)")
    p.add_argument("--sphere-epsilon", type=float, default=d["sphere_epsilon"],
                   help="sphering regulariser (default: %(default)s)")
    p.add_argument("--harmony", default=None, metavar="COL", help="correct batches in column COL with Harmony")
    p.add_argument("--channel-sets", choices=get_args(ChannelSets), default=d["channel_sets"],
                   help="tables mixing channel sets: keep the features all sets share, or refuse "
                        "(default: %(default)s)")
    p.add_argument("--features", nargs="+", default=None, metavar="COL", dest="feature_columns",
                   help="feature columns (default: every numeric column not starting with 'Metadata_')")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=run_profiles)

    m = _defaults(MapConfig)
    mp = sub.add_parser("map", help="mAP of profiles: phenotypic activity and consistency (copairs)",
                        description=_MAP_HELP, epilog=_MAP_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    mp.add_argument("profiles", help="profile table (.parquet, .csv, .csv.gz), e.g. from 'dino-boc eval profiles'")
    mp.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the tables and the figure")
    mp.add_argument("--pert-col", required=True, help="column naming the perturbation of each well")
    mp.add_argument("--control", required=True, help="pandas query selecting negative-control wells")
    mp.add_argument("--plate-col", default=None, help="negatives come from the query's own plate (JUMP protocol)")
    mp.add_argument("--target-col", default=None,
                    help="column of '|'-separated targets or MoAs: also score phenotypic consistency")
    mp.add_argument("--compare", default=None, metavar="OTHER", help="a second profile table, scored the same way")
    mp.add_argument("--name", default=None, help="label of PROFILES in the summary and figure (default: file name)")
    mp.add_argument("--compare-name", default=None, help="label of OTHER (default: file name)")
    mp.add_argument("--null-size", type=int, default=m["null_size"],
                    help="permutations in copairs' null distribution (default: %(default)s)")
    mp.add_argument("--threshold", type=float, default=m["threshold"], help="FDR level (default: %(default)s)")
    mp.add_argument("--seed", type=int, default=m["seed"], help="seed of the null distribution (default: %(default)s)")
    mp.add_argument("--distance", choices=get_args(Distance), default=m["distance"], help="default: %(default)s")
    mp.add_argument("--features", nargs="+", default=None, metavar="COL", dest="feature_columns",
                    help="feature columns (default: every numeric column not starting with 'Metadata_')")
    mp.add_argument("--overwrite", action="store_true", help="replace files already in OUTDIR")
    mp.set_defaults(func=run_map)


def run_profiles(args: argparse.Namespace) -> int:
    from dino_boc.eval.profile_files import make_profiles_from_file, write_profiles

    config = ProfileConfig(strata=tuple(args.strata), aggregate=args.aggregate, plate_col=args.plate_col,
                           control=args.control, normalize=args.normalize, normalize_by=args.normalize_by,
                           mad_epsilon=args.mad_epsilon, inverse_normal=args.inverse_normal, select=tuple(args.select),
                           na_cutoff=args.na_cutoff, corr_threshold=args.corr_threshold,
                           outlier_cutoff=args.outlier_cutoff, sphere=args.sphere, sphere_epsilon=args.sphere_epsilon,
                           harmony=args.harmony, channel_sets=args.channel_sets,
                           features=tuple(args.feature_columns) if args.feature_columns else None)
    result = make_profiles_from_file(args.features, config=config)
    path = write_profiles(result, args.output, overwrite=args.overwrite)
    for step in result.steps[1:]:
        print(f"{step['step']:>15}: {step['rows_in']} x {step['features_in']} -> {step['rows_out']} x "
              f"{step['features_out']}")
    print(f"wrote {path}")
    return 0


def _score(path: str, args: argparse.Namespace, outdir: Path):
    from dino_boc.eval.profile_map import profile_map, write_map
    from dino_boc.eval.profile_files import read_table

    config = MapConfig(pert_col=args.pert_col, control=args.control, plate_col=args.plate_col,
                       target_col=args.target_col, null_size=args.null_size, threshold=args.threshold, seed=args.seed,
                       distance=args.distance, features=tuple(args.feature_columns) if args.feature_columns else None)
    table, meta = read_table(path)
    result = profile_map(table, config=config)
    write_map(result, outdir, overwrite=args.overwrite, source={"input": str(path), **meta})
    return result


def _label(path: str) -> str:
    name = Path(path).name
    for suffix in (".csv.gz", ".tsv.gz", ".parquet", ".csv", ".tsv"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def run_map(args: argparse.Namespace) -> int:
    import logging

    from dino_boc.plot import map_activity

    if not getattr(args, "verbose", False):
        logging.getLogger("copairs").setLevel(logging.WARNING)
    outdir = Path(args.output)
    figure = outdir / "map.png"
    if figure.exists() and not args.overwrite:
        from dino_boc.errors import InputError

        raise InputError(f"{figure} already exists; pass --overwrite or another output folder")
    runs = {args.name or _label(args.profiles): (_score(args.profiles, args, outdir), outdir)}
    if args.compare:
        other = args.compare_name or _label(args.compare)
        if other in runs:
            other += " (compare)"
        runs[other] = (_score(args.compare, args, outdir / "compare"), outdir / "compare")
    import pandas as pd

    summary = pd.concat([r.summary.assign(features=name) for name, (r, _) in runs.items()], ignore_index=True)
    summary = summary[["features"] + [c for c in summary.columns if c != "features"]]
    summary.to_csv(outdir / "summary.csv", index=False)
    map_activity({name: r.activity for name, (r, _) in runs.items()}, key=args.pert_col, threshold=args.threshold,
                 output=figure)
    print(markdown_table(summary, digits=3))
    print(f"\nwrote {outdir}/activity.csv" + (", consistency.csv" if args.target_col else "")
          + ", summary.csv, map.json, map.png")
    return 0
