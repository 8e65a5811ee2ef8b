"""Training checkpoints: written atomically, found again for ``--resume``, old ones pruned.

A checkpoint is one ``torch.save`` file ``RUN/checkpoints/checkpoint_<iteration>.pt`` holding plain
tensors and Python values only (loadable with ``torch.load(weights_only=True)``):

``format``, ``version``, ``iteration`` (completed iterations = the data-loader position),
``objective`` (student, teacher, heads and the centring buffers of the losses, keys without training
wrappers), ``optimizer``, ``rng`` (one entry per rank: torch CPU/CUDA, numpy and Python states),
``data`` (iteration, samples seen, epoch), ``config`` (the resolved config as a dict), ``world_size``.

The file is written to a temporary name in the same folder, flushed to disk, then renamed over the
final name, so a crash never leaves a half-written checkpoint; ``RUN/checkpoints/latest`` names the
newest one (also replaced atomically).
"""

from __future__ import annotations

import logging
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dino_boc.errors import WeightsError
from dino_boc.outputs.shards import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "checkpoint_dir",
    "checkpoint_path",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "prune_checkpoints",
    "rng_state",
    "set_rng_state",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dino_boc.train.checkpoint"
CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    """``RUN/checkpoints/checkpoint_<iteration, 8 digits>.pt``."""
    return checkpoint_dir(run_dir) / f"checkpoint_{iteration:08d}.pt"


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` (with ``iteration``) atomically, point ``latest`` at it, keep the ``keep`` newest.

    Returns:
        The checkpoint path.
    """
    it = int(state["iteration"])
    path = checkpoint_path(run_dir, it)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    atomic_write(path, lambda f: torch.save(full, f))  # the outputs' rule: temporary file, fsync, rename
    atomic_write(path.parent / "latest", lambda f: f.write(path.name.encode() + b"\n"))
    prune_checkpoints(run_dir, keep=keep)
    logger.info("saved checkpoint %s", path)
    return path


def _listed(run_dir: str | Path) -> list[tuple[int, Path]]:
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def prune_checkpoints(run_dir: str | Path, *, keep: int = 2) -> None:
    """Delete all but the ``keep`` newest checkpoints (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for _, p in _listed(run_dir)[:-keep]:
        p.unlink(missing_ok=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run (``latest``, else the highest iteration), or None."""
    d = checkpoint_dir(run_dir)
    pointer = d / "latest"
    if pointer.is_file():
        p = d / pointer.read_text().strip()
        if p.is_file():
            return p
    found = _listed(run_dir)
    return found[-1][1] if found else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (on CPU).

    Raises:
        WeightsError: missing, unreadable or not a dino_boc training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise WeightsError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"{path} is not a dino_boc training checkpoint (no format={CHECKPOINT_FORMAT!r}); "
            "to start from model weights use init.weights=PATH"
        )
    return state


def rng_state() -> dict[str, Any]:
    """This process's random states (torch CPU/CUDA, numpy, Python) as plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
