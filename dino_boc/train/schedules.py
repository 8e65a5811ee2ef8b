"""Per-iteration schedules of DINOv2 training, as numpy arrays indexed by iteration.

``lr``: linear warm-up from 0 then cosine to ``min_lr``; ``wd``: cosine 0.04 -> 0.2; teacher ``momentum``:
cosine 0.996 -> 1; ``teacher_temp``: linear 0.04 -> 0.07 then constant; ``last_layer_lr``: ``lr`` with the
first epoch(s) at 0 (the head's prototypes stay fixed while the rest settles). Defaults are the paper's
(App. D.1 and the released cell_dino configs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from dino_boc.errors import ConfigError

__all__ = ["ScheduleConfig", "Schedules", "build_schedules", "cosine_schedule", "scaled_lr"]

LrScaling = Literal["sqrt_wrt_1024", "none"]


def cosine_schedule(
    base_value: float,
    final_value: float,
    total_iters: int,
    *,
    warmup_iters: int = 0,
    start_warmup_value: float = 0.0,
    freeze_iters: int = 0,
) -> np.ndarray:
    """``freeze_iters`` zeros, then a linear warm-up, then a half cosine from ``base_value`` to ``final_value``.

    Args:
        base_value: value at the end of the warm-up (inclusive) and the start of the cosine.
        final_value: value the cosine tends to (reached one step after the last iteration).
        total_iters: length of the array.
        warmup_iters: iterations of ``linspace(start_warmup_value, base_value, warmup_iters)``.
        start_warmup_value: first warm-up value.
        freeze_iters: leading iterations at 0.

    Returns:
        float64 ``(total_iters,)``.

    Raises:
        ConfigError: ``freeze_iters + warmup_iters > total_iters`` or negative lengths.
    """
    if min(total_iters, warmup_iters, freeze_iters) < 0 or freeze_iters + warmup_iters > total_iters:
        raise ConfigError(
            f"schedule of {total_iters} iterations cannot hold {freeze_iters} frozen + {warmup_iters} warm-up "
            "iterations; shorten the warm-up or train for more epochs"
        )
    n_cos = total_iters - warmup_iters - freeze_iters
    cos = final_value + 0.5 * (base_value - final_value) * (1.0 + np.cos(np.pi * np.arange(n_cos) / max(n_cos, 1)))
    return np.concatenate(
        [np.zeros(freeze_iters), np.linspace(start_warmup_value, base_value, warmup_iters), cos]
    ).astype(np.float64)


def scaled_lr(base_lr: float, global_batch_size: int, rule: LrScaling = "sqrt_wrt_1024") -> float:
    """DINOv2's learning-rate scaling: ``base_lr * sqrt(global_batch_size / 1024)`` (or unchanged for ``"none"``).

    Raises:
        ConfigError: unknown rule or non-positive batch size.
    """
    if global_batch_size < 1:
        raise ConfigError(f"global batch size is {global_batch_size}; expected >= 1")
    if rule == "sqrt_wrt_1024":
        return base_lr * math.sqrt(global_batch_size / 1024.0)
    if rule == "none":
        return base_lr
    raise ConfigError(f"lr scaling rule {rule!r} is unknown; expected 'sqrt_wrt_1024' or 'none'")


@dataclass(frozen=True)
class ScheduleConfig:
    """Schedule settings; epochs may be fractional for warm-ups (converted with ``round(epochs * iters)``).

    Attributes:
        epochs: training length in epochs.
        iters_per_epoch: optimiser steps per epoch ("OFFICIAL_EPOCH_LENGTH" in DINOv2).
        base_lr: lr for a global batch of 1024 (5e-4 in the paper), scaled by ``lr_scaling``.
        lr_scaling: ``"sqrt_wrt_1024"`` or ``"none"``.
        min_lr: final lr of the cosine.
        warmup_epochs: linear lr warm-up (20).
        weight_decay, weight_decay_end: cosine weight decay (0.04 -> 0.2).
        momentum_teacher, final_momentum_teacher: cosine EMA momentum (0.996 -> 1).
        warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs: linear warm-up 0.04 -> 0.07 over 20 epochs.
        freeze_last_layer_epochs: epochs with the head's last layer at lr 0 (1).
    """

    epochs: float
    iters_per_epoch: int
    base_lr: float = 5e-4
    lr_scaling: LrScaling = "sqrt_wrt_1024"
    min_lr: float = 1e-6
    warmup_epochs: float = 20
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    momentum_teacher: float = 0.996
    final_momentum_teacher: float = 1.0
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: float = 20
    freeze_last_layer_epochs: float = 1

    def iters(self, epochs: float) -> int:
        """Number of iterations in ``epochs`` epochs."""
        return int(round(epochs * self.iters_per_epoch))


@dataclass(frozen=True)
class Schedules:
    """The five per-iteration arrays, each ``(total_iters,)``."""

    lr: np.ndarray
    wd: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray
    last_layer_lr: np.ndarray

    def __len__(self) -> int:
        return len(self.lr)

    def at(self, it: int) -> dict[str, float]:
        """Values at iteration ``it`` (the last value past the end), keyed by field name."""
        i = min(max(int(it), 0), len(self) - 1)
        return {k: float(getattr(self, k)[i]) for k in ("lr", "wd", "momentum", "teacher_temp", "last_layer_lr")}


def build_schedules(cfg: ScheduleConfig, *, global_batch_size: int) -> Schedules:
    """All schedules of a run.

    Args:
        cfg: the schedule settings.
        global_batch_size: samples per optimiser step over all processes (scales the lr).

    Raises:
        ConfigError: a run shorter than its lr warm-up, or a non-positive length.
    """
    total = cfg.iters(cfg.epochs)
    if total < 1 or cfg.iters_per_epoch < 1:
        raise ConfigError(
            f"training length is {cfg.epochs} epochs x {cfg.iters_per_epoch} iterations; expected at least 1 iteration"
        )
    peak_lr = scaled_lr(cfg.base_lr, global_batch_size, cfg.lr_scaling)
    lr = cosine_schedule(peak_lr, cfg.min_lr, total, warmup_iters=cfg.iters(cfg.warmup_epochs))
    wd = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, total)
    momentum = cosine_schedule(cfg.momentum_teacher, cfg.final_momentum_teacher, total)
    temp_warmup = min(cfg.iters(cfg.warmup_teacher_temp_epochs), total)
    teacher_temp = np.full(total, cfg.teacher_temp, dtype=np.float64)
    teacher_temp[:temp_warmup] = np.linspace(
        cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.iters(cfg.warmup_teacher_temp_epochs)
    )[:temp_warmup]
    last_layer_lr = lr.copy()
    last_layer_lr[: cfg.iters(cfg.freeze_last_layer_epochs)] = 0.0
    return Schedules(lr=lr, wd=wd, momentum=momentum, teacher_temp=teacher_temp, last_layer_lr=last_layer_lr)
