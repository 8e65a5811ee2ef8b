"""Checks on weights before and after a model is built: shapes from the file, architecture, finite values.

A model is built only once the shapes that the file declares (the safetensors header, or the tensors of a
loaded state dict) are those that the configuration asks for, so a crafted ``config.json`` or checkpoint
cannot make dino_boc allocate more than the file itself holds. The expected shapes come from the model
built on PyTorch's ``meta`` device, which allocates no memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from dino_boc.errors import WeightsError
from dino_boc.models import ModelConfig, build_model

__all__ = ["OPTIONAL_KEYS", "ARCH_KEYS", "safetensors_shapes", "expected_shapes", "fit_errors", "fit_message",
           "check_weights_fit", "check_finite"]

#: keys a checkpoint may lack; the model keeps its initial values
OPTIONAL_KEYS: tuple[str, ...] = ("backbone.mask_token",)
#: a key that only models of one architecture hold (used to name a declared-vs-present mismatch)
ARCH_KEYS: dict[str, str] = {"ha": "channel_cls_token", "channel_vit": "channel_embed"}
#: safetensors dtypes of floating-point tensors
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2")


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Shapes of every tensor of a ``.safetensors`` file, read from its header only (no tensor data).

    The header is validated by safetensors against the file length, so the shapes cannot claim more data
    than the file holds.

    Raises:
        WeightsError: unreadable header, or a tensor that is not floating point.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            shapes = {k: tuple(int(n) for n in s.get_shape()) for k, s in slices.items()}
            dtypes = {k: s.get_dtype() for k, s in slices.items()}
    except Exception as exc:  # noqa: BLE001 - any reader failure means a corrupt file
        raise WeightsError(f"cannot read {path}: {exc}") from exc
    bad = sorted(k for k, d in dtypes.items() if d not in _FLOAT_DTYPES)
    if bad:
        raise WeightsError(f"{path} holds non-floating tensors {[(k, dtypes[k]) for k in bad[:5]]}; expected "
                           "floating-point weights — the file is not a dino_boc model")
    return shapes


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every state-dict entry of a model of ``config``, without allocating its weights."""
    with torch.device("meta"):
        model = build_model(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _arch_hint(config: ModelConfig, missing: list[str], unexpected: list[str]) -> str:
    for arch, key in ARCH_KEYS.items():
        if key in unexpected:
            return (f"; the weights hold {key!r}, a key of arch={arch!r} models, but the configuration declares "
                    f"arch={config.arch!r} — the config does not belong to these weights.")
        if key in missing:
            return (f"; the configuration declares arch={arch!r}, but the weights lack its {key!r} — they are "
                    "weights of another architecture.")
    return ""


def fit_errors(own: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]]) -> tuple[list, list, list]:
    """``(missing, unexpected, shape mismatches)`` of ``given`` shapes against a model's ``own`` shapes."""
    missing = [k for k in own if k not in given and k not in OPTIONAL_KEYS]
    unexpected = [k for k in given if k not in own]
    shapes = [f"{k}: checkpoint {tuple(given[k])} vs model {tuple(own[k])}"
              for k in given if k in own and tuple(given[k]) != tuple(own[k])]
    return missing, unexpected, shapes


def fit_message(config: ModelConfig, own, given, *, source: str) -> str | None:
    """The error message naming every key of ``given`` that does not fit, or None when all fit."""
    missing, unexpected, shapes = fit_errors(own, given)
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        parts.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if shapes:
        parts.append("shape mismatches " + "; ".join(shapes[:5]))
    return (f"weights from {source} do not fit the {config.arch!r} architecture: " + ", ".join(parts)
            + _arch_hint(config, missing, unexpected))


def check_weights_fit(config: ModelConfig, shapes: Mapping[str, tuple[int, ...]], *, source: str) -> None:
    """Refuse weights whose keys or shapes are not those of ``config``, before any model is built.

    Args:
        config: the declared (or inferred) architecture.
        shapes: key → shape of every tensor in the file, keys as the model's ``state_dict`` names them.
        source: the file, for the message.

    Raises:
        WeightsError: naming missing, unexpected and mis-shaped keys (and a declared-vs-present architecture).
    """
    msg = fit_message(config, expected_shapes(config), shapes, source=source)
    if msg:
        raise WeightsError(msg)


def check_finite(state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Refuse weights holding NaN or ±inf: they give NaN features for every image.

    Raises:
        WeightsError: naming the affected keys.
    """
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(
            f"weights from {source} hold NaN or infinite values in {bad[:10]}{' ...' if len(bad) > 10 else ''}; "
            "every feature would be NaN — the file is corrupt or the training diverged: use another checkpoint"
        )
