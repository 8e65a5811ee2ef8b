"""Figures: a 2-D map of a feature table, per-channel patch-token and attention maps, a channel montage.

Needs the ``plot`` extra (``pip install "dino-boc[plot]"``: matplotlib, umap-learn). Every function
returns a matplotlib ``Figure`` (not attached to pyplot: no display backend needed) and saves it when
given ``output=`` (``.png``, ``.svg``, ``.pdf``). What the figures show: docs/plots.md.

>>> from dino_boc import plot
>>> plot.embedding("features.parquet", color="Metadata_Plate", method="pca", output="pca.png")
>>> plot.patch_maps("image.tif", model=model, output="maps.png")
>>> plot.channels("image.tif", output="channels.png")
"""

from __future__ import annotations

from dino_boc.plot.channels import channels, composite
from dino_boc.plot.embedding import embedding, load_table, select_channels
from dino_boc.plot.patches import attention_maps, patch_maps, patch_pca
from dino_boc.plot.profiles import map_activity

__all__ = [
    "embedding", "patch_maps", "channels", "attention_maps", "patch_pca", "composite", "load_table",
    "select_channels", "map_activity",
]
