"""``embed()``: features of in-memory images (or a few files) with any number and order of channels."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import replace
from typing import Any, Literal, Sequence, Union

import numpy as np
import torch

from dino_boc.errors import InputError
from dino_boc.features import ChannelPool, flatten
from dino_boc.models.base import Embedding, EmbeddingModel
from dino_boc.preprocess import PreprocessConfig, prepare_image
from dino_boc.preprocess.channels import resolve_channels

__all__ = [
    "embed", "embed_tokens", "Precision", "default_model", "autocast_context", "run_tensors", "resolve_preprocess",
]

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "fp16", "bf16"]
ImageLike = Union[np.ndarray, torch.Tensor, str, os.PathLike]

_MODEL_CACHE: dict[tuple[str, str], EmbeddingModel] = {}
DEFAULT_MODEL = "dino-boc-vitl16"


def default_model(name: str = DEFAULT_MODEL, device: str | torch.device | None = None) -> EmbeddingModel:
    """Load ``name`` once per process and device, and reuse it."""
    from dino_boc.weights import load_model

    key = (name, str(device))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(name, device=device)
    return _MODEL_CACHE[key]


def autocast_context(device: torch.device, precision: Precision):
    """fp16 autocast on CUDA for ``"auto"`` (as released) or ``"fp16"``, bf16 for ``"bf16"``, else nothing."""
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise InputError(f"precision={precision!r}; choose 'auto', 'fp32', 'fp16' or 'bf16'")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu" and dtype == torch.float16:
        raise InputError("fp16 autocast is for CUDA; on CPU use precision='fp32' or 'bf16'")
    return torch.autocast(device_type=device.type, dtype=dtype)


def _read_items(images: Any) -> tuple[list[tuple[Any, list[str] | None]], str, list[int]]:
    """Normalise the accepted inputs to a list of ``(array (K, H, W), names)``.

    Returns:
        items, the structure (``"single"``, ``"batch"`` or ``"list"``) and, for lists, how many images each
        entry contributed (1 for ``(K, H, W)``/paths, B for ``(B, K, H, W)``; -1 marks a single one).
    """
    if isinstance(images, (str, os.PathLike)):
        from dino_boc.io import read_image

        arr, names = read_image(images)
        return [(arr, names)], "single", [-1]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim == 4:
            if images.shape[0] == 0:
                raise InputError("the batch is empty: shape (0, K, H, W)")
            return [(images[i], None) for i in range(images.shape[0])], "batch", [images.shape[0]]
        if images.ndim == 2:
            raise InputError(
                f"image has 2 dimensions {tuple(images.shape)}; expected (K, H, W) or (B, K, H, W) — "
                "use img[None] for a single-channel image"
            )
        return [(images, None)], "single", [-1]
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise InputError("images is an empty list; pass at least one image")
        items: list[tuple[Any, list[str] | None]] = []
        counts: list[int] = []
        for entry in images:
            sub, structure, _ = _read_items(entry)
            if structure == "list":
                raise InputError("nested lists of images are not supported; flatten the list")
            items += sub
            counts.append(-1 if structure == "single" else len(sub))
        return items, "list", counts
    raise InputError(
        f"images of type {type(images).__name__} are not supported; pass a numpy array or torch tensor "
        "(K, H, W) / (B, K, H, W), a TIFF path, or a list of these"
    )


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
        n_last_blocks: L.
        avgpool: also return the per-channel mean of the last block's patch tokens.
        batch_size: channel-images per forward pass: ``max(1, batch_size // K)`` images of one shape.
        precision: see :func:`autocast_context`.
        channel_ids: Channel-ViT only.

    Returns:
        Per tensor, ``(cls (L, K, D) | None, global_cls (L, D) | None, patch_mean (K, D) | None)``.
    """
    device = next(model.parameters()).device
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
                out = model(x, n_last_blocks=n_last_blocks, channel_ids=ids)
            # copies: the CLS tokens are views into every token of the batch, which would stay alive with them
            cls = None if out.cls is None else out.cls.float().cpu().numpy().copy()
            glob = None if out.global_cls is None else out.global_cls.float().cpu().numpy().copy()
            pm = out.patch.float().mean(dim=2).cpu().numpy() if avgpool else None
            for j, i in enumerate(chunk):
                results[i] = (
                    None if cls is None else cls[j], None if glob is None else glob[j], None if pm is None else pm[j]
                )
    return results


def _stack(parts: list[np.ndarray | None]) -> np.ndarray | None:
    return None if parts[0] is None else np.stack(parts)


