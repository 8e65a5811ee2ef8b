"""The registry of named models: where their weights come from, their licence and how to get them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dino_boc.models.config import FeatureDefaults, ModelConfig
from dino_boc.preprocess.config import PreprocessConfig
from dino_boc.weights.native import (
    CHAMMI_DINOV2_PREPROCESS, CLS_FEATURES, MORPHEM_PREPROCESS, OPENPHENOM_FEATURES, OPENPHENOM_PREPROCESS,
)

__all__ = ["DEFAULT_MODEL", "RegistryEntry", "REGISTRY", "list_models", "model_table", "cache_dir", "packaged_dir", "REQUEST_URL"]

#: the NAME of the model the Python API loads when none is given (``load_model()``, ``embed(model=None)``,
#: ``embed_dataset``): the paper's ViT-L/16. The CLI's default is ``dino_boc.cli.embed.DEFAULT_CLI_MODEL``.
DEFAULT_MODEL = "dino-boc-vitl16"
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
        family: the weight layout (``"dino_boc"``, ``"morphem"``, ``"timm_dinov2"``;
            :mod:`dino_boc.weights.native`).
        filename: the weights file inside a Hub snapshot of a native family.
        features: the model's default feature vector.
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
    family: str = "dino_boc"
    filename: str = "model.safetensors"
    features: FeatureDefaults = field(default_factory=FeatureDefaults)

    @property
    def gated(self) -> bool:
        """True when the authors hand the weights out only after a request form."""
        return self.source == "gated"


_PAPER = "Scaling channel-invariant self-supervised learning for microscopy images (DINO BoC); cell_dino release"
_FAIR_NC = "FAIR Noncommercial Research License (research use only; not for clinical use)"
#: ViT widths (timm's ``vit_small`` / ``vit_large`` model args); patch and image size are each entry's own
_VIT_S = dict(embed_dim=384, depth=12, num_heads=6)
_VIT_L = dict(embed_dim=1024, depth=24, num_heads=16)

REGISTRY: dict[str, RegistryEntry] = {}


def _register(entry: RegistryEntry) -> None:
    REGISTRY[entry.name] = entry


_register(RegistryEntry(
    name=DEFAULT_MODEL,
    description="DINO BoC ViT-L/16 (the paper's released model, in_chans=1); gated: add it with 'dino-boc weights add'",
    source="gated",
    config=ModelConfig(arch="boc", **_VIT_L, patch_size=16, img_size=224),
    licence=_FAIR_NC,
    request_url=REQUEST_URL,
    paper=_PAPER,
))
_register(RegistryEntry(
    name="random-init-boc-vits16",
    description="RANDOMLY INITIALISED ViT-S/16 BoC (seed 0): a stand-in that exercises the pipeline; its features carry no learned biology",
    source="random",
    config=ModelConfig(arch="boc", **_VIT_S, patch_size=16, img_size=224),
    licence="Apache-2.0 (no trained weights)",
))


#: HPA channel order (the HPA Kaggle / CHAMMI HPA layout: red, green, blue, yellow)
HPA_CHANNELS = ("microtubules", "protein", "nucleus", "ER")
#: Cell Painting channel order (JUMP: DNA, ER, RNA, AGP, Mito)
CP_CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
#: the released Cell-DINO linear evaluation: ÷255, centre crop 384 (zero padding), self-normalisation
_CELL_DINO_EVAL = PreprocessConfig(crop=384)
_CELL_DINO = "Cell-DINO (Moutakanni, Couprie, Yi et al.); cell_dino in facebookresearch/dinov2"
for _name, _what, _arch in (
    ("cell-dino-hpa-vitl16", "Cell-DINO ViT-L/16 on HPA fields of view, fixed 4 channels " + str(list(HPA_CHANNELS)),
     dict(**_VIT_L, patch_size=16, img_size=224, channel_names=HPA_CHANNELS)),
    ("cell-dino-hpa-vitl14", "Cell-DINO ViT-L/14 (LVD then HPA, 518 px), fixed 4 channels " + str(list(HPA_CHANNELS)),
     dict(**_VIT_L, patch_size=14, img_size=518, channel_names=HPA_CHANNELS)),
    ("cell-dino-cp-vits8", "Cell-DINO ViT-S/8 on combined Cell Painting (128 px), fixed 5 channels " + str(list(CP_CHANNELS)),
     dict(**_VIT_S, patch_size=8, img_size=128, channel_names=CP_CHANNELS)),
):
    _register(RegistryEntry(
        name=_name, description=_what + "; gated: add it with 'dino-boc weights add'", source="gated",
        config=ModelConfig(arch="fixed", in_chans=len(_arch["channel_names"]), **_arch),
        preprocess=_CELL_DINO_EVAL, licence=_FAIR_NC, request_url=REQUEST_URL, paper=_CELL_DINO,
    ))

_CHAMMI75 = "CHAMMI-75 (Caicedo lab, ICLR 2026); code: github.com/CaicedoLab/CHAMMI-75"
_DINOV2 = "DINOv2: Learning Robust Visual Features without Supervision (Oquab et al., 2023)"


def _hub_boc(name: str, description: str, hf_hub_id: str, *, family: str, preprocess: PreprocessConfig,
             licence: str, paper: str, revision: str | None = None, **arch: Any) -> None:
    """Register a Hub model run as bag of channels with its authors' final-norm CLS per channel (CLS_FEATURES)."""
    _register(RegistryEntry(
        name=name, description=description, source="hub", hf_hub_id=hf_hub_id, revision=revision, family=family,
        config=ModelConfig(arch="boc", **arch), preprocess=preprocess, features=CLS_FEATURES, licence=licence,
        paper=paper,
    ))


