"""Pre-processing: raw ``(K, H, W)`` arrays -> the float tensors a model sees."""

from __future__ import annotations

import numpy as np
import torch

from dino_boc.errors import InputError
from dino_boc.preprocess.config import NORMALIZE_CHOICES, PreprocessConfig
from dino_boc.preprocess.geometry import center_crop, resize_shorter, resize_square
from dino_boc.preprocess.intensity import normalize_image, saturation_noise, scale_intensity, self_normalize
from dino_boc.preprocess.tiles import FIT_TO_PATCH, fit_to_patch

__all__ = [
    "PreprocessConfig", "NORMALIZE_CHOICES", "FIT_TO_PATCH", "prepare_image", "to_float_tensor", "self_normalize",
]


def to_float_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate a ``(K, H, W)`` image and return it as a float32 CPU tensor.

    Raises:
        InputError: wrong number of dimensions, 0 channels, empty, a non-numeric or boolean dtype, or
            non-finite values.
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().to("cpu")
        kind = "bool" if t.dtype == torch.bool else ("complex" if t.is_complex() else "num")
    else:
        arr = np.asarray(image)
        if arr.dtype == bool:
            kind = "bool"
        elif np.issubdtype(arr.dtype, np.complexfloating):
            kind = "complex"
        elif not np.issubdtype(arr.dtype, np.number):
            raise InputError(f"image has dtype {arr.dtype}; expected integers or floats")
        else:
            kind = "num"
        t = None if kind != "num" else torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32, copy=False))
    if kind != "num":
        raise InputError(f"image has a {kind} dtype; expected integers or floats (convert masks with .astype(np.uint8))")
    if t.ndim != 3:
        raise InputError(
            f"image has {t.ndim} dimensions {tuple(t.shape)}; expected (K, H, W) — add a channel axis for a 2-D "
            "image (img[None]) or pass dims= when reading a file whose axes are wrong"
        )
    if t.shape[0] == 0:
        raise InputError("image has 0 channels; expected (K, H, W) with K >= 1 — pass dims='CYX' if the file's axes are wrong")
    if t.shape[1] == 0 or t.shape[2] == 0:
        raise InputError(f"image is empty: shape {tuple(t.shape)}")
    t = t.float()
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).flatten(1).any(1).nonzero().flatten().tolist()
        raise InputError(f"image has NaN or infinite values in channel(s) {bad}; fix or drop them (np.nan_to_num)")
    return t


def prepare_image(
    image: np.ndarray | torch.Tensor, cfg: PreprocessConfig, patch_size: int, *, fit: bool = True
) -> torch.Tensor:
    """The released pre-processing of one image, and the one size rule of :func:`dino_boc.embed` and the CLI.

    ``x / 255`` (unless ``normalize="none"``) -> ``resize`` (shorter side, bicubic, no antialias) ->
    ``crop`` (centre, zero padding) -> per-channel normalisation. With no ``crop`` (and ``fit``), a side
    that is not a multiple of the patch is centre-cropped to the largest multiple (:data:`FIT_TO_PATCH`:
    at most ``patch_size - 1`` pixels per axis, torchvision's offsets), so any field embeds whole. The zoo
    recipes add MorphEm's saturation noise on uint8 images (first), normalise before resizing
    (``normalize_before_resize``) and resize to a square (``resize_mode="square"``); see
    :class:`PreprocessConfig`.

    Args:
        image: ``(K, H, W)``, any integer or float dtype.
        cfg: the settings.
        patch_size: the model's patch; the final H, W are multiples of it.
        fit: apply the rule above; False makes such a size an error.

    Returns:
        float32 ``(K, H', W')``.

    Raises:
        InputError: invalid image, smaller than a patch, or (with ``crop`` or without ``fit``) a final size
            that is not a multiple of the patch.
    """
    x = to_float_tensor(image)
    if cfg.saturation_noise is not None and _is_uint8(image):
        x = saturation_noise(x, *cfg.saturation_noise, seed=cfg.noise_seed)
    x = scale_intensity(x, cfg)
    if cfg.normalize_before_resize:
        x = normalize_image(x, cfg)
    if cfg.resize is not None:
        resize = resize_square if cfg.resize_mode == "square" else resize_shorter
        x = resize(x, cfg.resize, interpolation=cfg.interpolation, antialias=cfg.antialias)
    if cfg.crop is not None:
        x = center_crop(x, cfg.crop)
    elif fit:
        x = fit_to_patch(x, patch_size)
    h, w = x.shape[-2:]
    if h < patch_size or w < patch_size:
        raise InputError(
            f"image is {h}x{w} pixels, smaller than one {patch_size}x{patch_size} patch; "
            f"pass resize={patch_size * 2} or crop= to enlarge it"
        )
    if h % patch_size or w % patch_size:
        suggestion = (min(h, w) // patch_size) * patch_size
        raise InputError(
            f"image is {h}x{w} pixels after resize/crop, not a multiple of the patch size {patch_size}; "
            f"pass crop={suggestion} (centre crop) or resize= with crop="
        )
    return x if cfg.normalize_before_resize else normalize_image(x, cfg)


def _is_uint8(image: np.ndarray | torch.Tensor) -> bool:
    return image.dtype == torch.uint8 if isinstance(image, torch.Tensor) else np.asarray(image).dtype == np.uint8
