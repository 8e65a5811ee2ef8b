"""torchrun helpers: one process per GPU (or CPU process with gloo), each embedding a disjoint shard.

Launch with ``torchrun --nproc-per-node=N ...``; torchrun sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without them every helper is a no-op for a
single process (rank 0 of 1).

Sharding is contiguous: rank r takes the r-th block of consecutive inputs, block sizes differing by at
most one. Consecutive inputs tend to share a folder, plate and image size, so batches grouped by shape
stay full, each rank's shards cover few index ranges, and the final merge holds about one shard per
rank.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any, Literal

from dino_boc.errors import ConfigError

__all__ = [
    "init_distributed",
    "shard_bounds",
    "shard_indices",
    "barrier",
    "is_main",
    "get_rank",
    "get_world_size",
    "broadcast_object",
    "cleanup",
]

log = logging.getLogger(__name__)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={value!r} must be an integer (torchrun sets it)") from exc


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() else None


def _initialized() -> bool:
    dist = _dist()
    return dist is not None and dist.is_initialized()


def init_distributed(
    backend: Literal["gloo", "nccl"] | None = None, *, timeout_s: float = 1800.0
) -> tuple[int, int, int]:
    """Join the process group torchrun prepared, if any.

    Args:
        backend: ``"nccl"`` on CUDA, ``"gloo"`` on CPU; None picks nccl when CUDA is available.
        timeout_s: how long collectives wait for slow ranks before failing.

    Returns:
        (rank, world_size, local_rank); (0, 1, 0) when not launched by torchrun. A single-process
        torchrun run (world size 1) creates no process group.

    Raises:
        ConfigError: inconsistent RANK / WORLD_SIZE, or nccl asked for without CUDA.
    """
    import torch

    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    local = 0 if local is None else local
    if _initialized():
        dist = _dist()
        return dist.get_rank(), dist.get_world_size(), local
    if rank is None or world is None:
        return 0, 1, 0
    if world == 1:
        return 0, 1, local
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} and WORLD_SIZE={world} do not fit; expected 0 <= RANK < WORLD_SIZE")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ConfigError("backend='nccl' needs CUDA; use backend='gloo' on CPU")
        torch.cuda.set_device(local)
    elif backend != "gloo":
        raise ConfigError(f"backend={backend!r} is unknown; choose 'gloo' (CPU) or 'nccl' (CUDA)")
    _dist().init_process_group(backend=backend, init_method="env://", timeout=timedelta(seconds=timeout_s))
    log.info("joined process group: rank %d of %d (local rank %d, %s)", rank, world, local, backend)
    return rank, world, local


def get_rank() -> int:
    """This process's rank (0 when not distributed)."""
    return _dist().get_rank() if _initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return _dist().get_world_size() if _initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and when not distributed): the process that merges and prints."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank; no-op when not distributed."""
    if not _initialized():
        return
    dist = _dist()
    if dist.get_backend() == "nccl":
        import torch

        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects); returns ``obj`` when not distributed."""
    if not _initialized():
        return obj
    box = [obj if get_rank() == src else None]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, stop)`` of the rank-th of ``world_size`` contiguous, balanced blocks of ``range(n)``: the
    first ``n % world_size`` blocks hold one more.

    Raises:
        ConfigError: ``n < 0``, ``world_size < 1`` or rank outside ``[0, world_size)``.
    """
    if n < 0 or world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(
            f"shard_indices(n={n}, rank={rank}, world_size={world_size}): expected n >= 0 and "
            f"0 <= rank < world_size"
        )
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """The inputs rank ``rank`` embeds: the rank-th of ``world_size`` contiguous, balanced blocks
    (:func:`shard_bounds` as a list).

    Blocks are disjoint, cover ``range(n)``, and depend only on (n, rank, world_size). To resume with
    some inputs done, shard the positions of the pending list: ``[pending[i] for i in
    shard_indices(len(pending), rank, world_size)]`` (or, for millions of inputs, without the list:
    :func:`dino_boc.pipeline.pending.pending_block`).

    Raises:
        ConfigError: ``n < 0``, ``world_size < 1`` or rank outside ``[0, world_size)``.
    """
    return list(range(*shard_bounds(n, rank, world_size)))


def cleanup() -> None:
    """Leave the process group (call at the end of a torchrun job); no-op when not distributed."""
    if _initialized():
        _dist().destroy_process_group()
