"""Writing feature tables: provenance, atomic shards with manifests and resume, final formats.

Spec of every file written here: ``docs/outputs.md`` (format_version 1).
"""

from dino_boc.outputs.columns import metadata_row
from dino_boc.outputs.profiling import feature_columns, metadata_columns, prefix_features
from dino_boc.outputs.provenance import FeatureLayout, Provenance, state_dict_sha256
from dino_boc.outputs.read import FeatureTable, read_features
from dino_boc.outputs.shards import ShardWriter, done_indices, done_mask, read_manifests
from dino_boc.outputs.writers import finalize, read_provenance

__all__ = [
    "FeatureLayout",
    "FeatureTable",
    "Provenance",
    "ShardWriter",
    "done_indices",
    "done_mask",
    "feature_columns",
    "finalize",
    "metadata_columns",
    "metadata_row",
    "prefix_features",
    "read_features",
    "read_manifests",
    "read_provenance",
    "state_dict_sha256",
]
