"""Tiny, seeded training settings shared by the engine tests (CPU, a few seconds per run).

Imported by the test modules of this folder (pytest puts it on ``sys.path``).
"""

from __future__ import annotations

import numpy as np

from dino_boc.train.config import TrainConfig, load_config

TINY = [
    "model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.patch_size=8", "model.img_size=16",
    "crops.global_size=16", "crops.local_size=8", "crops.n_local=2",
    "dino.head_n_prototypes=64", "dino.head_hidden_dim=64", "dino.head_bottleneck_dim=32",
    "train.batch_size=4", "train.progress=false", "train.tensorboard=false", "train.log_every=1",
    "train.checkpoint_every=3", "optim.epochs=4", "optim.iters_per_epoch=2", "optim.warmup_epochs=1",
    "optim.warmup_teacher_temp_epochs=1", "data.num_workers=0",
]


def tiny_config(*overrides: str) -> TrainConfig:
    """The ``tiny_cpu`` config shrunk further; ``overrides`` go on top."""
    return load_config("tiny_cpu", [*TINY, *overrides])


def random_images(n: int = 10, channels: int | list[int] = 1, size: int = 24, seed: int = 0) -> list[np.ndarray]:
    """``n`` random uint16 images ``(K, size, size)``; ``channels`` may give K per image."""
    rng = np.random.default_rng(seed)
    ks = channels if isinstance(channels, list) else [channels] * n
    return [rng.integers(0, 4000, size=(k, size, size), dtype=np.uint16) for k in ks]
