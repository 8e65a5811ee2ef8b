"""Released-format checkpoints written from a tiny seeded model, one writer per layout.

The layouts are those of the DINOv2 / cell_dino release:

* ``plain``: the backbone state dict with unchunked keys ``blocks.{i}.*``;
* ``chunked``: ``block_chunks=2``; DINOv2's ``BlockChunk`` pads chunk ``c`` with ``nn.Identity()`` so that
  its blocks keep their global index: ``blocks.{c}.{i}.*`` with ``i`` the global block index;
* ``training``: ``{"teacher": {"module.backbone.*": ..., "module.dino_head.*": ..., "module.ibot_head.*"}}``
  (keys as a DDP-wrapped teacher saves them, chunked like the release), plus a student that must be ignored.

Every layout holds ``mask_token`` (used only in training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import dino_boc
from core.active_blocks import with_active_blocks

#: D = 128 so that the default head count D / 64 = 2 is the tiny model's
TINY = dict(embed_dim=128, depth=4, num_heads=2, patch_size=8, img_size=32)
LAYOUTS = ("plain", "chunked", "training")


def chunk_keys(state: dict[str, torch.Tensor], depth: int, block_chunks: int) -> dict[str, torch.Tensor]:
    """``blocks.{i}.*`` -> ``blocks.{chunk}.{i}.*`` as DINOv2's chunked ``blocks`` ModuleList names them."""
    chunksize = depth // block_chunks
    chunk_of = {}
    for c, start in enumerate(range(0, depth, chunksize)):
        for i in range(start, min(start + chunksize, depth)):
            chunk_of[i] = c
    out = {}
    for key, value in state.items():
        if key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            key = f"blocks.{chunk_of[int(i)]}.{i}.{rest}"
        out[key] = value
    return out


def backbone_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}


def released_checkpoint(model, layout: str) -> dict:
    """The checkpoint object of ``layout`` for ``model``'s backbone."""
    state = backbone_state(model)
    assert "mask_token" in state
    if layout == "plain":
        return state
    if layout == "chunked":
        return chunk_keys(state, model.config.depth, 2)
    if layout == "training":
        gen = torch.Generator().manual_seed(1)
        d = model.config.embed_dim
        teacher = {f"module.backbone.{k}": v for k, v in chunk_keys(state, model.config.depth, 4).items()}
        teacher["module.dino_head.mlp.0.weight"] = torch.randn(256, d, generator=gen)
        teacher["module.dino_head.last_layer.weight_g"] = torch.ones(1000, 1)
        teacher["module.ibot_head.mlp.0.weight"] = torch.randn(256, d, generator=gen)
        student = {k: v + 1.0 for k, v in teacher.items()}
        return {"teacher": teacher, "student": student, "iteration": torch.tensor(125000)}
    raise ValueError(layout)


@pytest.fixture
def tiny_model():
    return with_active_blocks(dino_boc.create_model("boc", seed=0, **TINY))


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 4096, size=(3, 40, 32)).astype(np.uint16)


@pytest.fixture
def write_checkpoint(tmp_path):
    """``write_checkpoint(model, layout, obj=None) -> Path``: save a released-format ``.pth``."""

    def write(model, layout: str, obj: dict | None = None) -> Path:
        path = tmp_path / f"{layout}.pth"
        torch.save(released_checkpoint(model, layout) if obj is None else obj, path)
        return path

    return write