def embed_tokens(
    images: Any,
    channels: Sequence[int | str] | None = None,
    *,
    model: EmbeddingModel | str | None = None,
    n_last_blocks: int = 4,
    avgpool: bool = True,
    resize: int | None = None,
    crop: int | None = None,
    normalize: Literal["self", "percentile", "none"] | None = None,
    batch_size: int = 256,
    precision: Precision = "auto",
    channel_ids: Sequence[int | str] | None = None,
    compile: bool = False,
) -> Embedding | list[Embedding]:
    """Structured per-channel features; the options are those of :func:`embed`.

    Returns:
        An :class:`~dino_boc.models.base.Embedding` with a leading batch axis B (B = 1 for one
        ``(K, H, W)`` image), or, for a list input, a list of them (one per entry).
    """
    model = _get_model(model)
    if compile and getattr(model, "_compiled_call_impl", None) is None:
        model.compile()  # torch.compile, once per model; later calls reuse it
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r} must be a positive integer (channel-images per forward)")
    cfg = resolve_preprocess(model, resize, crop, normalize)
    items, structure, counts = _read_items(images)
    tensors, names_per_image = [], []
    for arr, names in items:
        k = arr.shape[0] if getattr(arr, "ndim", 0) == 3 else 0
        sel = resolve_channels(channels, k, names) if k else None
        if sel is not None and sel != list(range(k)):
            arr = arr[sel]
            names = [names[i] for i in sel] if names else None
        tensors.append(prepare_image(arr, cfg, model.config.patch_size))
        k = tensors[-1].shape[0]
        names_per_image.append(list(names) if names else [f"ch{i}" for i in range(k)])
    res = run_tensors(model, tensors, n_last_blocks=n_last_blocks, avgpool=avgpool, batch_size=batch_size,
               precision=precision, channel_ids=channel_ids)
    first = model.config.depth - n_last_blocks
    blocks = tuple(range(first, model.config.depth))

    def pack(lo: int, hi: int) -> Embedding:
        part = res[lo:hi]
        return Embedding(
            cls=_stack([r[0] for r in part]), global_cls=_stack([r[1] for r in part]),
            patch_mean=_stack([r[2] for r in part]), channel_names=names_per_image[lo], blocks=blocks,
        )

    if structure != "list":
        return pack(0, len(res))
    out, pos = [], 0
    for c in counts:
        n = 1 if c == -1 else c
        out.append(pack(pos, pos + n))
        pos += n
    return out


def embed(
    images: Any,
    channels: Sequence[int | str] | None = None,
    *,
    model: EmbeddingModel | str | None = None,
    n_last_blocks: int = 4,
    avgpool: bool = True,
    channel_pool: ChannelPool = "concat",
    resize: int | None = None,
    crop: int | None = None,
    normalize: Literal["self", "percentile", "none"] | None = None,
    batch_size: int = 256,
    precision: Precision = "auto",
    channel_ids: Sequence[int | str] | None = None,
    compile: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """Feature vectors of microscopy images with any number and order of channels.

    Each image is pre-processed as the released DINO BoC evaluation (``x / 255``, optional resize and
    centre crop, per-channel self-normalisation), then its K channels go through the model. For BoC the
    channels of all images become ONE batch of single-channel images (chunked by ``batch_size``).

    Args:
        images: ``(K, H, W)`` or ``(B, K, H, W)`` numpy array / torch tensor of any integer or float dtype,
            a TIFF path (axes from its metadata), or a list of these (channel counts and sizes may differ).
        channels: select and order channels by index, or by name where the file names them.
        model: a loaded model, a name for :func:`dino_boc.load_model`, or None for the default
            (``"dino-boc-vitl16"``, loaded once and reused).
        n_last_blocks: L, CLS tokens of the last L blocks (4 as released; 1 for the CHAMMI form).
        avgpool: append the per-channel mean of the last block's patch tokens.
        channel_pool: ``"concat"`` (per-channel blocks) or ``"mean"`` (averaged over channels; App. K).
        resize: shorter side after resizing (bicubic, no antialias); None: the model's default; 0: none.
        crop: centre-crop side after resizing; None: the model's default; 0: none. A size that is not a
            multiple of the patch (16) is an error: pass ``crop=``.
        normalize: ``"self"`` (released), ``"percentile"`` or ``"none"``; None: the model's default.
        batch_size: channel-images per forward pass (B·K).
        precision: ``"auto"`` (fp32 on CPU, fp16 autocast on CUDA as released), ``"fp32"``, ``"fp16"``, ``"bf16"``.
        channel_ids: Channel-ViT only: channel-embedding ids (or names stored with the model) of the
            selected channels.
        compile: compile the model with ``torch.compile`` on first use (worth it for many images of one
            size on a GPU; the first batch is slow). ``model.compile()`` beforehand has the same effect,
            also for :func:`dino_boc.embed_dataset`.

    Returns:
        float32 ``(F,)`` for one ``(K, H, W)`` image or path, ``(B, F)`` for a ``(B, K, H, W)`` batch, or a
        list of those for a list input. For BoC ``F = L·K·D + K·D`` (see docs/features.md, and
        ``model.feature_names`` for the column names).

    Raises:
        InputError: wrong dimensions, zero channels, non-finite values, an image smaller than a patch or
            not a multiple of it, an unknown channel name (``ChannelError``).
        ModelNotFoundError, WeightsError: the model cannot be loaded.

    Example:
        >>> feats = dino_boc.embed(img)                      # img: (K, H, W)
        >>> feats = dino_boc.embed("plate1_A01.tif", channels=["DNA", "Mito"], crop=224)
    """
    emb = embed_tokens(
        images, channels, model=model, n_last_blocks=n_last_blocks, avgpool=avgpool, resize=resize, crop=crop,
        normalize=normalize, batch_size=batch_size, precision=precision, channel_ids=channel_ids, compile=compile,
    )
    if isinstance(emb, list):
        singles = [not (isinstance(e, (np.ndarray, torch.Tensor)) and e.ndim == 4) for e in images]
        return [flatten(e, channel_pool=channel_pool)[0 if one else slice(None)] for e, one in zip(emb, singles)]
    feats = flatten(emb, channel_pool=channel_pool)
    single = not (isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4)
    return feats[0] if single else feats


def _get_model(model: EmbeddingModel | str | None) -> EmbeddingModel:
    if model is None:
        return default_model()
    if isinstance(model, str):
        return default_model(model)
    if not isinstance(model, EmbeddingModel):
        raise InputError(f"model must be a dino_boc model or a model name, got {type(model).__name__}")
    return model
