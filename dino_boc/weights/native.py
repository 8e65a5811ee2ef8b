"""The zoo's native weight layouts -> dino_boc models: recognised by their keys, mapped strictly.

Families (``family=`` of :func:`dino_boc.load_model`):

* ``"dino_boc"``: the Cell-DINO / DINOv2 release layout (:mod:`dino_boc.weights.convert`).
* ``"morphem"``: MorphEm (CaicedoLab/MorphEm on the Hub, MIT): a DINO (v1) ViT with ``in_chans=1`` and
  no LayerScale, keys as in CHAMMI-75 ``benchmarks/feat_models/vision_transformer.py`` (``cls_token``,
  ``pos_embed``, ``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
  ``norm``).
* ``"timm_dinov2"``: timm's DINOv2 Hub weights (``timm/vit_*_dinov2*``): RGB patch embedding, LayerScale,
  optional register tokens (``reg_token``; their class position already folded into ``cls_token`` and
  ``pos_embed`` without the class row). The RGB replication and the ImageNet normalisation of CHAMMI-75's
  ``DinoV2`` class are folded into a one-channel patch embedding (:func:`fold_rgb_patch_embed`), so a
  K-channel image is one batch of B·K single-channel images, as for every BoC model.
* ``"openphenom"``: OpenPhenom (recursionpharma/OpenPhenom): the ``MAEModel`` state dict (keys
  ``encoder.vit_backbone.*`` plus the decoder, dropped), as a real safetensors file or as the torch archive
  ``{"state_dict": ...}`` that its ``save_pretrained`` writes under the name ``model.safetensors``.

Nothing here executes code from a weights repository: tensors are read with safetensors or
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import re
from typing import Literal, Mapping

import torch

from dino_boc.errors import WeightsError
from dino_boc.models.config import FeatureDefaults, ModelConfig
from dino_boc.preprocess.config import PreprocessConfig

__all__ = [
    "Family", "FAMILIES", "detect_family", "convert_native", "fold_rgb_patch_embed", "IMAGENET_MEAN",
    "IMAGENET_STD", "MORPHEM_PREPROCESS", "CHAMMI_DINOV2_PREPROCESS", "CLS_FEATURES", "family_defaults",
    "OPENPHENOM_PREPROCESS", "OPENPHENOM_FEATURES",
]

Family = Literal["dino_boc", "morphem", "timm_dinov2", "openphenom"]
FAMILIES: tuple[str, ...] = ("dino_boc", "morphem", "timm_dinov2", "openphenom")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: MorphEm as in CHAMMI-75 ``benchmarks/models.py``: SaturationNoiseInjector(200, 255) -> PerImageNormalize
#: (InstanceNorm2d, eps 1e-7) -> v2.Resize((224, 224), antialias=True) (bilinear)
MORPHEM_PREPROCESS = PreprocessConfig(
    normalize="instance", resize=224, resize_mode="square", interpolation="bilinear", antialias=True,
    normalize_before_resize=True, saturation_noise=(200.0, 255.0), eps=1e-7,
)
#: CHAMMI-75's ``DinoV2``: v2.Resize((224, 224), antialias=True), then ``_scale`` (÷ the image's max over
#: all channels); RGB replication + ImageNet normalisation live in the folded patch embedding
CHAMMI_DINOV2_PREPROCESS = PreprocessConfig(
    normalize="image_max", resize=224, resize_mode="square", interpolation="bilinear", antialias=True,
)
#: the final-norm CLS token of the last block per channel, concatenated (``x_norm_clstoken``)
CLS_FEATURES = FeatureDefaults(n_last_blocks=1, avgpool=False)
#: OpenPhenom's built-in input norm (÷255, then InstanceNorm2d with its default eps 1e-5) after a square
#: resize to its 256 px input (bicubic, as CHAMMI-75's JUMP single-cell inference resizes)
OPENPHENOM_PREPROCESS = PreprocessConfig(
    normalize="instance", eps=1e-5, resize=256, resize_mode="square", interpolation="bicubic", antialias=True,
)
#: ``predict()``: the mean of all patch tokens (no CLS, no final norm); channel_pool="concat" is its
#: channel-wise form
OPENPHENOM_FEATURES = FeatureDefaults(n_last_blocks=0, avgpool=True, channel_pool="mean")
_OPENPHENOM_PREFIX = "encoder.vit_backbone."
#: parts of MAEModel that feature extraction does not use
_OPENPHENOM_UNUSED = ("decoder.", "encoder_decoder_proj.", "decoder_pred.", "fourier_loss.", "loss.")

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.*)$")
_V1_BLOCK_KEYS = {
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
}
_V2_BLOCK_KEYS = _V1_BLOCK_KEYS | {"ls1.gamma", "ls2.gamma"}
_TOP_KEYS = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
#: heads that a native file may carry and feature extraction does not use
_HEADS = ("head.", "dino_head.", "ibot_head.", "fc_norm.")


def family_defaults(family: str) -> tuple[PreprocessConfig, FeatureDefaults]:
    """The published pre-processing and default feature of a family (see docs/models.md)."""
    if family == "morphem":
        return MORPHEM_PREPROCESS, CLS_FEATURES
    if family == "timm_dinov2":
        return CHAMMI_DINOV2_PREPROCESS, CLS_FEATURES
    if family == "openphenom":
        return OPENPHENOM_PREPROCESS, OPENPHENOM_FEATURES
    return PreprocessConfig(), FeatureDefaults()


def detect_family(sd: Mapping[str, torch.Tensor]) -> Family:
    """Which layout a flat state dict has, from its keys and the patch embedding's input channels.

    A ``mask_token`` marks the Cell-DINO / DINOv2 release (timm and DINO v1 files have none); ``morphem``
    is a DINO (v1) layout: one input channel, no LayerScale. Pass ``family=`` where that is ambiguous.
    """
    pw = sd.get("patch_embed.proj.weight")
    layerscale = any(k.endswith(".ls1.gamma") for k in sd)
    if "mask_token" in sd:  # the DINOv2 / Cell-DINO release; timm and DINO (v1) drop it
        return "dino_boc"
    if any(k.startswith(_OPENPHENOM_PREFIX) for k in sd) or (
            "state_dict" in sd and any(str(k).startswith(_OPENPHENOM_PREFIX) for k in sd["state_dict"])):
        return "openphenom"
    if "reg_token" in sd or (pw is not None and pw.ndim == 4 and pw.shape[1] == 3 and layerscale):
        return "timm_dinov2"
    if pw is not None and pw.ndim == 4 and pw.shape[1] == 1 and not layerscale and "blocks.0.norm1.weight" in sd:
        return "morphem"
    return "dino_boc"


def fold_rgb_patch_embed(
    weight: torch.Tensor, bias: torch.Tensor, *, mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold "replicate one channel to RGB, then ``(x - mean_c) / std_c``" into the patch convolution.

    The patch embedding has no padding and stride = kernel, so for a one-channel patch ``x``
    ``Σ_c W_c * (x - m_c) / s_c + b = (Σ_c W_c / s_c) * x + (b - Σ_c m_c / s_c · ΣW_c)`` exactly.

    Args:
        weight: ``(D, 3, p, p)``.
        bias: ``(D,)``.

    Returns:
        ``(D, 1, p, p)`` weight and ``(D,)`` bias, in float64 arithmetic cast back to the input dtype.
    """
    if weight.ndim != 4 or weight.shape[1] != len(mean) or len(mean) != len(std):
        raise WeightsError(f"cannot fold a patch embedding of shape {tuple(weight.shape)} with {len(mean)} means")
    w = weight.double()
    m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    new_w = (w / s).sum(dim=1, keepdim=True)
    new_b = bias.double() - (w * m / s).sum(dim=(1, 2, 3))
    return new_w.to(weight.dtype), new_b.to(bias.dtype)


