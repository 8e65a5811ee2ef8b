"""Released checkpoints -> dino_boc state dicts: key layouts, unused keys, architecture inference."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from dino_boc.errors import WeightsError
from dino_boc.models.config import ModelConfig

__all__ = ["read_checkpoint", "normalize_state_dict", "infer_config", "IGNORED_PREFIXES"]

#: keys that a checkpoint may hold but inference does not use
IGNORED_PREFIXES = ("dino_head.", "ibot_head.", "head.")
_CHUNKED = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.*)$")
_PLAIN = re.compile(r"^blocks\.(\d+)\.(.*)$")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a released ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or a ``.safetensors`` file.

    A ``.safetensors`` name holding a torch archive (what OpenPhenom's ``save_pretrained`` writes) is read
    with ``torch.load(weights_only=True)`` too: never unpickling code.

    Raises:
        WeightsError: unreadable file or not a state dict.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors" and not _is_zip(path):
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            with open(path, "rb") as f:  # a file object: torch would hand a *.safetensors name to safetensors
                obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means a bad file
        raise WeightsError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def normalize_state_dict(raw: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Bring any released layout to the flat backbone layout (``blocks.{i}.*``, no prefix).

    Handles a plain state dict with chunked (``blocks.{chunk}.{i}.*``, ``block_chunks=4``) or unchunked
    keys, a training checkpoint ``{"teacher": {"backbone.*": ..., "dino_head.*": ...}}`` (also
    ``"model"``/``"state_dict"`` wrappers), a full DINOv2 training checkpoint
    ``{"model": {"student.*": ..., "teacher.backbone.*": ...}}`` (the teacher is kept), and ``module.`` prefixes.

    Returns:
        The backbone state dict and the list of keys dropped because inference does not use them.
    """
    sd: Mapping[str, Any] = raw
    for wrapper in ("teacher", "model", "state_dict"):
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
            break
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in sd.items():
        k = key
        while k.startswith("module."):
            k = k[len("module."):]
        if k.startswith("student."):  # a full training checkpoint: the teacher is the model
            ignored.append(key)
            continue
        if k.startswith("teacher."):
            k = k[len("teacher."):]
        if k.startswith("backbone."):
            k = k[len("backbone."):]
        if k.startswith(IGNORED_PREFIXES):
            ignored.append(key)
            continue
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"checkpoint key {key!r} holds a {type(value).__name__}, not a tensor")
        m = _CHUNKED.match(k)
        if m:  # chunked: blocks.{chunk}.{i}.* -> blocks.{i}.*
            k = f"blocks.{m.group(2)}.{m.group(3)}"
        if k in out:
            raise WeightsError(f"checkpoint key {key!r} maps to {k!r} twice; the layout is ambiguous")
        out[k] = value
    return out, ignored


def infer_config(sd: Mapping[str, torch.Tensor], *, num_heads: int | None = None,
                 channel_names: tuple[str, ...] = ()) -> ModelConfig:
    """The BoC (or, with ``channel_names``, fixed-channel) architecture a flat backbone state dict describes.

    Args:
        sd: output of :func:`normalize_state_dict`.
        num_heads: heads; default ``D / 64`` (the ViT-S/B/L/g convention).
        channel_names: the input channels of a fixed-channel release (Cell-DINO HPA: 4, Cell Painting: 5),
            in the model's order; their count must be the patch embedding's.

    Raises:
        WeightsError: a required tensor is missing or the tensors disagree.
        ConfigError: the shapes describe an architecture out of :class:`ModelConfig`'s bounds.
    """
    for req in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        if req not in sd:
            raise WeightsError(
                f"checkpoint has no {req!r}; it does not look like a DINOv2/DINO BoC ViT backbone "
                f"(first keys: {sorted(sd)[:6]})"
            )
    for req, ndim in (("cls_token", 3), ("pos_embed", 3)):
        if sd[req].ndim != ndim:
            raise WeightsError(f"{req} has shape {tuple(sd[req].shape)}; expected {ndim} dimensions (1, N, D)")
    dim = int(sd["cls_token"].shape[-1])
    pw = sd["patch_embed.proj.weight"]
    if pw.ndim != 4 or pw.shape[2] != pw.shape[3]:
        raise WeightsError(f"patch_embed.proj.weight has shape {tuple(pw.shape)}; expected (D, 1, p, p)")
    if channel_names and pw.shape[1] != len(channel_names):
        raise WeightsError(
            f"patch_embed.proj.weight takes {pw.shape[1]} input channels, but the model is registered with "
            f"{len(channel_names)} channels {list(channel_names)}; is this the right checkpoint for this name?"
        )
    if pw.shape[1] != 1 and not channel_names:
        raise WeightsError(
            f"patch_embed.proj.weight takes {pw.shape[1]} input channels; DINO BoC checkpoints take 1 "
            "(in_chans=1). This looks like a multi-channel model, which load_model cannot run as BoC."
        )
    patch = int(pw.shape[-1])
    n = int(sd["pos_embed"].shape[1]) - 1
    grid = math.isqrt(max(n, 0))
    if n <= 0 or grid * grid != n:
        raise WeightsError(f"pos_embed has {n} patch positions, not a square grid")
    idx = sorted({int(m.group(1)) for k in sd if (m := _PLAIN.match(k))})
    if not idx:
        raise WeightsError("checkpoint has no 'blocks.*' keys")
    if idx != list(range(len(idx))):  # checked before the depth is used: a crafted 'blocks.999999.*' builds nothing
        present = set(idx)
        gap = next(i for i in range(len(idx) + 1) if i not in present)
        raise WeightsError(
            f"checkpoint has {len(idx)} blocks numbered {idx[:3]} ... {idx[-1]}; expected blocks 0..{len(idx) - 1} "
            f"without gaps (block {gap} is missing) — the file is corrupt or not a ViT backbone"
        )
    depth = len(idx)
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    hidden = int(fc1.shape[0]) if fc1 is not None and fc1.ndim == 2 else 4 * dim
    heads = num_heads if num_heads is not None else max(1, dim // 64)  # 0 is refused by ModelConfig, not defaulted
    init_values = 1e-5 if "blocks.0.ls1.gamma" in sd else None
    return ModelConfig(
        arch="fixed" if channel_names else "boc", in_chans=len(channel_names) or 1,
        channel_names=tuple(channel_names), embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=hidden / dim, patch_size=patch,
        img_size=grid * patch, init_values=init_values, qkv_bias="blocks.0.attn.qkv.bias" in sd,
    )
