"""``load_model``: registry names, Hub repos, ``save_pretrained`` folders and released checkpoint files."""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from dino_boc.errors import ConfigError, ModelNotFoundError, WeightsError
from dino_boc.models import EmbeddingModel, FeatureDefaults, ModelConfig, build_model
from dino_boc.models.base import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME
from dino_boc.preprocess.config import PreprocessConfig
from dino_boc.weights.convert import infer_config, normalize_state_dict, read_checkpoint
from dino_boc.weights.download import check_sha256_prefix, download, is_url, public_url
from dino_boc.weights.native import FAMILIES, convert_native, detect_family, family_defaults
from dino_boc.weights.registry import REGISTRY, RegistryEntry, cache_dir, packaged_dir

__all__ = ["load_model", "add_weights", "load_state_dict_strict", "file_sha256"]

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: keys a checkpoint may lack; the model keeps its initial values
_OPTIONAL_KEYS = ("backbone.mask_token",)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_state_dict_strict(model: EmbeddingModel, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` into ``model``; every missing, unexpected or mis-shaped key is named.

    Raises:
        WeightsError: listing the keys that do not fit.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in _OPTIONAL_KEYS]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        if shapes:
            parts.append("shape mismatches " + "; ".join(shapes[:5]))
        raise WeightsError(f"weights from {source} do not fit the {model.config.arch!r} architecture: " + ", ".join(parts))
    model.load_state_dict(dict(state), strict=False)  # strictness checked above, optional keys allowed


def _from_folder(folder: Path, *, name: str, device: torch.device) -> EmbeddingModel:
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise WeightsError(f"{folder} must hold {CONFIG_NAME} and {WEIGHTS_NAME} (as written by save_pretrained)")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{cfg_path} is not valid JSON: {exc}") from exc
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightsError(f"{cfg_path} has format_version={version!r}; this dino_boc reads {FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(meta["model"])
        preprocess = PreprocessConfig.from_dict(meta.get("preprocess", {}))
        features = FeatureDefaults.from_dict(meta.get("features", {}))
    except (KeyError, ConfigError, TypeError) as exc:
        raise WeightsError(f"{cfg_path} has an invalid model section: {exc}") from exc
    from safetensors.torch import load_file

    try:
        state = load_file(str(w_path))
    except Exception as exc:  # noqa: BLE001 - any reader failure means a corrupt file
        raise WeightsError(f"cannot read {w_path}: {exc}") from exc
    model = build_model(config, preprocess=preprocess, name=meta.get("name") or name)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    load_state_dict_strict(model, state, source=str(w_path))
    model.pretrained = bool(meta.get("pretrained", False))
    model.card = dict(meta.get("card", {}))
    model.features = features
    model.weights_sha256 = file_sha256(w_path)
    return model.to(device).eval()


def _from_checkpoint(path: Path, *, name: str, device: torch.device, num_heads: int | None,
                     preprocess: PreprocessConfig | None = None,
                     raw: Mapping[str, Any] | None = None, entry: RegistryEntry | None = None) -> EmbeddingModel:
    state, ignored = normalize_state_dict(read_checkpoint(path) if raw is None else raw)
    if ignored:
        logger.info("%s: ignoring %d keys inference does not use (%s ...)", path, len(ignored), ignored[0])
    fixed = entry.config.channel_names if entry is not None and entry.config.arch == "fixed" else ()
    config = infer_config(state, num_heads=num_heads or (entry.config.num_heads if fixed else None),
                          channel_names=fixed)
    model = build_model(config, preprocess=preprocess, name=name)
    if entry is not None:
        model.features = entry.features
    load_state_dict_strict(model, {f"backbone.{k}": v.float() for k, v in state.items()}, source=str(path))
    model.pretrained = True
    model.weights_sha256 = file_sha256(path)
    return model.to(device).eval()


def _from_native(path: Path, *, family: str, name: str, device: torch.device, num_heads: int | None,
                 entry: RegistryEntry | None = None, raw: Mapping[str, Any] | None = None,
                 source: str = "", revision: str | None = None) -> EmbeddingModel:
    """A model from a native weights file of a zoo family (:mod:`dino_boc.weights.native`)."""
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r} is unknown; choose one of {FAMILIES}")
    raw = read_checkpoint(path) if raw is None else raw
    if family == "dino_boc":
        return _from_checkpoint(path, name=name, device=device, num_heads=num_heads, raw=raw,
                                preprocess=entry.preprocess if entry else None)
    heads = num_heads or (entry.config.num_heads if entry and entry.config.embed_dim == _dim(raw) else None)
    config, state = convert_native(raw, family, num_heads=heads)
    preprocess, features = family_defaults(family)
    if entry is not None:
        preprocess, features = entry.preprocess, entry.features
    model = build_model(config, preprocess=preprocess, name=name)
    load_state_dict_strict(model, state, source=str(path))
    model.features = features
    model.pretrained = True
    model.weights_sha256 = file_sha256(path)
    licence = entry.licence if entry else ""
    model.card = {"summary": entry.description if entry else f"{family} weights from {path.name}",
                  "family": family, "source": source or str(path), "revision": revision or "",
                  "licence": licence, "paper": entry.paper if entry else ""}
    if "noncommercial" in licence.lower().replace("-", "").replace(" ", ""):
        logger.warning("%s is under a NON-COMMERCIAL licence: %s", name, licence)
    return model.to(device).eval()


def _dim(raw: Mapping[str, Any]) -> int:
    cls = raw.get("cls_token")
    return int(cls.shape[-1]) if isinstance(cls, torch.Tensor) else -1


def _missing_gated(entry: RegistryEntry, looked: list[str]) -> WeightsError:
    return WeightsError(
        f"the weights of {entry.name!r} are not on this machine. They are gated by their authors "
        f"({entry.licence}): request them at {entry.request_url}, download the checkpoint, then run\n"
        f"    dino-boc weights add CHECKPOINT.pth --name {entry.name}\n"
        f"(or pass the .pth path / a Hub repo to load_model). Looked in: {', '.join(looked)}"
    )


def _random_model(entry: RegistryEntry, device: torch.device) -> EmbeddingModel:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(entry.config, preprocess=entry.preprocess, name=entry.name)
    logger.warning(
        "model %r is RANDOMLY INITIALISED (seed 0), not pretrained: its features only exercise the pipeline "
        "and carry no learned biology. Use a trained model for any analysis.", entry.name
    )
    model.card = {"summary": entry.description, "pretrained": False}
    return model.to(device).eval()


def _from_hub(repo_id: str, *, revision: str | None, device: torch.device,
              entry: RegistryEntry | None = None) -> EmbeddingModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    native = entry is not None and entry.family != "dino_boc"
    # a native snapshot: only its weights and card (never its Python code)
    patterns = [entry.filename, "*.md", "LICENSE*"] if native else [CONFIG_NAME, WEIGHTS_NAME, "*.md"]
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except LocalEntryNotFoundError as exc:
        raise ModelNotFoundError(
            f"Hub repo {repo_id!r} (revision {revision or 'main'}) is not in the local cache and the Hub cannot be "
            f"reached (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}); download it once with network access "
            "or pass a local folder"
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelNotFoundError(f"Hub repo {repo_id!r} could not be fetched: {exc}") from exc
    if native:
        weights = Path(folder) / entry.filename
        if not weights.is_file():
            raise WeightsError(f"Hub repo {repo_id!r} (revision {revision or 'main'}) has no {entry.filename}")
        return _from_native(weights, family=entry.family, name=entry.name, device=device, num_heads=None,
                            entry=entry, source=f"hf-hub:{repo_id}", revision=revision or Path(folder).name)
    return _from_folder(Path(folder), name=f"hf-hub:{repo_id}", device=device)


def load_model(
    name_or_path: str | os.PathLike = "dino-boc-vitl16",
    *,
    device: str | torch.device | None = None,
    revision: str | None = None,
    num_heads: int | None = None,
    family: str | None = None,
) -> EmbeddingModel:
    """Load a model for :func:`dino_boc.embed`.

    Args:
        name_or_path: one of

            * a registry name (:func:`dino_boc.list_models`), e.g. ``"dino-boc-vitl16"`` (the paper's ViT-L/16,
              gated: found in the cache after ``dino-boc weights add CHECKPOINT.pth``);
            * ``"hf-hub:org/repo"`` or ``"org/repo"``: a Hugging Face Hub repo in the dino_boc format
              (cached; ``HF_HUB_OFFLINE=1`` honoured);
            * a folder written by ``save_pretrained`` (``config.json`` + ``model.safetensors``);
            * a released checkpoint file (``.pth``/``.pt``/``.safetensors``): chunked or plain keys, or a
              training checkpoint ``{"teacher": ...}``; the architecture is inferred from the tensors;
            * a zoo model's native weights file or Hub snapshot folder (MorphEm, timm DINOv2), recognised
              by its keys and given that model's published pre-processing and feature (docs/models.md).
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
        revision: Hub revision (branch, tag or commit) to pin.
        num_heads: heads for a checkpoint file (default D / 64).
        family: force the layout of a file or folder (``"dino_boc"``, ``"morphem"``, ``"timm_dinov2"``)
            instead of recognising it by its keys.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        ModelNotFoundError: an unknown name, path or repo (close names are suggested).
        WeightsError: weights missing (gated: where to request them), corrupt, or not fitting.
    """
    dev = _resolve_device(device)
    spec = os.fspath(name_or_path)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file() and (family not in (None, "dino_boc") or _is_foreign(path)):
            return _from_file(path / WEIGHTS_NAME, name=path.name, device=dev, num_heads=num_heads, family=family)
        return _from_folder(path, name=str(path), device=dev)
    if path.is_file():
        if path.suffix in (".pth", ".pt", ".bin", ".safetensors"):
            return _from_file(path, name=path.stem, device=dev, num_heads=num_heads, family=family)
        raise ModelNotFoundError(f"{path} is a {path.suffix or 'suffix-less'} file; expected .pth, .pt or .safetensors")
    if spec in REGISTRY:
        entry = REGISTRY[spec]
        if entry.source == "random":
            return _random_model(entry, dev)
        if entry.source == "packaged":
            return _from_folder(packaged_dir() / entry.name, name=entry.name, device=dev)
        cached = cache_dir() / entry.name
        looked = [str(cached)]
        if (cached / CONFIG_NAME).is_file():
            return _from_folder(cached, name=entry.name, device=dev)
        if entry.hf_hub_id:
            looked.append(f"hf-hub:{entry.hf_hub_id}")
            return _from_hub(entry.hf_hub_id, revision=revision or entry.revision, device=dev, entry=entry)
        raise _missing_gated(entry, looked)
    if spec.startswith("hf-hub:"):
        return _from_hub(spec[len("hf-hub:"):], revision=revision, device=dev)
    if _HUB_ID.match(spec) and not spec.startswith((".", "/")) and not path.parent.exists():
        return _from_hub(spec, revision=revision, device=dev)
    close = difflib.get_close_matches(spec, list(REGISTRY), n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ModelNotFoundError(
        f"unknown model {spec!r}: not a registry name, an existing path, or a Hub repo 'org/name'.{hint} "
        f"Known names: {sorted(REGISTRY)} (dino_boc.list_models())"
    )


def _is_foreign(folder: Path) -> bool:
    """Whether a folder holding ``model.safetensors`` is another library's snapshot: no ``config.json``, or
    one without dino_boc's ``format_version`` (a broken dino_boc config stays ours, to be reported)."""
    if not (folder / CONFIG_NAME).is_file():
        return True
    try:
        meta = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and "format_version" not in meta


def _from_file(path: Path, *, name: str, device: torch.device, num_heads: int | None,
               family: str | None) -> EmbeddingModel:
    raw = read_checkpoint(path)
    if family is None:
        flat, _ = normalize_state_dict(raw) if not _looks_native(raw) else (raw, [])
        family = detect_family(flat)
    return _from_native(path, family=family, name=name, device=device, num_heads=num_heads, raw=raw)


def _looks_native(raw: Mapping[str, Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in raw.values())


def add_weights(
    checkpoint: str | os.PathLike, *, name: str = "dino-boc-vitl16", num_heads: int | None = None,
    sha256: str | None = None, progress: bool = True,
) -> Path:
    """Convert a released checkpoint once, verify it, and cache it in the Hub format under
    :func:`~dino_boc.weights.registry.cache_dir` ``/ name``, where ``load_model(name)`` finds it.

    A URL is downloaded first into ``cache_dir() / "downloads"`` (resumable; :mod:`dino_boc.weights.download`).
    A file whose released name carries a SHA-256 prefix (``...-ef7c17ff.pth``) must hash to it. The
    registry's licence is logged and recorded in the cached ``config.json``.

    Args:
        checkpoint: the downloaded ``.pth``, or its ``http(s)://`` URL (e.g. the signed link e-mailed to you).
        name: registry name to store it under.
        num_heads: heads, default D / 64.
        sha256: if given, the checkpoint file's expected SHA-256 (instead of the prefix in its name).
        progress: show a download progress bar.

    Returns:
        The cache folder.

    Raises:
        WeightsError: unreadable, mismatching hash, or weights that do not fit / give non-finite features.
    """
    source = None
    if is_url(checkpoint):
        source = public_url(str(checkpoint))
        checkpoint = download(str(checkpoint), cache_dir() / "downloads", progress=progress)
    src = Path(checkpoint).expanduser()
    if not src.is_file():
        raise WeightsError(f"checkpoint {src} does not exist")
    digest = file_sha256(src)
    if sha256 and digest != sha256.lower():
        raise WeightsError(f"{src} has SHA-256 {digest}, expected {sha256}; the download may be corrupt")
    if not sha256:
        check_sha256_prefix(src, digest)
    entry = REGISTRY.get(name)
    if entry is not None and entry.licence:
        logger.warning("%s: licence %s%s", name, entry.licence, f" ({entry.request_url})" if entry.request_url else "")
    preprocess = entry.preprocess if entry else None
    model = _from_checkpoint(src, name=name, device=torch.device("cpu"), num_heads=num_heads, preprocess=preprocess,
                             entry=entry)
    if entry is not None and entry.config != model.config:
        raise WeightsError(f"{src} holds a {model.config} model, but {name!r} is registered as {entry.config}")
    p = model.config.patch_size
    k = model.config.in_chans if model.config.arch == "fixed" else 2
    with torch.inference_mode():
        out = model.forward_tokens(torch.randn(1, k, 2 * p, 2 * p, generator=torch.Generator().manual_seed(0)))
    if not torch.isfinite(out.patch).all():
        raise WeightsError(f"{src} gives non-finite features; the checkpoint is corrupt")
    model.card = {
        "summary": entry.description if entry else f"converted from {src.name}",
        "source_checkpoint": src.name, "source_sha256": digest,
        "licence": entry.licence if entry else "", "paper": entry.paper if entry else "",
    }
    if source:
        model.card["source_url"] = source
    target = cache_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("cached %s as %r in %s", src, name, target)
    return target
