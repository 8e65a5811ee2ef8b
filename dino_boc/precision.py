"""Numeric precision: the choices, what ``"auto"`` means on a device, and autocast.

``"auto"`` means one thing everywhere: *the fastest precision that keeps the results of this kind of work*,
made concrete here and only here, by one resolver per kind of work:

* features (a forward pass: :func:`dino_boc.embed`, ``embed_dataset``, evaluation), :func:`resolve_precision`:

  * ``"fp16"`` on CUDA (autocast, as the released evaluation);
  * ``"bf16"`` on a CPU that computes bf16 natively (x86 AVX512-BF16 or AMX-BF16, read from the CPU's
    flags, with a PyTorch built with oneDNN): bf16 autocast ran ViT-S/16 and ViT-L/16 2-3x faster than
    fp32 with features at cosine >= 0.9999 to fp32 (``benchmarks/README.md``);
  * ``"fp32"`` everywhere else (CPUs without native bf16 emulate it slowly; MPS and other devices);

* training (forward and backward, ``train.precision``), :func:`resolve_train_precision`:

  * ``"bf16"`` autocast on CUDA (fp16 gradients would need loss scaling; bf16 has fp32's range, as dinov2);
  * ``"fp32"`` elsewhere (CPU training is for tests and demos).

The resolved name is what a dataset run records in its provenance (``options.precision``) and what training
logs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Collection, Literal, get_args

import torch

from dino_boc.errors import ConfigError, InputError

__all__ = ["resolve_device", "Precision", "ResolvedPrecision", "PRECISIONS", "TrainPrecision", "TRAIN_PRECISIONS",
           "NATIVE_BF16_FLAGS", "cpu_flags", "cpu_native_bf16", "resolve_precision", "resolve_train_precision",
           "autocast_context", "DEFAULT_PRECISION"]

Precision = Literal["auto", "fp32", "fp16", "bf16"]
DEFAULT_PRECISION: Precision = "auto"
"""Embedding's default: fp16 autocast on CUDA, bf16 on CPUs with native bf16, else fp32 (:func:`resolve_precision`)."""
ResolvedPrecision = Literal["fp32", "fp16", "bf16"]
#: every accepted value of ``precision`` (the CLI takes its choices from here)
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: the choices of ``train.precision`` (no fp16: training would need loss scaling)
TrainPrecision = Literal["auto", "bf16", "fp32"]
TRAIN_PRECISIONS: tuple[str, ...] = get_args(TrainPrecision)
#: CPU flags (as Linux spells them in ``/proc/cpuinfo``) of instructions that multiply bf16 matrices natively
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
logger = logging.getLogger(__name__)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The feature flags of the first CPU listed in ``cpuinfo`` (Linux), or None where it cannot be read.

    Args:
        cpuinfo: the file to read (``/proc/cpuinfo``; x86 lists ``flags``, ARM ``Features``).

    Returns:
        The flags, lower case, e.g. ``{"avx2", "avx512_bf16", "amx_bf16", ...}``; None if the file is missing
        or unreadable or has no flags line (other operating systems).
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() in ("flags", "features"):
                    return frozenset(value.lower().split())
    except OSError:
        return None
    return None


def cpu_native_bf16(flags: Collection[str] | None = None, *, onednn: bool | None = None) -> bool:
    """Whether this CPU multiplies bf16 matrices natively, so that bf16 autocast is faster than fp32.

    Detected, never assumed: from ``flags`` when given (tests), else from ``/proc/cpuinfo``, else (no such
    file: macOS, Windows) from PyTorch's own CPU probe (``torch.cpu._is_avx512_bf16_supported``); an
    answer that cannot be had is "no". PyTorch must also be built with oneDNN (``torch.backends.mkldnn``),
    which runs those instructions.

    Args:
        flags: CPU flags as ``/proc/cpuinfo`` spells them; None: this machine's.
        onednn: whether PyTorch has oneDNN; None: ask ``torch.backends.mkldnn.is_available()``.

    Returns:
        True on CPUs with AVX512-BF16 or AMX-BF16 (Intel Cooper Lake, Sapphire Rapids and later; AMD Zen 4
        and later) and oneDNN; False otherwise (including ARM CPUs, not measured).
    """
    if onednn is None:
        onednn = torch.backends.mkldnn.is_available()
    if not onednn:
        return False
    if flags is None:
        return _this_cpu_native_bf16()
    return bool(NATIVE_BF16_FLAGS & {f.lower() for f in flags})


