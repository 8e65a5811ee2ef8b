"""Which inputs a rank embeds: its balanced block of the pending ones, from a done mask, in flat memory.

A run over ``n`` inputs knows what an earlier run did as a bool mask ``done (n,)`` (one byte per input,
:func:`dino_boc.outputs.done_mask`). The pending inputs (``~done``) are split into ``world`` contiguous
blocks of nearly equal size, as :func:`dino_boc.distributed.shard_indices` splits a list, but expressed
as index ranges ``[start, stop)``, so no list of pending indices (a Python int each) is ever built.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dino_boc.distributed import shard_bounds

__all__ = ["Pending", "pending_block"]

_CHUNK = 1 << 20  # inputs looked at per step (a few MB of temporaries, whatever n is)


def _nth_pending(done: np.ndarray, k: int) -> int:
    """The index of the ``k``-th (0-based) pending input, or ``len(done)`` when there are ``k`` or fewer."""
    seen = 0
    for lo in range(0, len(done), _CHUNK):
        pending = np.flatnonzero(~done[lo:lo + _CHUNK])
        if seen + len(pending) > k:
            return lo + int(pending[k - seen])
        seen += len(pending)
    return len(done)


def pending_block(done: np.ndarray, rank: int, world: int) -> tuple[int, int]:
    """The index range ``[start, stop)`` whose pending inputs are rank ``rank``'s block.

    Args:
        done: bool ``(n,)``, True for inputs already done.
        rank, world: this process and the number of processes.

    Returns:
        ``(start, stop)``: the pending inputs in it are the ``rank``-th of ``world`` contiguous blocks of the
        pending inputs, sized as :func:`dino_boc.distributed.shard_bounds` sizes them.
    """
    total = int(len(done) - np.count_nonzero(done))
    lo, hi = shard_bounds(total, rank, world)
    if lo == hi:
        return len(done), len(done)
    return _nth_pending(done, lo), _nth_pending(done, hi - 1) + 1


class Pending:
    """The pending inputs of ``done`` in ``[start, stop)``, in order: an iterable with a length (a sampler).

    Args:
        done: bool ``(n,)``, True for inputs already done (not copied).
        start, stop: the index range (:func:`pending_block`).
    """

    def __init__(self, done: np.ndarray, start: int = 0, stop: int | None = None) -> None:
        self.done = done
        self.start, self.stop = start, len(done) if stop is None else stop
        self._len = int((self.stop - self.start) - np.count_nonzero(done[self.start:self.stop]))

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[int]:
        for lo in range(self.start, self.stop, _CHUNK):
            hi = min(lo + _CHUNK, self.stop)
            for i in np.flatnonzero(~self.done[lo:hi]):
                yield lo + int(i)

    def __repr__(self) -> str:
        return f"Pending({self._len} inputs in [{self.start}, {self.stop}))"
