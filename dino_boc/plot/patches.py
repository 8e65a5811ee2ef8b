"""``patch_maps()``: per channel, the input, a PCA colouring of its patch tokens and the CLS attention."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from dino_boc.errors import InputError
from dino_boc.models.backbone import attention_qkv
from dino_boc.models.base import EmbeddingModel
from dino_boc.plot._common import display_scale, matplotlib_figure, pca, read_any_image, save_figure
from dino_boc.weights.resolve import as_model

__all__ = ["patch_maps", "attention_maps", "patch_pca"]


def _as_input(image_tensor: torch.Tensor | np.ndarray, model: EmbeddingModel) -> torch.Tensor:
    """A pre-processed ``(K, H, W)`` or ``(1, K, H, W)`` image -> ``(1, K, H, W)`` float on the model's device."""
    x = torch.as_tensor(image_tensor)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise InputError(f"expected one pre-processed image (K, H, W), got shape {tuple(x.shape)}")
    return x.to(next(model.parameters()).device, torch.float32)


@torch.inference_mode()
def attention_maps(
    image_tensor: torch.Tensor | np.ndarray, model: EmbeddingModel, *, with_cls: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """CLS-token attention of the last block, per channel and head (BoC models).

    Each channel goes through the backbone on its own (as BoC encodes it). Blocks ``0..depth-2`` run as
    usual; for the last block the attention probabilities ``softmax(q_cls · kᵀ · scale)`` are computed
    from its ``norm1`` and ``qkv`` weights.

    Args:
        image_tensor: one pre-processed image ``(K, H, W)`` (or ``(1, K, H, W)``), as
            :func:`dino_boc.preprocess.prepare_image` returns it; H, W multiples of the patch.
        model: a BoC model.
        with_cls: also return the CLS -> CLS weight.

    Returns:
        float32 ``(K, heads, rows, cols)``: the attention of the CLS token to each patch; with
        ``with_cls`` also ``(K, heads)``, the CLS -> CLS weight (each head's row sums to 1 with it).

    Raises:
        InputError: a model that is not BoC (HA and Channel-ViT mix channels inside attention), or an
            image of the wrong shape.
    """
    if model.config.arch != "boc":
        raise InputError(
            f"attention maps are computed for Bag-of-Channels models; this model is {model.config.arch!r}, whose "
            "attention mixes channels — call patch_maps(..., attention=False) for the patch-token maps only"
        )
    x = _as_input(image_tensor, model)
    _, k, h, w = x.shape
    model._check_input(x, 1)
    bb = model.backbone
    p = model.config.patch_size
    rows, cols = h // p, w // p
    t = bb.prepare_tokens(x.reshape(k, 1, h, w))  # (K, 1+N, D)
    for i in range(model.config.depth - 1):
        t = bb.blocks[i](t)
    attn = bb.blocks[-1].attn
    y = bb.blocks[-1].norm1(t)
    q, key, _ = attention_qkv(attn, y)  # (K, heads, 1+N, hd)
    logits = (q[:, :, :1] * attn.scale) @ key.transpose(-2, -1)  # (K, heads, 1, 1+N)
    probs = logits.float().softmax(dim=-1)[:, :, 0]  # (K, heads, 1+N)
    maps = probs[:, :, 1:].reshape(k, attn.num_heads, rows, cols).cpu().numpy()
    if with_cls:
        return maps, probs[:, :, 0].cpu().numpy()
    return maps


def patch_pca(patch: torch.Tensor | np.ndarray, grid: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """RGB picture of patch tokens: their first three principal components, each min-max scaled to [0, 1].

    Args:
        patch: ``(N, D)`` patch tokens of one channel.
        grid: ``(rows, cols)`` with ``rows * cols = N``.
        seed: seed of the randomised SVD for very large N.

    Returns:
        ``(rows, cols, 3)`` float32 in [0, 1]; patches with similar tokens get similar colours.
    """
    scores, _ = pca(patch, 3, seed=seed)
    lo, hi = scores.min(axis=0), scores.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    rgb = (scores - lo) / span
    return rgb.reshape(grid[0], grid[1], 3).astype(np.float32)


def _upsample(a: np.ndarray, p: int) -> np.ndarray:
    """Nearest-neighbour upsampling of the first two axes by the patch size (patches stay visible)."""
    return np.repeat(np.repeat(a, p, axis=0), p, axis=1)


def patch_maps(
    image: Any,
    *,
    model: EmbeddingModel | str | os.PathLike,
    channels: Sequence[int | str] | None = None,
    names: Sequence[str] | None = None,
    resize: int | None = None,
    crop: int | None = None,
    attention: bool = True,
    output: str | os.PathLike | None = None,
):
    """What the model sees in each channel: one row of panels per channel.

    Columns: the pre-processed input channel; an RGB map of the first three principal components of
    that channel's last-block patch tokens (PCA over the channel's N patches, each component min-max
    scaled — regions of one colour have similar features, as in the DINOv2 figures); and the last
    block's CLS attention to every patch, averaged over heads (bright = attended). Maps are shown at
    the image's size, one block per patch. With random weights both maps reflect intensity, not biology.

    Args:
        image: ``(K, H, W)`` array/tensor of any numeric dtype, or an image path.
        model: a dino_boc model, or a name or path for :func:`dino_boc.load_model` (loaded once per process).
        channels: select and order channels by index or name.
        names: K channel names of the whole image (default: the file's, else ``ch0..``).
        resize: shorter side after resizing; None: the model's default; 0: none.
        crop: centre-crop side; None: the model's default; 0: none. Pass ``crop=`` when H or W is not a
            multiple of the patch size.
        attention: add the attention column (BoC models only).
        output: save the figure there (``.png``, ``.svg`` or ``.pdf``).

    Returns:
        A matplotlib ``Figure`` with K rows; panels are labelled ``"input:<name>"``, ``"pca:<name>"`` and
        ``"attention:<name>"`` (``ax.get_label()``).

    Raises:
        InputError: bad image, a size that is not a multiple of the patch, ``attention=True`` with a
            non-BoC model. ChannelError: an unknown channel.
    """
    from dino_boc.preprocess import prepare_image
    from dino_boc.preprocess.channels import resolve_channels

    model = as_model(model, cache=True)
    arr, labels = read_any_image(image, None if names is None else list(names))
    sel = resolve_channels(channels, arr.shape[0], labels)
    arr, labels = arr[sel], [labels[i] for i in sel]
    changes = {key: (v or None) for key, v in (("resize", resize), ("crop", crop)) if v is not None}
    cfg = replace(model.preprocess, **changes)
    x = prepare_image(arr, cfg, model.config.patch_size)  # (K, H', W')
    with torch.inference_mode():
        out = model.forward_tokens(_as_input(x, model), n_last_blocks=1)
    patch = out.patch[0].float().cpu()  # (K, N, D)
    att = attention_maps(x, model).mean(axis=1) if attention else None  # (K, rows, cols)
    return _draw(x.numpy(), labels, patch, out.grid, att, model, output)


def _draw(x: np.ndarray, labels: list[str], patch: torch.Tensor, grid: tuple[int, int],
          att: np.ndarray | None, model: EmbeddingModel, output: str | os.PathLike | None):
    k, h, w = x.shape
    p = model.config.patch_size
    ncols = 3 if att is not None else 2
    side = 2.8
    fig = matplotlib_figure(figsize=(side * ncols + 0.6, side * k * h / w + 0.7), layout="constrained")
    axes = fig.subplots(k, ncols, squeeze=False)
    for i, name in enumerate(labels):
        panels = [("input", display_scale(x[i]), "gray"), ("pca", _upsample(patch_pca(patch[i], grid), p), None)]
        if att is not None:
            panels.append(("attention", _upsample(att[i], p), "inferno"))
        for j, (kind, img, cmap) in enumerate(panels):
            ax = axes[i, j]
            im = ax.imshow(img, cmap=cmap, interpolation="nearest")
            ax.set_label(f"{kind}:{name}")
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "attention":
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
        axes[i, 0].set_ylabel(name, fontsize=10)
    titles = ["input channel", "patch tokens: PCA 1-3 as RGB", "CLS attention, mean of heads"]
    for j in range(ncols):
        axes[0, j].set_title(titles[j], fontsize=10)
    state = "pretrained" if model.pretrained else "RANDOM weights"
    fig.suptitle(f"{model.name} ({state}), last block {model.config.depth - 1}", fontsize=10)
    save_figure(fig, output)
    return fig
