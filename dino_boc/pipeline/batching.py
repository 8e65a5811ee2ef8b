"""Grouping pre-processed images by shape so that every forward pass is one Bag-of-Channels batch.

Inputs arrive one at a time (from the DataLoader), each with n tensors of one shape ``(K, H, W)``
(the image, its tiles or its cells). :class:`ShapeBatcher` queues them per shape; as soon as a queue
holds a full batch (``batch_size // K`` images, i.e. ``batch_size`` channel-images) the model runs on
it. When more than ``max_buffered`` channel-images wait in queues that do not fill (many shapes), the
largest queue runs as a partial batch, so memory stays bounded. An input is finished, and handed
back, when all its tensors have been through the model.

With ``split_channels`` (Bag-of-Channels models, whose channels are encoded independently), an image
with more channels than ``batch_size`` is cut into channel groups of at most ``batch_size`` that run
as separate images; their per-channel tokens are joined again in channel order, so no forward pass
holds more than ``batch_size`` channel-images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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
    chunks: int = 1  # channel groups per tensor (split_channels)
    step: int = 0  # channels per group

    def tensor(self, part: int) -> torch.Tensor:
        j, q = divmod(part, self.chunks)
        t = self.item.tensors[j]
        return t if self.chunks == 1 else t[q * self.step:(q + 1) * self.step]

    def joined(self) -> list[TokenResult]:
        """Per tensor its result; channel groups joined in channel order (cls (L, K, D), patch_mean (K, D))."""
        if self.chunks == 1:
            return self.results  # type: ignore[return-value]
        out = []
        for j in range(len(self.results) // self.chunks):
            parts = self.results[j * self.chunks:(j + 1) * self.chunks]
            cls = None if parts[0][0] is None else np.concatenate([p[0] for p in parts], axis=1)
            mean = None if parts[0][2] is None else np.concatenate([p[2] for p in parts], axis=0)
            out.append((cls, None, mean))
        return out


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
        split_channels: cut images with more than ``batch_size`` channels into channel groups (only for
            models that encode each channel on its own: Bag of Channels).

    Example:
        >>> batcher = ShapeBatcher(forward, batch_size=256)
        >>> for item in loader:
        ...     for done in batcher.put(item): write(done)
        >>> for done in batcher.flush(): write(done)
    """

    def __init__(self, forward: Forward, *, batch_size: int, max_buffered: int | None = None,
                 split_channels: bool = False) -> None:
        self.forward = forward
        self.batch_size = batch_size
        self.split_channels = split_channels
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
        k, *hw = tuple(item.tensors.shape[1:])
        step = self.batch_size if self.split_channels and k > self.batch_size else k
        chunks = -(-k // step)
        self._pending[item.index] = _Pending(item, [None] * (n * chunks), n * chunks, chunks, step)
        for q in range(chunks):
            shape = (min(step, k - q * step), *hw)
            queue = self._queues.setdefault(shape, _Queue())
            queue.entries += [(item.index, j * chunks + q) for j in range(n)]
            self.buffered += n * shape[0]
            per = self.images_per_batch(shape[0])
            while shape in self._queues and len(self._queues[shape].entries) >= per:
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
        tensors = [self._pending[i].tensor(j) for i, j in entries]
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
                self._finished.append(Finished(pending.item, pending.joined()))

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
