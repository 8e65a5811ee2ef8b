"""Grouping pre-processed images by shape so that every forward pass is one Bag-of-Channels batch.

Inputs arrive one at a time (from the DataLoader), each with n tensors of one shape ``(K, H, W)``
(the image, its tiles or its cells). :class:`ShapeBatcher` queues them per shape; as soon as a queue
holds a full batch (``batch_size // K`` images, i.e. ``batch_size`` channel-images) the model runs on
it. When more than ``max_buffered`` channel-images wait in queues that do not fill (many shapes), the
largest queue runs as a partial batch, so memory stays bounded. An input is finished, and handed
back, when all its tensors have been through the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from dino_boc.pipeline.dataset import Failed, Loaded

__all__ = ["ShapeBatcher", "Finished", "TokenResult"]

logger = logging.getLogger(__name__)

TokenResult = tuple[Any, Any, Any]  # (cls (L, K, D) | None, global_cls (L, D) | None, patch_mean (K, D) | None)
Forward = Callable[[list[torch.Tensor]], list[TokenResult]]
_OOM = tuple(c for c in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if c)


@dataclass
class Finished:
    """An input whose tensors all went through the model: ``results[j]`` belongs to ``item.tensors[j]``."""

    item: Loaded
    results: list[TokenResult]


@dataclass
class _Pending:
    item: Loaded
    results: list[TokenResult | None]
    remaining: int


@dataclass
class _Queue:
    entries: list[tuple[int, int]] = field(default_factory=list)  # (input index, part)


class ShapeBatcher:
    """Queues tensors by shape and runs ``forward`` on full batches.

    Args:
        forward: runs the model on a list of equal-shape ``(K, H, W)`` tensors (one forward pass).
        batch_size: channel-images per forward pass; a queue of K-channel images runs at
            ``max(1, batch_size // K)`` images.
        max_buffered: most channel-images waiting in partial queues before the largest one runs.

    Example:
        >>> batcher = ShapeBatcher(forward, batch_size=256)
        >>> for item in loader:
        ...     for done in batcher.put(item): write(done)
        >>> for done in batcher.flush(): write(done)
    """

    def __init__(self, forward: Forward, *, batch_size: int, max_buffered: int | None = None) -> None:
        self.forward = forward
        self.batch_size = batch_size
        self.max_buffered = max_buffered if max_buffered is not None else 4 * batch_size
        self._queues: dict[tuple[int, ...], _Queue] = {}
        self._pending: dict[int, _Pending] = {}
        self._finished: list[Finished | Failed] = []
        self.buffered = 0  # channel-images waiting in queues
        self.forward_calls = 0

    def images_per_batch(self, k: int) -> int:
        return max(1, self.batch_size // k)

    def put(self, item: Loaded) -> list[Finished | Failed]:
        """Queue one input; returns the inputs finished by the forward passes this triggered."""
        n = int(item.tensors.shape[0])
        if n == 0:
            self._finished.append(Finished(item, []))
            return self._take()
        shape = tuple(item.tensors.shape[1:])
        queue = self._queues.setdefault(shape, _Queue())
        self._pending[item.index] = _Pending(item, [None] * n, n)
        queue.entries += [(item.index, j) for j in range(n)]
        self.buffered += n * shape[0]
        per = self.images_per_batch(shape[0])
        while len(queue.entries) >= per:
            self._run(shape, per)
        while self.buffered > self.max_buffered and self._queues:
            largest = max(self._queues, key=lambda s: len(self._queues[s].entries) * s[0])
            self._run(largest, len(self._queues[largest].entries))
        return self._take()

    def flush(self) -> list[Finished | Failed]:
        """Run every queue (partial batches); returns the remaining finished inputs."""
        for shape in list(self._queues):
            per = self.images_per_batch(shape[0])
            while shape in self._queues:
                self._run(shape, min(per, len(self._queues[shape].entries)))
        return self._take()

    def _take(self) -> list[Finished | Failed]:
        out, self._finished = self._finished, []
        return out

    def _run(self, shape: tuple[int, ...], count: int) -> None:
        queue = self._queues[shape]
        entries, queue.entries = queue.entries[:count], queue.entries[count:]
        if not queue.entries:
            del self._queues[shape]
        self.buffered -= len(entries) * shape[0]
        self._forward(entries)

    def _forward(self, entries: list[tuple[int, int]]) -> None:
        entries = [e for e in entries if e[0] in self._pending]  # inputs failed by an earlier split
        if not entries:
            return
        tensors = [self._pending[i].item.tensors[j] for i, j in entries]
        try:
            results = self.forward(tensors)
            self.forward_calls += 1
        except _OOM as exc:
            self._out_of_memory(entries, exc)
            return
        for (i, j), res in zip(entries, results):
            pending = self._pending[i]
            pending.results[j] = res
            pending.remaining -= 1
            if pending.remaining == 0:
                del self._pending[i]
                self._finished.append(Finished(pending.item, pending.results))  # type: ignore[arg-type]

    def _out_of_memory(self, entries: list[tuple[int, int]], exc: BaseException) -> None:
        """Retry in halves; an input whose single tensor does not fit fails (recorded, run goes on)."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(entries) > 1:
            logger.warning("out of memory on a batch of %d images; retrying in halves (lower --batch-size)", len(entries))
            half = len(entries) // 2
            self._forward(entries[:half])
            self._forward(entries[half:])
            return
        i = entries[0][0]
        pending = self._pending.pop(i)
        shape = tuple(pending.item.tensors.shape[1:])
        reason = (f"OutOfMemoryError: one {shape} image does not fit on the device ({exc}); "
                  "pass --tile, --resize or --crop to embed it smaller")
        self._finished.append(Failed(i, pending.item.source, reason))