_hub_boc("morphem-vits16",
         "MorphEm: DINO BoC ViT-S/16 (in_chans=1) trained on CHAMMI-75; per-channel final-norm CLS (384·K)",
         "CaicedoLab/MorphEm", family="morphem", preprocess=MORPHEM_PREPROCESS, licence="MIT", paper=_CHAMMI75,
         **_VIT_S, patch_size=16, img_size=224, init_values=None)
for _name, _what, _hub, _revision, _arch, _paper in (
    ("dinov2-vits14-reg4-boc",
     "DINOv2 ViT-S/14 with 4 registers (natural images, timm weights) run as bag of channels, as CHAMMI-75's "
     "DinoV2 baseline; per-channel final-norm CLS (384·K)",
     "timm/vit_small_patch14_reg4_dinov2.lvd142m", "788f50961a4cf5d639e54a0f3c30e17476d346fc",
     dict(**_VIT_S, reg_tokens=4, interpolate_offset=0.0, interpolate_antialias=True),
     _DINOV2 + "; registers: Vision Transformers Need Registers (Darcet et al., 2024)"),
    ("dinov2-vitl14-boc",
     "DINOv2 ViT-L/14 (natural images, timm weights) run as bag of channels with CHAMMI-75's DinoV2 "
     "pre-processing; per-channel final-norm CLS (1024·K)",
     "timm/vit_large_patch14_dinov2.lvd142m", "7eb792a1b3aabe5d55f3da6ff9e2e084744e25f9", _VIT_L, _DINOV2),
):
    _hub_boc(_name, _what, _hub, revision=_revision, family="timm_dinov2", preprocess=CHAMMI_DINOV2_PREPROCESS,
             licence="Apache-2.0", paper=_paper, patch_size=14, img_size=518, **_arch)

_register(RegistryEntry(
    name="openphenom-vits16",
    description="OpenPhenom: Recursion's channel-agnostic MAE ViT-S/16 (up to 11 channels, 256 px, RxRx3 + "
                "cpg0016); predict()'s pooled patch tokens (384), channel_pool='concat' for 384·K",
    source="hub", hf_hub_id="recursionpharma/OpenPhenom", revision="c62ba2fad0889d6d7fd550ae7d865bb32a422e51",
    family="openphenom",
    config=ModelConfig(arch="ca_mae", **_VIT_S, patch_size=16, img_size=256, init_values=1e-4, qkv_bias=False,
                       max_channels=11),
    preprocess=OPENPHENOM_PREPROCESS, features=OPENPHENOM_FEATURES,
    licence="Recursion non-commercial end user license (research use only; see the Hub repo's LICENSE)",
    paper="Masked Autoencoders for Microscopy are Scalable Learners of Cellular Biology (Kraus et al., CVPR 2024)",
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


def list_models(*, details: bool = False) -> list[str] | list[dict[str, object]]:
    """The registry's models (``load_model`` also takes paths and Hub repos).

    Args:
        details: return one dict per model instead of the names: ``name``, ``family``, ``source``
            (``"gated"``, ``"hub"``, ``"packaged"``, ``"random"``), ``hub_id``, ``revision``, ``licence``,
            ``gated``, ``cached`` (whether the weights are on this machine) and ``description``.

    Returns:
        The sorted names, or the dicts in the same order.
    """
    if not details:
        return sorted(REGISTRY)
    return model_table()


def _is_cached(entry: RegistryEntry) -> bool:
    if entry.source in ("random", "packaged"):
        return True
    if (cache_dir() / entry.name / "config.json").is_file():
        return True
    if entry.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(entry.hf_hub_id, entry.filename, revision=entry.revision)
        return isinstance(hit, str)
    return False


def model_table() -> list[dict[str, object]]:
    """One dict per registry entry (see :func:`list_models` with ``details=True``)."""
    return [
        {"name": e.name, "family": e.family, "source": e.source, "hub_id": e.hf_hub_id or "",
         "revision": e.revision or "", "licence": e.licence, "gated": e.gated, "cached": _is_cached(e),
         "description": e.description}
        for _, e in sorted(REGISTRY.items())
    ]
