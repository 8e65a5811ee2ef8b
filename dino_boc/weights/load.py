"""``load_model``: registry names, Hub repos, ``save_pretrained`` folders and released checkpoint files."""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from dino_boc.errors import ConfigError, ModelNotFoundError, WeightsError
from dino_boc.io.digest import file_sha256
from dino_boc.models import EmbeddingModel, FeatureDefaults, ModelConfig, build_model
from dino_boc.models.hub_format import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME
from dino_boc.precision import resolve_device
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
from dino_boc.weights.download import check_sha256_prefix, download, is_url, public_url
from dino_boc.weights.native import FAMILIES, convert_native, detect_family, family_defaults
from dino_boc.weights.registry import DEFAULT_MODEL, REGISTRY, RegistryEntry, cache_dir, packaged_dir

__all__ = ["load_model", "add_weights", "load_state_dict_strict", "file_sha256"]

logger = logging.getLogger(__name__)

#: explicit spellings of a load_model spec (timm's ``hf-hub:`` and ``local-dir:``)
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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


def _read_config_json(cfg_path: Path) -> tuple[dict[str, Any], ModelConfig, PreprocessConfig, FeatureDefaults]:
    """``config.json`` → (its fields, the model config, the preprocessing, the default feature); every invalid
    value a WeightsError."""
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
        features = meta.get("features", {})
        if not isinstance(features, dict):
            raise ConfigError(f"'features' is a {type(features).__name__}; expected an object")
        features = FeatureDefaults.from_dict(features)
    except (ConfigError, TypeError) as exc:
        raise WeightsError(f"{cfg_path} has an invalid model section: {exc}") from exc
    return meta, config, preprocess, features


def _from_folder(folder: Path, *, name: str, device: torch.device, source: str = "",
                 revision: str | None = None) -> EmbeddingModel:
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise WeightsError(f"{folder} must hold {CONFIG_NAME} and {WEIGHTS_NAME} (as written by save_pretrained)")
    meta, config, preprocess, features = _read_config_json(cfg_path)
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
    model.features = features
    _attach(model, source=source or str(folder), revision=revision, weights=w_path)
    return model.to(device).eval()


def _from_checkpoint(path: Path, *, name: str, device: torch.device, num_heads: int | None,
                     preprocess: PreprocessConfig | None = None,
                     raw: Mapping[str, Any] | None = None, entry: RegistryEntry | None = None) -> EmbeddingModel:
    state, ignored = normalize_state_dict(read_checkpoint(path) if raw is None else raw)
    if ignored:
        logger.info("%s: ignoring %d keys inference does not use (%s ...)", path, len(ignored), ignored[0])
    fixed = entry.config.channel_names if entry is not None and entry.config.arch == "fixed" else ()
    config = infer_config(state, num_heads=num_heads if num_heads is not None else (entry.config.num_heads if fixed else None),
                          channel_names=fixed)
    state = {f"backbone.{k}": v for k, v in state.items()}
    check_weights_fit(config, {k: tuple(v.shape) for k, v in state.items()}, source=str(path))
    model = build_model(config, preprocess=preprocess, name=name)
    if entry is not None:
        model.features = entry.features
    load_state_dict_strict(model, {k: v.float() for k, v in state.items()}, source=str(path))
    model.pretrained = True
    _attach(model, source=str(path), revision=None, weights=path)
    return model.to(device).eval()


def _attach(model: EmbeddingModel, *, source: str, revision: str | None, weights: Path | None) -> None:
    """Record where the weights came from in ``model.pretrained_cfg`` (the one place for it)."""
    cfg = model.pretrained_cfg
    cfg.source, cfg.revision = source, revision
    cfg.weights_sha256 = file_sha256(weights) if weights is not None else None


def _is_cached_name(spec: str) -> bool:
    try:
        return is_model_folder(cache_folder(cache_dir(), spec))
    except (ConfigError, WeightsError):
        return False


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
    heads = num_heads if num_heads is not None else (
        entry.config.num_heads if entry and entry.config.embed_dim == _dim(raw) else None)
    config, state = convert_native(raw, family, num_heads=heads)
    preprocess, features = family_defaults(family)
    if entry is not None:
        preprocess, features = entry.preprocess, entry.features
    model = build_model(config, preprocess=preprocess, name=name)
    load_state_dict_strict(model, state, source=str(path))
    model.features = features
    model.pretrained = True
    _attach(model, source=source or str(path), revision=revision, weights=path)
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
    _attach(model, source="random", revision=None, weights=None)
    return model.to(device).eval()


