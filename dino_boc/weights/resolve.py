"""``model=`` arguments: a loaded model, or a name / folder / file / Hub id to load (one helper, one error)."""

from __future__ import annotations

import os

import torch

from dino_boc.errors import InputError
from dino_boc.models import EmbeddingModel
from dino_boc.weights.load import load_model

__all__ = ["as_model"]

_CACHE: dict[tuple[str, str], EmbeddingModel] = {}


def as_model(model: EmbeddingModel | str | os.PathLike, *, device: str | torch.device | None = None,
             cache: bool = False) -> EmbeddingModel:
    """The model a ``model=`` argument names.

    Args:
        model: a loaded :class:`~dino_boc.models.EmbeddingModel` (returned as is: its device is the caller's
            choice), or anything :func:`~dino_boc.weights.load_model` takes (registry name, folder, file, Hub id).
        device: where a model loaded here goes (None: the GPU if any, else CPU).
        cache: keep a model loaded here for the process and give the same object for the same name and
            device (the in-memory API's behaviour; a dataset run loads its own).

    Raises:
        InputError: ``model`` is neither a model nor a name/path.
        ModelNotFoundError, WeightsError: from :func:`~dino_boc.weights.load_model`.
    """
    if isinstance(model, EmbeddingModel):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(f"model must be a dino_boc model or a model name/path, got {type(model).__name__}; pass "
                         "a loaded model or a name from 'dino-boc weights list', a folder or a file")
    if not cache:
        return load_model(model, device=device)
    key = (os.fspath(model), str(device))
    if key not in _CACHE:
        _CACHE[key] = load_model(model, device=device)
    return _CACHE[key]
