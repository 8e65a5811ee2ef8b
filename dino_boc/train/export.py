"""Export a training run's teacher as a model folder that :func:`dino_boc.load_model` reads.

The teacher (the EMA of the student, as DINOv2 evaluates) backbone — with HA's channel CLS token and
Channel-ViT's channel embeddings, i.e. the whole :class:`~dino_boc.models.base.EmbeddingModel` — is
written in the Hub format (``config.json`` + ``model.safetensors``). Heads, optimiser and training
wrappers are left out; drop path is set to 0 in the saved config (it only acts in training).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import torch

from dino_boc.errors import WeightsError
from dino_boc.models import EmbeddingModel, build_model
from dino_boc.preprocess.config import PreprocessConfig
from dino_boc.train.checkpoint import latest_checkpoint, load_checkpoint
from dino_boc.train.config import saved_config

__all__ = ["export_run", "model_from_checkpoint"]

logger = logging.getLogger(__name__)


def model_from_checkpoint(
    checkpoint: str | os.PathLike, *, which: Literal["teacher", "student"] = "teacher", name: str = ""
) -> tuple[EmbeddingModel, dict[str, Any]]:
    """The trained model held in a training checkpoint (or the newest one of a run folder).

    Args:
        checkpoint: a ``checkpoint_*.pt`` file, or a run folder (its newest checkpoint).
        which: ``"teacher"`` (the EMA network; what to embed with) or ``"student"``.
        name: the model's name (default: the run folder's name and the iteration).

    Returns:
        (model in eval mode on CPU, marked pretrained; the checkpoint dict).

    Raises:
        WeightsError: no checkpoint, or one whose weights do not fit its own config.
    """
    path = Path(checkpoint)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise WeightsError(f"{path} holds no training checkpoint (checkpoints/checkpoint_*.pt)")
        path = found
    state = load_checkpoint(path)
    cfg = saved_config(state["config"])
    model_cfg = cfg.model.__class__.from_dict({**cfg.model.to_dict(), "drop_path_rate": 0.0})
    prefix = f"{which}.backbone."
    weights = {k[len(prefix):]: v for k, v in state["objective"].items() if k.startswith(prefix)}
    run_name = path.parent.parent.name
    model = build_model(model_cfg, preprocess=PreprocessConfig(), name=name or f"{run_name}-it{state['iteration']}")
    from dino_boc.weights.load import load_state_dict_strict

    load_state_dict_strict(model, {k: v.float() for k, v in weights.items()}, source=f"{path} ({which})")
    model.pretrained = True
    model.card = {
        "summary": f"dino_boc {cfg.model.arch} model pretrained with dino_boc.train ({which} network)",
        "training": {
            "checkpoint": path.name,
            "iteration": int(state["iteration"]),
            "epoch": float(state["data"]["epoch"]),
            "samples_seen": int(state["data"]["samples_seen"]),
            "global_batch_size": cfg.train.batch_size,
            "sources": [s.name or s.path for s in cfg.data.sources],
            "seed": cfg.train.seed,
        },
    }
    return model.eval(), state


def export_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    which: Literal["teacher", "student"] = "teacher",
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    name: str = "",
    card: dict[str, Any] | None = None,
    preprocess: PreprocessConfig | None = None,
) -> Path:
    """Write a run's model to ``out_dir`` (``config.json`` + ``model.safetensors``).

    Args:
        run_dir: the training run folder.
        out_dir: target folder, loadable with ``dino_boc.load_model(out_dir)``.
        checkpoint: a specific checkpoint (default: the run's newest).
        which: ``"teacher"`` (default) or ``"student"``.
        dtype: storage dtype of the weights (``float16`` halves the size; loading casts back to float32).
        name: model name stored in ``config.json``.
        card: model-card fields merged over the automatic ones (``summary``, ``licence``, ...).
        preprocess: default pre-processing stored with the model (default: self-normalisation).

    Returns:
        ``out_dir``.
    """
    model, _ = model_from_checkpoint(checkpoint or run_dir, which=which, name=name)
    if preprocess is not None:
        model.preprocess = preprocess
    if card:
        model.card = {**model.card, **card}
    out = model.save_pretrained(out_dir, dtype=getattr(torch, dtype) if dtype != "float32" else None)
    logger.info("exported the %s of %s to %s", which, run_dir, out)
    return out
