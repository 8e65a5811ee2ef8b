"""The registry of named models: where their weights come from, their licence and how to get them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dino_boc.models.config import ModelConfig
from dino_boc.preprocess.config import PreprocessConfig

__all__ = ["RegistryEntry", "REGISTRY", "list_models", "cache_dir", "packaged_dir", "REQUEST_URL"]

REQUEST_URL = "https://ai.meta.com/resources/models-and-libraries/cell-dino-downloads/"

Source = Literal["gated", "hub", "packaged", "random"]


@dataclass(frozen=True)
class RegistryEntry:
    """One named model.

    Attributes:
        name: the registry name passed to ``load_model``.
        description: one line for ``list_models``.
        source: ``"gated"`` (the authors' weights; the user adds them with ``dino-boc weights add``),
            ``"hub"`` (a Hugging Face Hub repo), ``"packaged"`` (inside the wheel) or ``"random"``
            (randomly initialised stand-in, never pretrained).
        config: the architecture.
        preprocess: the default pre-processing.
        hf_hub_id: Hub repo for ``source="hub"``.
        revision: pinned Hub revision (commit) for ``source="hub"``.
        sha256: expected SHA-256 of ``model.safetensors`` when known.
        licence: licence of the weights.
        request_url: where gated weights are requested.
        paper: reference.
    """

    name: str
    description: str
    source: Source
    config: ModelConfig
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    hf_hub_id: str | None = None
    revision: str | None = None
    sha256: str | None = None
    licence: str = ""
    request_url: str | None = None
    paper: str = ""


_PAPER = "Scaling channel-invariant self-supervised learning for microscopy images (DINO BoC); cell_dino release"

REGISTRY: dict[str, RegistryEntry] = {}


def _register(entry: RegistryEntry) -> None:
    REGISTRY[entry.name] = entry


_register(RegistryEntry(
    name="dino-boc-vitl16",
    description="DINO BoC ViT-L/16 (the paper's released model, in_chans=1); gated: add it with 'dino-boc weights add'",
    source="gated",
    config=ModelConfig(arch="boc", embed_dim=1024, depth=24, num_heads=16, patch_size=16, img_size=224),
    licence="FAIR Noncommercial Research License (research use only; not for clinical use)",
    request_url=REQUEST_URL,
    paper=_PAPER,
))
_register(RegistryEntry(
    name="random-init-boc-vits16",
    description="RANDOMLY INITIALISED ViT-S/16 BoC (seed 0): a stand-in that exercises the pipeline; its features carry no learned biology",
    source="random",
    config=ModelConfig(arch="boc", embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224),
    licence="Apache-2.0 (no trained weights)",
))


def packaged_dir() -> Path:
    """Folder inside the installed package holding shipped model folders."""
    return Path(__file__).resolve().parent / "files"


def _discover_packaged() -> None:
    """Register every model folder shipped in ``dino_boc/weights/files/<name>/``."""
    import json

    root = packaged_dir()
    if not root.is_dir():
        return
    for d in sorted(root.iterdir()):
        cfg_path = d / "config.json"
        if not cfg_path.is_file() or d.name in REGISTRY:
            continue
        cfg = json.loads(cfg_path.read_text())
        card = cfg.get("card", {})
        _register(RegistryEntry(
            name=d.name,
            description=card.get("summary", "model shipped with dino_boc"),
            source="packaged",
            config=ModelConfig.from_dict(cfg["model"]),
            preprocess=PreprocessConfig.from_dict(cfg.get("preprocess", {})),
            sha256=card.get("sha256"),
            licence=card.get("licence", ""),
        ))


_discover_packaged()


def cache_dir() -> Path:
    """Where converted weights live: ``$DINO_BOC_CACHE``, else ``$XDG_CACHE_HOME/dino_boc``, else
    ``~/.cache/dino_boc``."""
    if os.environ.get("DINO_BOC_CACHE"):
        return Path(os.environ["DINO_BOC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dino_boc"


def list_models() -> list[str]:
    """Names of the registry's models (``load_model`` also takes paths and Hub repos)."""
    return sorted(REGISTRY)