def _split(sd: Mapping[str, torch.Tensor], family: str, block_keys: set[str], extra_top: set[str]
           ) -> tuple[dict[str, torch.Tensor], int]:
    """Check every key against the family's layout; unknown keys are named. Returns the kept keys, depth."""
    kept: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    depth = 0
    for k, v in sd.items():
        if k.startswith(_HEADS):
            continue
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"key {k!r} holds a {type(v).__name__}, not a tensor")
        m = _BLOCK.match(k)
        if m and m.group(2) in block_keys:
            depth = max(depth, int(m.group(1)) + 1)
        elif k not in _TOP_KEYS | extra_top:
            unknown.append(k)
            continue
        kept[k] = v
    if unknown:
        raise WeightsError(
            f"{len(unknown)} keys do not belong to the {family!r} layout: {sorted(unknown)[:10]}"
            f"{' ...' if len(unknown) > 10 else ''}; pass family= if the file is of another family"
        )
    missing = sorted(k for k in ("cls_token", "pos_embed", "patch_embed.proj.weight") if k not in kept)
    if missing or depth == 0:
        raise WeightsError(f"the {family!r} weights lack {missing or ['blocks.*']}; the file is not a complete ViT")
    return kept, depth


def _grid(n: int, what: str) -> int:
    g = math.isqrt(n)
    if g * g != n:
        raise WeightsError(f"{what} holds {n} patch positions, not a square grid")
    return g


