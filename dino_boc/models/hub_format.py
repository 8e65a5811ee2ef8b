"""The Hub file format of a dino_boc model, and what a loader knows about a model's weights.

A model folder (or Hub repo) holds two files (spec: ``docs/models.md``, "The Hub format"):

* ``config.json`` (:data:`CONFIG_NAME`): :func:`config_dict`: ``format_version``, the library, the model's
  name and pretrained flag, its architecture, pre-processing, default feature and free-form card;
* ``model.safetensors`` (:data:`WEIGHTS_NAME`): the state dict, keys as ``model.state_dict()`` names them.

:func:`save_pretrained` writes them, :func:`push_to_hub` uploads them; ``dino_boc.weights.load_model`` reads
them. :class:`PretrainedCfg` keeps together, on every model, what the loader attached (as timm's
``pretrained_cfg``). The model methods ``EmbeddingModel.save_pretrained``, ``.push_to_hub`` and ``.config_dict``
call these functions.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dino_boc._version import __version__
from dino_boc.errors import ConfigError

if TYPE_CHECKING:  # the model class imports this module; a type hint needs nothing at run time
    from dino_boc.models.base import EmbeddingModel

__all__ = ["FORMAT_VERSION", "CONFIG_NAME", "WEIGHTS_NAME", "PretrainedCfg", "config_dict", "save_pretrained",
           "push_to_hub"]

#: the ``format_version`` that :func:`config_dict` writes and ``load_model`` reads
FORMAT_VERSION = 1
#: the model folder's configuration file
CONFIG_NAME = "config.json"
#: the model folder's weights file
WEIGHTS_NAME = "model.safetensors"


@dataclass
class PretrainedCfg:
    """What is known about a model's weights, in one place (``model.pretrained_cfg``; timm's ``pretrained_cfg``).

    ``model.name``, ``model.pretrained``, ``model.weights_sha256`` and ``model.card`` read and write these
    fields. ``name``, ``pretrained`` and ``card`` are saved in ``config.json``; ``source``, ``revision`` and
    ``weights_sha256`` describe the copy that was loaded and are set by ``load_model``.

    Attributes:
        name: registry name, Hub id or path; what outputs record as ``model_name``.
        pretrained: False for random weights; logged and recorded wherever features are written.
        source: where ``load_model`` read the weights: a folder or file path, ``"hf-hub:org/repo"``, or
            ``"random"``; empty for a model built in memory.
        revision: the Hub commit (or branch/tag) the weights came from; None when not from the Hub.
        weights_sha256: SHA-256 of the weights FILE as read (``model.safetensors`` or the source checkpoint);
            None for weights made in memory. Not the hash outputs record: that is
            ``dino_boc.outputs.state_dict_sha256`` of the tensors, the same whatever file they came from.
        card: free-form model-card fields saved in ``config.json`` (``summary``, ``licence``, ``paper``, a zoo
            model's ``family``/``source``/``revision``, ...).
    """

    name: str = ""
    pretrained: bool = False
    source: str = ""
    revision: str | None = None
    weights_sha256: str | None = None
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def licence(self) -> str:
        """The licence of the weights as the card states it (``card["licence"]``); empty when unknown."""
        return str(self.card.get("licence", "") or "")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``licence`` included)."""
        return {**asdict(self), "licence": self.licence}


def config_dict(model: EmbeddingModel) -> dict[str, Any]:
    """The content of ``config.json`` for ``model`` (format documented in docs/models.md).

    Args:
        model: any :class:`~dino_boc.models.base.EmbeddingModel`.

    Returns:
        ``format_version``, ``library``, ``library_version``, ``name``, ``pretrained``, ``model`` (the
        ``ModelConfig``), ``preprocess``, ``features`` and ``card``, in that order.
    """
    return {
        "format_version": FORMAT_VERSION,
        "library": "dino_boc",
        "library_version": __version__,
        "name": model.name,
        "pretrained": bool(model.pretrained),
        "model": model.config.to_dict(),
        "preprocess": model.preprocess.to_dict(),
        "features": model.features.to_dict(),
        "card": model.card,
    }


def _config_text(model: EmbeddingModel) -> str:
    meta = config_dict(model)
    try:
        return json.dumps(meta, indent=2, sort_keys=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the config.json of model {model.name!r} is not JSON-serialisable ({exc}); keep "
                          f"model.card to strings, numbers, lists and dicts (card keys: {sorted(meta['card'])})"
                          ) from exc


def save_pretrained(model: EmbeddingModel, save_directory: str | os.PathLike, *,
                    dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of ``model`` into ``save_directory`` (created if needed).

    Both files are first written to temporary files in ``save_directory`` and renamed over the old ones only
    when both are complete: a write that fails (a card that is not JSON, a full disk) leaves the folder's
    previous files as they were and no temporary file behind.

    Args:
        model: any :class:`~dino_boc.models.base.EmbeddingModel` (on any device; saved from CPU copies).
        save_directory: target folder.
        dtype: optionally cast floating weights (e.g. ``torch.float16`` to halve the size); loading casts
            them back to float32.

    Returns:
        The folder, loadable with :func:`dino_boc.load_model`.

    Raises:
        ConfigError: the card holds values that JSON cannot store (nothing is written).
    """
    from safetensors.torch import save_file

    out = Path(save_directory)
    text = _config_text(model)  # checked before anything is written
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    out.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]  # concurrent writers never share a temporary file; the umask sets the mode
    tmps = {final: out / f".{final}.{tag}.tmp" for final in (WEIGHTS_NAME, CONFIG_NAME)}
    try:
        save_file(state, str(tmps[WEIGHTS_NAME]),
                  metadata={"format": "pt", "dino_boc_format_version": str(FORMAT_VERSION)})
        tmps[CONFIG_NAME].write_text(text, encoding="utf-8")
        for final, tmp in tmps.items():
            os.replace(tmp, out / final)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
    return out


def push_to_hub(model: EmbeddingModel, repo_id: str, *, token: str | None = None, private: bool = False,
                revision: str | None = None, commit_message: str = "Upload dino_boc model") -> str:
    """Upload ``config.json`` + ``model.safetensors`` of ``model`` to a Hugging Face Hub model repo.

    Args:
        model: any :class:`~dino_boc.models.base.EmbeddingModel`.
        repo_id: ``"org/name"``; created (private if ``private``) when it does not exist.
        token: a Hub token; None: huggingface_hub's login.
        private: create the repo private.
        revision: the branch to commit to; None: the default branch.
        commit_message: the commit message.

    Returns:
        The commit URL.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=commit_message)
    return str(info)