def _from_hub(repo_id: str, *, revision: str | None, device: torch.device,
              entry: RegistryEntry | None = None) -> EmbeddingModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    check_revision(revision)  # huggingface_hub joins it to paths of its cache when offline
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
    except HFValidationError as exc:
        raise ModelNotFoundError(
            f"{repo_id!r} is not a valid Hub repo id ({exc}); expected 'org/name' of letters, digits, '-', '_', '.'"
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelNotFoundError(f"Hub repo {repo_id!r} could not be fetched: {exc}") from exc
    if native:
        weights = Path(folder) / entry.filename
        if not weights.is_file():
            raise WeightsError(f"Hub repo {repo_id!r} (revision {revision or 'main'}) has no {entry.filename}")
        return _from_native(weights, family=entry.family, name=entry.name, device=device, num_heads=None,
                            entry=entry, source=f"hf-hub:{repo_id}", revision=revision or Path(folder).name)
    return _from_folder(Path(folder), name=f"hf-hub:{repo_id}", device=device, source=f"hf-hub:{repo_id}",
                        revision=Path(folder).name)


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
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
              (cached; ``HF_HUB_OFFLINE=1`` honoured); a bare ``org/repo`` that is also a local path (or
              whose ``org`` folder exists) is refused as ambiguous: write ``hf-hub:org/repo`` or
              ``local-dir:org/repo``;
            * ``"local-dir:PATH"``: the folder or file at PATH, never the Hub;
            * a name given to ``dino-boc weights add --name`` (a model folder in :func:`cache_dir`);
            * a folder written by ``save_pretrained`` (``config.json`` + ``model.safetensors``);
            * a released checkpoint file (``.pth``/``.pt``/``.safetensors``): chunked or plain keys, or a
              training checkpoint ``{"teacher": ...}``; the architecture is inferred from the tensors;
            * a zoo model's native weights file or Hub snapshot folder (MorphEm, timm DINOv2), recognised
              by its keys and given that model's published pre-processing and feature (docs/models.md).
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
        revision: Hub revision to pin: a branch or tag name, or a 40-hex commit.
        num_heads: heads for a checkpoint file (default D / 64).
        family: force the layout of a file or folder (``"dino_boc"``, ``"morphem"``, ``"timm_dinov2"``)
            instead of recognising it by its keys.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        ModelNotFoundError: an unknown name, path or repo (close names are suggested), a Hub id that
            huggingface_hub rejects, or an ambiguous ``org/name`` (both spellings suggested).
        ConfigError: a revision that is neither a branch/tag name nor a 40-hex commit.
        WeightsError: weights missing (gated: where to request them), corrupt, or not fitting.
    """
    dev = resolve_device(device)
    spec = os.fspath(name_or_path)
    if spec.startswith(HF_HUB_PREFIX):
        return _from_hub(spec[len(HF_HUB_PREFIX):], revision=revision, device=dev)
    explicit_local = spec.startswith(LOCAL_DIR_PREFIX)
    if explicit_local:
        spec = spec[len(LOCAL_DIR_PREFIX):]
    path = Path(spec).expanduser()
    if explicit_local and not path.exists():
        raise ModelNotFoundError(f"{LOCAL_DIR_PREFIX}{spec}: no such folder or file ({path.resolve()}); check the path")
    if not explicit_local and _is_ambiguous(spec, path):
        raise ModelNotFoundError(
            f"model {spec!r} could be the local path {str(path.resolve())!r} or the Hugging Face Hub repo "
            f"{spec!r}; write '{LOCAL_DIR_PREFIX}{spec}' for the folder or '{HF_HUB_PREFIX}{spec}' for the Hub repo"
        )
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
    if _is_cached_name(spec):  # a name given to 'dino-boc weights add --name' that the registry lacks
        return _from_folder(cache_dir() / spec, name=spec, device=dev)
    if explicit_local:  # pragma: no cover - an existing path returned above
        raise ModelNotFoundError(f"{LOCAL_DIR_PREFIX}{spec} is neither a folder nor a weights file")
    if _is_hub_shaped(spec):
        return _from_hub(spec, revision=revision, device=dev)
    close = difflib.get_close_matches(spec, list(REGISTRY), n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ModelNotFoundError(
        f"unknown model {spec!r}: not a registry name, an existing path, or a Hub repo 'org/name'.{hint} "
        f"Known names: {sorted(REGISTRY)} (dino_boc.list_models())"
    )


def _is_hub_shaped(spec: str) -> bool:
    """``org/name`` written relative (no ``./``, ``/`` or ``~``): what a Hub repo id looks like."""
    return bool(_HUB_ID.match(spec)) and not spec.startswith((".", "/", "~"))


def _is_ambiguous(spec: str, path: Path) -> bool:
    """A bare ``org/name`` that also names a local folder, or whose ``org`` folder exists here: refuse to guess
    (as timm's ``parse_model_name``) and ask for ``local-dir:`` or ``hf-hub:``."""
    return _is_hub_shaped(spec) and spec not in REGISTRY and not path.is_file() and (path.exists() or path.parent.exists())


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
    checkpoint: str | os.PathLike, *, name: str = DEFAULT_MODEL, num_heads: int | None = None,
    sha256: str | None = None, progress: bool = True,
) -> Path:
    """Convert a released checkpoint once, verify it, and cache it in the Hub format under
    :func:`~dino_boc.weights.registry.cache_dir` ``/ name``, where ``load_model(name)`` finds it.

    A URL is downloaded first into ``cache_dir() / "downloads"`` (resumable; :mod:`dino_boc.weights.download`).
    A file whose released name carries a SHA-256 prefix (``...-ef7c17ff.pth``) must hash to it. The
    registry's licence is logged and recorded in the cached ``config.json``.

    Args:
        checkpoint: the downloaded ``.pth``, or its ``http(s)://`` URL (e.g. the signed link e-mailed to you).
        name: registry name to store it under: one folder name (letters, digits, ``.``, ``_``, ``-``).
        num_heads: heads, default D / 64.
        sha256: if given, the checkpoint file's expected SHA-256 (instead of the prefix in its name).
        progress: show a download progress bar.

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
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_model_folder(target, model.save_pretrained, marker={"name": name, "source_sha256": digest})
    logger.info("cached %s as %r in %s", src, name, target)
    return target