def _config(sd: Mapping[str, torch.Tensor], depth: int, *, num_heads: int | None, **kw) -> ModelConfig:
    dim = int(sd["cls_token"].shape[-1])
    patch = int(sd["patch_embed.proj.weight"].shape[-1])
    grid = _grid(int(sd["pos_embed"].shape[1]) - 1, "pos_embed")
    hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    try:
        return ModelConfig(arch="boc", embed_dim=dim, depth=depth, num_heads=num_heads or max(1, dim // 64),
                           mlp_ratio=hidden / dim, patch_size=patch, img_size=grid * patch, **kw)
    except Exception as exc:  # noqa: BLE001 - a ConfigError from inconsistent tensors
        raise WeightsError(f"the weights describe no valid ViT: {exc}") from exc


def convert_native(
    sd: Mapping[str, torch.Tensor], family: str, *, num_heads: int | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Map a native ``morphem`` or ``timm_dinov2`` state dict to a BoC config and ``backbone.*`` keys.

    Raises:
        WeightsError: a key outside the family's layout (named), a missing tensor, or shapes that disagree.
    """
    if family == "morphem":
        kept, depth = _split(sd, family, _V1_BLOCK_KEYS, set())
        pw = kept["patch_embed.proj.weight"]
        if pw.ndim != 4 or pw.shape[1] != 1:
            raise WeightsError(f"MorphEm's patch embedding should take 1 channel, got shape {tuple(pw.shape)}")
        config = _config(kept, depth, num_heads=num_heads, init_values=None)
    elif family == "timm_dinov2":
        kept, depth = _split(sd, family, _V2_BLOCK_KEYS, {"reg_token", "mask_token"})
        if "patch_embed.proj.bias" not in kept:
            raise WeightsError("the timm DINOv2 weights lack 'patch_embed.proj.bias'")
        kept["patch_embed.proj.weight"], kept["patch_embed.proj.bias"] = fold_rgb_patch_embed(
            kept["patch_embed.proj.weight"], kept["patch_embed.proj.bias"]
        )
        pos = kept["pos_embed"]
        n = int(pos.shape[1])
        if math.isqrt(n) ** 2 == n:  # no class row (timm no_embed_class): the class position is in cls_token
            kept["pos_embed"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
        regs = int(kept["reg_token"].shape[1]) if "reg_token" in kept else 0
        # DINOv2 "with registers" resamples positions by size with antialias (== timm); the others with
        # DINOv2's offset 0.1 and no antialias
        interp = {"interpolate_offset": 0.0, "interpolate_antialias": True} if regs else {}
        config = _config(kept, depth, num_heads=num_heads, init_values=1e-5, reg_tokens=regs, **interp)
    elif family == "openphenom":
        return _convert_openphenom(sd, num_heads=num_heads)
    else:
        raise WeightsError(f"family={family!r} has no native conversion; choose one of {FAMILIES}")
    return config, {f"backbone.{k}": v.float() for k, v in kept.items()}


def _convert_openphenom(sd: Mapping[str, torch.Tensor], *, num_heads: int | None
                        ) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    kept: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        if k.startswith(_OPENPHENOM_PREFIX) and isinstance(v, torch.Tensor):
            kept[k[len(_OPENPHENOM_PREFIX):]] = v
        elif not k.startswith(_OPENPHENOM_UNUSED):
            unknown.append(k)
    if unknown:
        raise WeightsError(f"{len(unknown)} keys are not part of OpenPhenom's MAEModel: {sorted(unknown)[:10]}")
    for req in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.in_proj.weight"):
        if req not in kept:
            raise WeightsError(f"the OpenPhenom weights lack 'encoder.vit_backbone.{req}'")
    dim = int(kept["cls_token"].shape[-1])
    patch = int(kept["patch_embed.proj.weight"].shape[-1])
    depth = 1 + max(int(m.group(1)) for k in kept if (m := _BLOCK.match(k)))
    per_channel = (256 // patch) ** 2  # OpenPhenom's fixed 256 px input (tokens_per_channel)
    rows = int(kept["pos_embed"].shape[1]) - 1
    if rows % per_channel:
        raise WeightsError(f"OpenPhenom's pos_embed has {rows} rows, not a multiple of {per_channel} (256 px input)")
    heads = num_heads or max(1, dim // 64)
    hidden = int(kept["blocks.0.mlp_out_proj.weight"].shape[1]) if "blocks.0.mlp_out_proj.weight" in kept else 4 * dim
    try:
        config = ModelConfig(arch="ca_mae", embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=hidden / dim,
                             patch_size=patch, img_size=256, init_values=1e-4, qkv_bias=False,
                             max_channels=rows // per_channel)
    except Exception as exc:  # noqa: BLE001 - a ConfigError from inconsistent tensors
        raise WeightsError(f"the OpenPhenom weights describe no valid model: {exc}") from exc
    return config, {f"backbone.{k}": v.float() for k, v in kept.items()}
