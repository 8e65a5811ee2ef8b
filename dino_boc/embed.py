"""``embed()``: features of in-memory images (or a few files) with any number and order of channels."""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch

from dino_boc.engine import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, default_model, get_model, resolve_preprocess, run_tensors
from dino_boc.errors import ConfigError, InputError
from dino_boc.features import ChannelPool, Embedding, flatten
from dino_boc.models.base import EmbeddingModel
from dino_boc.models.config import FeatureSpec
from dino_boc.preprocess import FIT_TO_PATCH, prepare_image
from dino_boc.precision import DEFAULT_PRECISION, Precision, autocast_context
from dino_boc.preprocess.channels import rename_channels, resolve_channels
from dino_boc.preprocess.config import Normalize
from dino_boc.preprocess.geometry import resized_shape

# the batching engine (default_model, run_tensors, resolve_preprocess, DEFAULT_MODEL) is dino_boc.engine; these
# names stay importable from here
__all__ = [
    "embed", "embed_tokens", "Precision", "default_model", "autocast_context", "run_tensors", "resolve_preprocess",
    "DEFAULT_MODEL",
]

logger = logging.getLogger(__name__)

ImageLike = Union[np.ndarray, torch.Tensor, str, os.PathLike]

def _read_items(images: Any, storage_options: Mapping[str, Any] | None = None
                ) -> tuple[list[tuple[Any, list[str] | None]], str, list[int]]:
    """Normalise the accepted inputs to a list of ``(array (K, H, W), names)`` (paths and URLs read with
    ``storage_options``).

    Returns:
        items, the structure (``"single"``, ``"batch"`` or ``"list"``) and, for lists, how many images each
        entry contributed (1 for ``(K, H, W)``/paths, B for ``(B, K, H, W)``; -1 marks a single one).
    """
    if isinstance(images, (str, os.PathLike)):
        from dino_boc.io import read_image

        arr, names = read_image(images, storage_options=storage_options)
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
            sub, structure, _ = _read_items(entry, storage_options)
            if structure == "list":
                raise InputError("nested lists of images are not supported; flatten the list")
            items += sub
            counts.append(-1 if structure == "single" else len(sub))
        return items, "list", counts
    raise InputError(
        f"images of type {type(images).__name__} are not supported; pass a numpy array or torch tensor "
        "(K, H, W) / (B, K, H, W), a TIFF path, or a list of these"
    )


def _layout(model: EmbeddingModel, n_last_blocks: int | None, avgpool: bool | None) -> FeatureSpec:
    """The call's feature layout over the model's default (``model.features``).

    Raises:
        InputError: ``n_last_blocks`` outside ``0..depth``, or a layout with no feature left.
    """
    depth = model.config.depth
    n = model.features.n_last_blocks if n_last_blocks is None else n_last_blocks
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= depth:
        raise InputError(f"n_last_blocks={n} but the model has {depth} blocks; choose 1..{depth} "
                         "(or 0: no CLS token, only the patch means)")
    try:
        return model.features.override(n_last_blocks=n, avgpool=avgpool)
    except ConfigError as exc:  # an argument of this call: n_last_blocks=0 with avgpool=False
        raise InputError(str(exc)) from None


def _stack(parts: list[np.ndarray | None]) -> np.ndarray | None:
    return None if parts[0] is None else np.stack(parts)


