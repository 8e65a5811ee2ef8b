"""Weights: the registry of named models, loading from every source, converting released checkpoints."""

from dino_boc.weights.load import add_weights, load_model
from dino_boc.weights.registry import REGISTRY, cache_dir, list_models

__all__ = ["load_model", "add_weights", "list_models", "cache_dir", "REGISTRY"]
