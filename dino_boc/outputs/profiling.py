"""Handing a dino_boc table to the profiling tools (pycytominer, copairs) without hand edits.

pycytominer's ``features="infer"`` looks for CellProfiler compartment prefixes (``Cells_``, ``Nuclei_``,
``Cytoplasm_``; ``Image_`` with ``image_features=True``); dino_boc's feature columns carry none
(``DNA_cls0_0``...). Either pass the columns explicitly::

    feats = feature_columns(df)
    agg = pycytominer.aggregate(df, strata=["Metadata_Plate", "Metadata_Well"], features=feats)

or give the features a compartment prefix so that inference finds them::

    df = prefix_features(df, "Cells_")        # Cells_DNA_cls0_0 ...; features="infer" works

Metadata columns already carry pycytominer's ``Metadata_`` prefix (``meta_features="infer"`` works).
Recipe: ``docs/profiling.md``.
"""

from __future__ import annotations

from typing import Any

from dino_boc.errors import InputError
from dino_boc.outputs.columns import METADATA_PREFIX

__all__ = ["feature_columns", "metadata_columns", "prefix_features"]


def _columns(table: Any) -> list[str]:
    cols = getattr(table, "columns", table)
    return [str(c) for c in cols]


def feature_columns(table: Any) -> list[str]:
    """The feature columns of a dino_boc table (every column not starting with ``Metadata_``), in order.

    Args:
        table: a pandas DataFrame (or anything with ``.columns``), or an iterable of column names.

    Raises:
        InputError: no feature column.
    """
    cols = [c for c in _columns(table) if not c.startswith(METADATA_PREFIX)]
    if not cols:
        raise InputError("the table has no feature columns (every column starts with Metadata_)")
    return cols


def metadata_columns(table: Any) -> list[str]:
    """The ``Metadata_*`` columns of a dino_boc table, in order."""
    return [c for c in _columns(table) if c.startswith(METADATA_PREFIX)]


def prefix_features(table: Any, prefix: str = "Cells_") -> Any:
    """A copy of a DataFrame whose feature columns start with ``prefix`` (metadata columns unchanged).

    With a CellProfiler compartment prefix (``"Cells_"``, ``"Nuclei_"``, ``"Cytoplasm_"``; ``"Image_"``
    with pycytominer's ``image_features=True``) pycytominer's ``features="infer"`` finds every feature.

    Raises:
        InputError: an empty prefix, or one starting with ``Metadata_``.
    """
    if not prefix or prefix.startswith(METADATA_PREFIX):
        raise InputError(f"prefix={prefix!r}: give a compartment prefix such as 'Cells_' (not empty, not Metadata_)")
    return table.rename(columns={c: prefix + c for c in feature_columns(table)})
