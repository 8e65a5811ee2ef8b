"""The batching engine under :func:`dino_boc.embed` and :func:`dino_boc.embed_dataset`.

Pre-processed ``(K, H, W)`` tensors in, numpy tokens out (:func:`run_tensors`), plus what both callers
share: the default model (loaded once per process and device), a model-or-name argument resolved to a
model (:func:`get_model`), and the model's pre-processing with a call's overrides. It sits above
``weights`` (it loads models by name) and below ``embed`` and ``pipeline``, which import it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from dino_boc.models.base import EmbeddingModel
from dino_boc.precision import Precision, autocast_context, resolve_precision
from dino_boc.preprocess import PreprocessConfig
from dino_boc.weights.registry import DEFAULT_MODEL
from dino_boc.weights.resolve import as_model

__all__ = ["DEFAULT_MODEL", "DEFAULT_BATCH_SIZE", "default_model", "get_model", "resolve_preprocess", "run_tensors"]

DEFAULT_BATCH_SIZE = 256
"""Channel-images (B·K) per forward pass when embedding (lower it on out-of-memory errors)."""

def default_model(name: str = DEFAULT_MODEL, device: str | torch.device | None = None) -> EmbeddingModel:
    """The model ``name`` loads, once per process and device, and reused
    (:func:`~dino_boc.weights.resolve.as_model` with ``cache=True``).

    Args:
        name: a model NAME (registry name, folder, file or Hub id); default :data:`DEFAULT_MODEL`.
        device: where it goes (None: the GPU if any, else CPU).

    Raises:
        ModelNotFoundError, WeightsError: from :func:`~dino_boc.weights.load_model`.
    """
    return as_model(name, device=device, cache=True)


def get_model(model: EmbeddingModel | str | os.PathLike | None) -> EmbeddingModel:
    """A loaded model as given, or the model a name or path loads (once per process); None: :data:`DEFAULT_MODEL`.

    Raises:
        InputError: ``model`` is neither a model nor a name/path (:func:`~dino_boc.weights.resolve.as_model`).
    """
    return as_model(DEFAULT_MODEL if model is None else model, cache=True)


def resolve_preprocess(model: EmbeddingModel, resize: int | None, crop: int | None,
                       normalize: str | None) -> PreprocessConfig:
    """The model's pre-processing with the given overrides (None: keep the model's; 0: none)."""
    cfg = model.preprocess
    changes: dict[str, Any] = {}
    if resize is not None:
        changes["resize"] = resize or None
    if crop is not None:
        changes["crop"] = crop or None
    if normalize is not None:
        changes["normalize"] = normalize
    return replace(cfg, **changes) if changes else cfg


@torch.inference_mode()
def run_tensors(
    model: EmbeddingModel, tensors: list[torch.Tensor], *, n_last_blocks: int, avgpool: bool, batch_size: int,
    precision: Precision, channel_ids: Sequence[int | str] | None = None,
) -> list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]]:
    """Run the model on pre-processed ``(K, H, W)`` tensors, grouped by shape, chunked by channel-images.

    Used by :func:`embed_tokens` and by the dataset pipeline (``dino_boc.pipeline``).

    Args:
        model: the model (its device is used).
        tensors: pre-processed float ``(K, H, W)`` tensors; shapes may differ.
        n_last_blocks: L (0: no CLS token, only the patch means).
        avgpool: also return the per-channel mean of the last block's patch tokens.
        batch_size: channel-images per forward pass: ``max(1, batch_size // K)`` images of one shape.
        precision: see :func:`dino_boc.precision.resolve_precision` (resolved once for all batches).
        channel_ids: Channel-ViT only.

    Returns:
        Per tensor, ``(cls (L, K, D) | None, global_cls (L, D) | None, patch_mean (K, D) | None)``.
    """
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    results: list[Any] = [None] * len(tensors)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    for shape, idx in groups.items():
        k = shape[0]
        ids = model.resolve_channel_ids(channel_ids, k)
        per_chunk = max(1, batch_size // k)
        for start in range(0, len(idx), per_chunk):
            chunk = idx[start:start + per_chunk]
            x = torch.stack([tensors[i] for i in chunk]).to(device, non_blocking=True)
            with autocast_context(device, precision):
                # through __call__, so that model.compile() (torch.compile) takes effect
                out = model(x, n_last_blocks=max(1, n_last_blocks), channel_ids=ids)
            # copies: the CLS tokens are views into every token of the batch, which would stay alive with them
            cls = None if out.cls is None or not n_last_blocks else out.cls.float().cpu().numpy().copy()
            glob = None if out.global_cls is None or not n_last_blocks else out.global_cls.float().cpu().numpy().copy()
            pm = out.patch.float().mean(dim=2).cpu().numpy() if avgpool else None
            for j, i in enumerate(chunk):
                results[i] = (
                    None if cls is None else cls[j], None if glob is None else glob[j], None if pm is None else pm[j]
                )
    return results


