"""What a training run reports: a progress bar, ``metrics.jsonl`` and TensorBoard events (when installed).

Every record holds the iteration, the epoch, each loss term (``loss/<term>``), ``lr``, ``wd``,
``momentum``, ``teacher_temp``, ``last_layer_lr``, ``images_per_s`` (samples per second over all
processes, data loading included), ``step_s`` and ``memory_mb`` (peak CUDA memory on GPU, peak resident
memory of the process on CPU). Only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["Monitor", "peak_memory_mb"]

logger = logging.getLogger(__name__)


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated (GPU) or peak resident set size of this process (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except ImportError:  # pragma: no cover - Windows
        return float("nan")


class Monitor:
    """Progress bar + JSONL + optional TensorBoard for rank 0; does nothing on other ranks.

    Args:
        run_dir: where ``metrics.jsonl`` and ``tensorboard/`` go.
        total: number of iterations of the run.
        start: first iteration (when resuming).
        enabled: False on ranks other than 0.
        progress: show the tqdm bar.
        tensorboard: write TensorBoard events if the package is installed.
        log_every: iterations between JSONL / TensorBoard records.
    """

    def __init__(
        self, run_dir: str | Path, *, total: int, start: int = 0, enabled: bool = True, progress: bool = True,
        tensorboard: bool = True, log_every: int = 10,
    ) -> None:
        self.enabled, self.log_every = enabled, max(1, int(log_every))
        self.bar = None
        self.writer = None
        self.jsonl = None
        if not enabled:
            return
        run_dir = Path(run_dir)
        self.jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, mininterval=1.0,
                            file=sys.stderr, disable=None)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except ImportError:
                logger.info('TensorBoard is not installed; logging to metrics.jsonl only '
                            '(pip install "dino-boc[train]")')

    def log(self, record: dict[str, Any]) -> None:
        """Record one iteration (written every ``log_every`` iterations and for the last one)."""
        if not self.enabled:
            return
        it = int(record["iteration"])
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                loss=f"{record.get('loss/total', float('nan')):.4f}", lr=f"{record.get('lr', 0):.2e}",
                img_s=f"{record.get('images_per_s', 0):.1f}", refresh=False,
            )
        if it % self.log_every == 0 or record.get("last", False):
            clean = {k: v for k, v in record.items() if k != "last"}
            self.jsonl.write(json.dumps(clean) + "\n")
            if self.writer is not None:
                for k, v in clean.items():
                    if k != "iteration" and isinstance(v, (int, float)):
                        self.writer.add_scalar(k, v, it)

    def message(self, text: str) -> None:
        """A line on the console that does not break the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            logger.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.flush()
            os.fsync(self.jsonl.fileno())
            self.jsonl.close()
        self.bar = self.writer = self.jsonl = None
