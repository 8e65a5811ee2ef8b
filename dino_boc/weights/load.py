"""``load_model``: registry names, Hub repos, ``save_pretrained`` folders and released checkpoint files."""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from dino_boc.errors import ConfigError, ModelNotFoundError, WeightsError
from dino_boc.models import EmbeddingModel, ModelConfig, build_model
from dino_boc.models.base import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME
from dino_boc.preprocess.config import PreprocessConfig
from dino_boc.weights.check import check_finite, check_weights_fit, fit_message, safetensors_shapes
from dino_boc.weights.convert import infer_config, normalize_state_dict, read_checkpoint
from dino_boc.weights.names import (
    cache_folder,
    check_model_name,
    check_replaceable,
    check_revision,
    is_model_folder,
    replace_model_folder,
)
from dino_boc.weights.registry import REGISTRY, RegistryEntry, cache_dir, packaged_dir

__all__ = ["load_model", "add_weights", "load_state_dict_strict", "file_sha256"]

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"device={device!r} is not a torch device ({exc}); expected e.g. 'cpu', 'cuda', 'cuda:1'") from exc


def load_state_dict_strict(model: EmbeddingModel, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` into ``model``; every missing, unexpected or mis-shaped key is named, NaN/inf refused.

    Raises:
        WeightsError: listing the keys that do not fit, or those holding non-finite values.
    """
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    msg = fit_message(model.config, own, {k: tuple(v.shape) for k, v in state.items()}, source=source)
    if msg:
        raise WeightsError(msg)
    check_finite(state, source=source)
    model.load_state_dict(dict(state), strict=False)  # strictness checked above, optional keys allowed


def _read_config_json(cfg_path: Path) -> tuple[dict[str, Any], ModelConfig, PreprocessConfig]:
    """``config.json`` → (its fields, the model config, the preprocessing); every invalid value a WeightsError."""
    try:
        text = cfg_path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read {cfg_path}: {exc}") from exc
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{cfg_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise WeightsError(f"{cfg_path} holds a JSON {type(meta).__name__}; expected an object with format_version, "
                           "model and preprocess (as written by save_pretrained)")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightsError(f"{cfg_path} has format_version={version!r}; this dino_boc reads {FORMAT_VERSION}")
    for key, kind in (("name", str), ("card", dict), ("pretrained", bool)):
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise WeightsError(f"{cfg_path}: {key!r} is a {type(meta[key]).__name__}; expected a {kind.__name__}")
    if "model" not in meta:
        raise WeightsError(f"{cfg_path} has an invalid model section: no 'model' key")
    try:
        config = ModelConfig.from_dict(meta["model"])
        preprocess = PreprocessConfig.from_dict(meta.get("preprocess", {}))
    except (ConfigError, TypeError) as exc:
        raise WeightsError(f"{cfg_path} has an invalid model section: {exc}") from exc
    return meta, config, preprocess


def _from_folder(folder: Path, *, name: str, device: torch.device) -> EmbeddingModel:
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise WeightsError(f"{folder} must hold {CONFIG_NAME} and {WEIGHTS_NAME} (as written by save_pretrained)")
    meta, config, preprocess = _read_config_json(cfg_path)
    # shapes from the header first: nothing is built for a config the file does not back
    check_weights_fit(config, safetensors_shapes(w_path), source=str(w_path))
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
    model.weights_sha256 = file_sha256(w_path)
    return model.to(device).eval()


def _from_checkpoint(path: Path, *, name: str, device: torch.device, num_heads: int | None,
                     preprocess: PreprocessConfig | None = None) -> EmbeddingModel:
    state, ignored = normalize_state_dict(read_checkpoint(path))
    if ignored:
        logger.info("%s: ignoring %d keys inference does not use (%s ...)", path, len(ignored), ignored[0])
    config = infer_config(state, num_heads=num_heads)
    state = {f"backbone.{k}": v for k, v in state.items()}
    check_weights_fit(config, {k: tuple(v.shape) for k, v in state.items()}, source=str(path))
    model = build_model(config, preprocess=preprocess, name=name)
    load_state_dict_strict(model, {k: v.float() for k, v in state.items()}, source=str(path))
    model.pretrained = True
    model.weights_sha256 = file_sha256(path)
    return model.to(device).eval()


def _is_cached_name(spec: str) -> bool:
    try:
        return is_model_folder(cache_folder(cache_dir(), spec))
    except (ConfigError, WeightsError):
        return False


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


def _from_hub(repo_id: str, *, revision: str | None, device: torch.device) -> EmbeddingModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    check_revision(revision)  # huggingface_hub joins it to paths of its cache when offline
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "*.md"])
    except LocalEntryNotFoundError as exc:
        raise ModelNotFoundError(
            f"Hub repo {repo_id!r} (revision {revision or 'main'}) is not in the local cache and the Hub cannot be "
            f"reached (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}); download it once with network access "
            "or pass a local folder"
        ) from exc
    except HFValidationError as exc:
        raise ModelNotFoundError(
            f"{repo_id!r} is not a valid Hub repo id ({exc}); expected 'org/name' of letters, digits, '-', '_', '.'"
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelNotFoundError(f"Hub repo {repo_id!r} could not be fetched: {exc}") from exc
    return _from_folder(Path(folder), name=f"hf-hub:{repo_id}", device=device)


def load_model(
    name_or_path: str | os.PathLike = "dino-boc-vitl16",
    *,
    device: str | torch.device | None = None,
    revision: str | None = None,
    num_heads: int | None = None,
) -> EmbeddingModel:
    """Load a model for :func:`dino_boc.embed`.

    Args:
        name_or_path: one of

            * a registry name (:func:`dino_boc.list_models`), e.g. ``"dino-boc-vitl16"`` (the paper's ViT-L/16,
              gated: found in the cache after ``dino-boc weights add CHECKPOINT.pth``);
            * ``"hf-hub:org/repo"`` or ``"org/repo"``: a Hugging Face Hub repo in the dino_boc format
              (cached; ``HF_HUB_OFFLINE=1`` honoured);
            * a name given to ``dino-boc weights add --name`` (a model folder in :func:`cache_dir`);
            * a folder written by ``save_pretrained`` (``config.json`` + ``model.safetensors``);
            * a released checkpoint file (``.pth``/``.pt``/``.safetensors``): chunked or plain keys, or a
              training checkpoint ``{"teacher": ...}``; the architecture is inferred from the tensors.
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
        revision: Hub revision to pin: a branch or tag name, or a 40-hex commit.
        num_heads: heads for a checkpoint file (default D / 64).

    Returns:
        The model in eval mode on ``device``.

    Raises:
        ModelNotFoundError: an unknown name, path or repo (close names are suggested), or a Hub id that
            huggingface_hub rejects.
        ConfigError: a revision that is neither a branch/tag name nor a 40-hex commit.
        WeightsError: weights missing (gated: where to request them), corrupt, or not fitting.
    """
    dev = _resolve_device(device)
    spec = os.fspath(name_or_path)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_folder(path, name=str(path), device=dev)
    if path.is_file():
        if path.suffix in (".pth", ".pt", ".bin", ".safetensors"):
            return _from_checkpoint(path, name=path.stem, device=dev, num_heads=num_heads)
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
            return _from_hub(entry.hf_hub_id, revision=revision or entry.revision, device=dev)
        raise _missing_gated(entry, looked)
    if _is_cached_name(spec):  # a name given to 'dino-boc weights add --name' that the registry lacks
        return _from_folder(cache_dir() / spec, name=spec, device=dev)
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


def add_weights(
    checkpoint: str | os.PathLike, *, name: str = "dino-boc-vitl16", num_heads: int | None = None,
    sha256: str | None = None,
) -> Path:
    """Convert a released checkpoint once, verify it, and cache it in the Hub format under
    :func:`~dino_boc.weights.registry.cache_dir` ``/ name``, where ``load_model(name)`` finds it.

    Args:
        checkpoint: the downloaded ``.pth``.
        name: registry name to store it under: one folder name (letters, digits, ``.``, ``_``, ``-``).
        num_heads: heads, default D / 64.
        sha256: if given, the checkpoint file's expected SHA-256.

    Returns:
        The cache folder.

    Raises:
        ConfigError: ``name`` is not one safe folder name (letters, digits, ``.``, ``_``, ``-``), or names a
            shipped or random registry model (load_model would never read the cached weights).
        WeightsError: unreadable, mismatching hash, weights that do not fit / give non-finite features, or
            ``cache_dir() / name`` exists but is not a model folder cached by dino_boc (it is left untouched).
    """
    check_model_name(name)  # before any work: the name becomes a folder inside the cache
    if name in REGISTRY and REGISTRY[name].source in ("packaged", "random"):
        raise ConfigError(
            f"{name!r} is a {REGISTRY[name].source} model of the registry, which load_model({name!r}) always "
            "returns; cached weights under that name would never be used — choose another --name"
        )
    target = cache_folder(cache_dir(), name)
    check_replaceable(target)  # refused before the conversion; checked again just before the swap
    src = Path(checkpoint).expanduser()
    if not src.is_file():
        raise WeightsError(f"checkpoint {src} does not exist")
    digest = file_sha256(src)
    if sha256 and digest != sha256.lower():
        raise WeightsError(f"{src} has SHA-256 {digest}, expected {sha256}; the download may be corrupt")
    entry = REGISTRY.get(name)
    preprocess = entry.preprocess if entry else None
    model = _from_checkpoint(src, name=name, device=torch.device("cpu"), num_heads=num_heads, preprocess=preprocess)
    if entry is not None and entry.config != model.config:
        raise WeightsError(f"{src} holds a {model.config} model, but {name!r} is registered as {entry.config}")
    p = model.config.patch_size
    with torch.inference_mode():
        out = model.forward_tokens(torch.randn(1, 2, 2 * p, 2 * p, generator=torch.Generator().manual_seed(0)))
    if not torch.isfinite(out.patch).all():
        raise WeightsError(f"{src} gives non-finite features; the checkpoint is corrupt")
    model.card = {
        "summary": entry.description if entry else f"converted from {src.name}",
        "source_checkpoint": src.name, "source_sha256": digest,
        "licence": entry.licence if entry else "", "paper": entry.paper if entry else "",
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_model_folder(target, model.save_pretrained, marker={"name": name, "source_sha256": digest})
    logger.info("cached %s as %r in %s", src, name, target)
    return target