def embed_tokens(
    images: Any,
    channels: Sequence[int | str] | None = None,
    *,
    model: EmbeddingModel | str | None = None,
    n_last_blocks: int | None = None,
    avgpool: bool | None = None,
    resize: int | None = None,
    crop: int | None = None,
    normalize: Normalize | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: Precision = DEFAULT_PRECISION,
    channel_ids: Sequence[int | str] | None = None,
    channel_names: Sequence[str] | None = None,
    compile: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Embedding | list[Embedding]:
    """Structured per-channel features; the options are those of :func:`embed`.

    Returns:
        An :class:`~dino_boc.features.Embedding` with a leading batch axis B (B = 1 for one
        ``(K, H, W)`` image), or, for a list input, a list of them (one per entry).
    """
    model = get_model(model)
    spec = _layout(model, n_last_blocks, avgpool)
    n_last_blocks, avgpool = spec.n_last_blocks, spec.avgpool
    if compile and getattr(model, "_compiled_call_impl", None) is None:
        model.compile()  # torch.compile, once per model; later calls reuse it
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r} must be a positive integer (channel-images per forward)")
    cfg = resolve_preprocess(model, resize, crop, normalize)
    items, structure, counts = _read_items(images, storage_options)
    tensors, names_per_image, fitted = [], [], []
    for arr, names in items:
        k = arr.shape[0] if getattr(arr, "ndim", 0) == 3 else 0
        if k and model.config.arch == "fixed":  # the image's names mapped onto the model's channel order
            sel = model.select_channels(channels, k, names)
            names = list(model.config.channel_names)
        else:
            sel = resolve_channels(channels, k, names) if k else None
        if sel is not None and sel != list(range(k)):
            arr = arr[sel]
            if model.config.arch != "fixed":
                names = [names[i] for i in sel] if names else None
        tensors.append(prepare_image(arr, cfg, model.config.patch_size))
        before = resized_shape(*arr.shape[-2:], cfg.resize, mode=cfg.resize_mode) if cfg.crop is None else None
        if before is not None and tuple(tensors[-1].shape[-2:]) != before:
            fitted.append((before, tuple(tensors[-1].shape[-2:])))
        k = tensors[-1].shape[0]
        names_per_image.append(rename_channels(names, k, channel_names))
    if fitted:
        (h, w), (hh, ww) = fitted[0]
        logger.info(
            "%d of %d images centre-cropped to a multiple of the %d-pixel patch (%s; e.g. %dx%d -> %dx%d); pass crop= "
            "to choose the size", len(fitted), len(tensors), model.config.patch_size, FIT_TO_PATCH, h, w, hh, ww,
        )
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
    n_last_blocks: int | None = None,
    avgpool: bool | None = None,
    channel_pool: ChannelPool | None = None,
    resize: int | None = None,
    crop: int | None = None,
    normalize: Normalize | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: Precision = DEFAULT_PRECISION,
    channel_ids: Sequence[int | str] | None = None,
    channel_names: Sequence[str] | None = None,
    compile: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Feature vectors of microscopy images with any number and order of channels.

    Each image is pre-processed with the model's own recipe (``model.preprocess``; for the Cell-DINO
    models the released evaluation: ``x / 255``, optional resize and centre crop, per-channel
    self-normalisation; docs/models.md lists every model's), then its K channels go through the model. For BoC the
    channels of all images become ONE batch of single-channel images (chunked by ``batch_size``).

    Args:
        images: ``(K, H, W)`` or ``(B, K, H, W)`` numpy array / torch tensor of any integer or float dtype,
            a TIFF path (axes from its metadata), or a list of these (channel counts and sizes may differ).
        channels: select and order channels by index, or by name where the file names them. For a
            fixed-channel model (``model.config.arch == "fixed"``): the names of the image's channels in the
            image's order (or None when the file names them); they are matched to the model's channels
            and reordered, and a missing one is a ``ChannelError``.
        model: a loaded model, a name for :func:`dino_boc.load_model`, or None for the default
            (``"dino-boc-vitl16"``, loaded once and reused).
        n_last_blocks: L, CLS tokens of the last L blocks; None: the model's default (``model.features``:
            4 for the Cell-DINO models as released, 1 for MorphEm and DINOv2; 1 is the CHAMMI form).
        avgpool: append the per-channel mean of the last block's patch tokens; None: the model's default
            (True for Cell-DINO, False for MorphEm and DINOv2).
        channel_pool: ``"concat"`` (per-channel blocks) or ``"mean"`` (averaged over channels; App. K); None:
            the model's default (``"mean"`` for OpenPhenom's pooled embedding, else ``"concat"``).
        resize: shorter side after resizing (bicubic, no antialias); None: the model's default; 0: none.
        crop: centre-crop side after resizing; None: the model's default; 0: none. With no crop, a side
            that is not a multiple of the patch (16) is centre-cropped to the largest multiple (at most 15
            pixels; logged at INFO), the same rule as :func:`dino_boc.embed_dataset` and the CLI. A crop
            that is not a multiple of the patch is an error.
        normalize: ``"self"`` (released), ``"percentile"`` or ``"none"``; None: the model's default.
        batch_size: channel-images per forward pass (B·K).
        precision: ``"auto"`` (fp16 autocast on CUDA as released; bf16 autocast on CPUs with native bf16,
            AVX512-BF16 or AMX; fp32 elsewhere), ``"fp32"``, ``"fp16"`` (CUDA only), ``"bf16"``. Pass
            ``"fp32"`` to compare features with fp32 runs closer than bf16's cosine >= 0.9999.
        channel_ids: Channel-ViT only: channel-embedding ids (or names stored with the model) of the
            selected channels.
        channel_names: names of the selected channels, in order (replace the file's names or ``ch<i>``;
            :class:`~dino_boc.features.Embedding` ``channel_names``); one per channel kept.
        compile: compile the model with ``torch.compile`` on first use (worth it for many images of one
            size on a GPU; the first batch is slow). ``model.compile()`` beforehand has the same effect,
            also for :func:`dino_boc.embed_dataset`.
        storage_options: fsspec options for ``s3://``/``gs://`` paths among ``images`` (``{"anon": True}``,
            an ``endpoint_url``, credentials; see :func:`dino_boc.io.read_image`).

    Returns:
        float32 ``(F,)`` for one ``(K, H, W)`` image or path, ``(B, F)`` for a ``(B, K, H, W)`` batch, or a
        list of those for a list input. For BoC ``F = L·K·D + K·D`` (see docs/features.md, and
        ``dino_boc.feature_names(model, channels)`` for the column names).

    Raises:
        InputError: wrong dimensions, zero channels, non-finite values, an image smaller than a patch, a
            crop that is not a multiple of it, an unknown channel name or ``channel_names`` of another
            count (``ChannelError``).
        ModelNotFoundError, WeightsError: the model cannot be loaded.

    Example:
        >>> feats = dino_boc.embed(img)                      # img: (K, H, W)
        >>> feats = dino_boc.embed("plate1_A01.tif", channels=["DNA", "Mito"], crop=224)
    """
    model = get_model(model)
    channel_pool = model.features.override(channel_pool=channel_pool).channel_pool  # checked before any work
    emb = embed_tokens(
        images, channels, model=model, n_last_blocks=n_last_blocks, avgpool=avgpool, resize=resize, crop=crop,
        normalize=normalize, batch_size=batch_size, precision=precision, channel_ids=channel_ids,
        channel_names=channel_names, compile=compile, storage_options=storage_options,
    )
    if isinstance(emb, list):
        singles = [not (isinstance(e, (np.ndarray, torch.Tensor)) and e.ndim == 4) for e in images]
        return [flatten(e, channel_pool=channel_pool)[0 if one else slice(None)] for e, one in zip(emb, singles)]
    feats = flatten(emb, channel_pool=channel_pool)
    single = not (isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4)
    return feats[0] if single else feats
