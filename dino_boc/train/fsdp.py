"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the student and the teacher, as DINOv2 shards ViT-L.

Each transformer block and then the whole network (backbone + heads) of the student and of the teacher
is sharded over all processes, identically, so the teacher's EMA update runs shard by shard on local
tensors (:meth:`~dino_boc.train.ssl.SSLObjective.update_teacher`). Checkpoints hold FULL (unsharded)
tensors under the same keys as a DDP run's, so :mod:`dino_boc.train.export` reads both; only the
optimiser state is keyed by parameter name instead of number, so a run resumes in the mode it started in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["shard_student_teacher", "full_state", "load_full_state"]


def _parts(objective: nn.Module) -> dict[str, nn.Module]:
    return {"student": objective.student, "teacher": objective.teacher}


def shard_student_teacher(objective: nn.Module, *, device: torch.device) -> None:
    """Shard every block, then the whole student and teacher, over the default process group (in place).

    Build the optimiser AFTER this call: sharding replaces the parameters.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    for net in _parts(objective).values():
        for block in net.backbone.backbone.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(net, mesh=mesh)


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_state(objective: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """(objective state with full tensors, optimiser state keyed by name); collective, call on every rank."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state: dict[str, Any] = {}
    for prefix, net in _parts(objective).items():
        sd = get_model_state_dict(net, options=_options(cpu_offload=True))
        state.update({f"{prefix}.{k}": v for k, v in sd.items()})
    for name, module in objective.named_children():
        if name not in ("student", "teacher"):
            state.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    optim = get_optimizer_state_dict(objective.student, optimizer, options=_options(cpu_offload=True))
    return state, optim


def load_full_state(
    objective: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], optim_state: dict[str, Any]
) -> None:
    """Load what :func:`full_state` returned (every rank reads the same checkpoint)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    for prefix, net in _parts(objective).items():
        sub = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
        set_model_state_dict(net, sub, options=_options())
    for name, module in objective.named_children():
        if name not in ("student", "teacher"):
            sub = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
            module.load_state_dict(sub)
    set_optimizer_state_dict(objective.student, optimizer, optim_state_dict=optim_state, options=_options())