@functools.cache
def _this_cpu_native_bf16() -> bool:
    flags = cpu_flags()
    if flags is not None:
        return bool(NATIVE_BF16_FLAGS & flags)
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def resolve_precision(precision: str, device: torch.device | str, *, cpu_bf16: bool | None = None
                      ) -> ResolvedPrecision:
    """The precision a forward pass on ``device`` runs in: ``"auto"`` made concrete, other choices checked.

    Args:
        precision: ``"auto"``, ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        device: where the model runs.
        cpu_bf16: whether the CPU has native bf16; None: :func:`cpu_native_bf16` detects it.

    Returns:
        ``"fp16"`` on CUDA for ``"auto"``; ``"bf16"`` on a CPU with native bf16; ``"fp32"`` elsewhere;
        an explicit choice unchanged.

    Raises:
        InputError: an unknown name, or ``"fp16"`` on a CPU (PyTorch's CPU autocast is bf16).
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r}; choose one of {', '.join(map(repr, PRECISIONS))}")
    if precision == "fp16" and device.type == "cpu":
        raise InputError("fp16 autocast is for CUDA; on CPU use precision='fp32' or 'bf16' (or 'auto')")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and (cpu_native_bf16() if cpu_bf16 is None else cpu_bf16):
        _say_cpu_bf16()
        return "bf16"
    return "fp32"


def resolve_train_precision(precision: str, device: torch.device | str) -> Literal["bf16", "fp32"]:
    """The precision a training step on ``device`` runs in: ``"auto"`` made concrete, other choices checked.

    Args:
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"`` (:data:`TrainPrecision`).
        device: where the networks train.

    Returns:
        ``"bf16"`` on CUDA for ``"auto"``, ``"fp32"`` elsewhere; an explicit choice unchanged.

    Raises:
        ConfigError: a choice that is not one of :data:`TRAIN_PRECISIONS`.
    """
    if precision not in TRAIN_PRECISIONS:
        raise ConfigError(f"train.precision={precision!r}; choose one of {list(TRAIN_PRECISIONS)}")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


@functools.cache
def _say_cpu_bf16() -> None:
    logger.info("precision='auto': bf16 autocast on this CPU (native bf16: AVX512-BF16/AMX); "
                "pass precision='fp32' for fp32 features")


def autocast_context(device: torch.device | str, precision: str):
    """``torch.autocast`` for the resolved precision on ``device`` (nothing for fp32).

    Args:
        device: where the model runs.
        precision: any choice of :data:`Precision` (``"auto"`` is resolved by :func:`resolve_precision`).

    Raises:
        InputError: as :func:`resolve_precision`.
    """
    device = torch.device(device)
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[resolved])


def resolve_device(device: str | torch.device | None = None, *, local_rank: int = 0) -> torch.device:
    """The one rule for a ``device`` option (Python API, CLI, training config).

    Args:
        device: ``None`` or ``"auto"`` (CUDA when available, else the CPU), or a torch device string or
            object (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        local_rank: the process's GPU under torchrun, used when ``device`` is None/"auto" (and for a bare
            ``"cuda"`` when ``local_rank`` > 0).

    Returns:
        The torch device.

    Raises:
        ConfigError: not a torch device, or a CUDA device asked for on a machine without CUDA.
    """
    if device is None or device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"device={device!r} is not a torch device ({exc}); expected e.g. 'cpu', 'cuda', 'cuda:1' "
                          "or 'auto'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available on this machine; use 'cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is None and local_rank:
        return torch.device("cuda", local_rank)
    return dev
