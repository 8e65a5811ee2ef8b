"""AdamW parameter groups with layer-wise lr decay, and the per-iteration application of the schedules.

Layer ids come from parameter names, so any module whose transformer blocks are named ``blocks.<i>.`` works
(a student ``ModuleDict`` of backbone and heads included): the embeddings (``patch_embed``, ``pos_embed``,
every ``*cls_token``, DINO HA's ``channel_cls_token`` included,
``mask_token``, register and channel tokens) are layer 0, block i is layer ``i + 1``, and everything else
(final norm, heads) is layer ``L + 1`` (:func:`dino_boc.models.backbone.layer_id`, which the models' own
``layer_id`` uses too). A parameter of layer l gets the lr multiplier
``decay ** (L + 1 - l)``; ``patch_embed`` weights are further multiplied by 0.2. Parameters of the head's
``last_layer`` (``weight_v`` and the learnt prototype norms ``weight_g``) follow the ``last_layer_lr``
schedule (0 during the first epoch) and are decayed like any weight.

Which parameters get no weight decay is a :data:`WeightDecayRule`:

* ``"dinov2"`` (default; released ``dinov2/utils/param_groups.py:80``): only names ending in ``.bias`` or
  containing ``norm`` or ``gamma`` (biases, LayerNorms, LayerScale). ``cls_token``, ``pos_embed``,
  ``mask_token`` and the channel tokens ARE decayed.
* ``"timm"``: also every tensor of at most one dimension, the tokens and positional embeddings, and
  whatever a submodule lists in ``no_weight_decay()`` (timm / DeiT convention; used for fine-tuning).
"""

from __future__ import annotations

import logging
from typing import Callable, Literal, get_args

import torch
from torch import nn

from dino_boc.errors import ConfigError
from dino_boc.models.backbone import block_index, layer_id

__all__ = [
    "WeightDecayRule", "layer_id", "no_weight_decay_names", "param_groups", "build_optimizer", "apply_schedules"
]

logger = logging.getLogger(__name__)

_NO_DECAY_NAMES = frozenset({"pos_embed", "cls_token", "mask_token", "reg_token", "register_tokens", "channel_embed"})
WeightDecayRule = Literal["dinov2", "timm"]
"""``"dinov2"``: only ``.bias`` / ``norm`` / ``gamma`` names are exempt (released); ``"timm"``: also 1-D
tensors, tokens, positional embeddings and ``no_weight_decay()`` names."""

def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full parameter names (or prefixes) that submodules list in ``no_weight_decay()`` (timm convention)."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            names.update(f"{prefix}.{n}" if prefix else n for n in fn())
    return names


def _is_no_decay(name: str, param: torch.Tensor, listed: set[str], rule: WeightDecayRule) -> bool:
    if name.endswith(".bias") or "norm" in name or "gamma" in name:
        return True
    if rule == "dinov2":
        return False
    if param.ndim <= 1 or name.split(".")[-1] in _NO_DECAY_NAMES:
        return True
    return any(name == n or name.startswith(n + ".") for n in listed)


def param_groups(
    model: nn.Module,
    *,
    lr_decay: float = 0.9,
    patch_embed_lr_mult: float = 0.2,
    num_layers: int | None = None,
    layer_id_fn: Callable[[str, int], int] | None = None,
    weight_decay_rule: WeightDecayRule = "dinov2",
) -> list[dict]:
    """Parameter groups for AdamW, one per distinct (lr multiplier, wd multiplier, last layer).

    Args:
        model: the student (backbone and heads); parameters without ``requires_grad`` are left out.
        lr_decay: layer-wise decay (0.9); 1.0 disables it.
        patch_embed_lr_mult: extra lr multiplier of ``patch_embed`` parameters (0.2).
        num_layers: depth L; default one more than the largest ``blocks.<i>.`` index in the names.
        layer_id_fn: ``(name, L) -> layer id`` to override :func:`layer_id`.
        weight_decay_rule: which parameters are exempt from weight decay (see the module docstring).

    Returns:
        Dicts with ``params``, ``names``, ``lr_multiplier``, ``wd_multiplier`` (0 or 1) and ``is_last_layer``.

    Raises:
        ConfigError: a decay or multiplier outside (0, 1], or an unknown ``weight_decay_rule``.
    """
    if weight_decay_rule not in get_args(WeightDecayRule):
        raise ConfigError(
            f"weight_decay_rule={weight_decay_rule!r}; choose one of {list(get_args(WeightDecayRule))} "
            "('dinov2' is the released rule)"
        )
    if not (0.0 < lr_decay <= 1.0 and 0.0 < patch_embed_lr_mult <= 1.0):
        raise ConfigError(
            f"lr_decay={lr_decay}, patch_embed_lr_mult={patch_embed_lr_mult}; "
            "expected values in (0, 1] (paper: 0.9, 0.2)"
        )
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if num_layers is None:
        indices = [i for i in (block_index(n) for n, _ in named) if i is not None]
        num_layers = max(indices) + 1 if indices else 0
    get_id = layer_id if layer_id_fn is None else layer_id_fn
    listed = no_weight_decay_names(model)
    groups: dict[tuple[float, float, bool], dict] = {}
    for name, param in named:
        lr_mult = lr_decay ** (num_layers + 1 - get_id(name, num_layers))
        if "patch_embed" in name.split("."):
            lr_mult *= patch_embed_lr_mult
        wd_mult = 0.0 if _is_no_decay(name, param, listed, weight_decay_rule) else 1.0
        key = (lr_mult, wd_mult, "last_layer" in name.split("."))
        group = groups.setdefault(
            key, {"params": [], "names": [], "lr_multiplier": key[0], "wd_multiplier": key[1], "is_last_layer": key[2]}
        )
        group["params"].append(param)
        group["names"].append(name)
    for g in groups.values():
        logger.debug(
            "lr x %.4g, wd x %g, last layer %s: %s",
            g["lr_multiplier"], g["wd_multiplier"], g["is_last_layer"], g["names"],
        )
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    *,
    lr_decay: float = 0.9,
    patch_embed_lr_mult: float = 0.2,
    num_layers: int | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay_rule: WeightDecayRule = "dinov2",
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (the one optimiser of pre-training and fine-tuning); lr and weight
    decay are set every step by :func:`apply_schedules`."""
    groups = param_groups(
        model, lr_decay=lr_decay, patch_embed_lr_mult=patch_embed_lr_mult, num_layers=num_layers,
        weight_decay_rule=weight_decay_rule,
    )
    return torch.optim.AdamW(groups, lr=0.0, weight_decay=0.0, betas=betas)


def apply_schedules(optimizer: torch.optim.Optimizer, *, lr: float, wd: float, last_layer_lr: float) -> None:
    """Set each group's lr and weight decay for this iteration.

    ``lr = (last_layer_lr if is_last_layer else lr) * lr_multiplier``; ``weight_decay = wd * wd_multiplier``.

    Args:
        optimizer: built from :func:`param_groups` (groups without the keys get multipliers 1).
        lr, wd, last_layer_lr: this iteration's values, e.g. ``Schedules.at(it)``.
    """
    for group in optimizer.param_groups:
        base = last_layer_lr if group.get("is_last_layer", False) else lr
        group["lr"] = base * group.get("lr_multiplier", 1.0)
        group["weight_decay"] = wd * group.get("wd_multiplier", 1.0)
