"""The training loop: one process (CPU or GPU) or many (``torchrun``: DDP, or FSDP2 for ViT-L).

>>> from dino_boc.train.config import load_config
>>> from dino_boc.train.engine import train
>>> cfg = load_config("tiny_cpu", ["data.sources=[{path: examples/data/crops_train.tif}]"])
>>> result = train(cfg, output_dir="runs/tiny")

Launch many processes with ``torchrun --nproc-per-node=8 -m dino_boc train CONFIG.yaml``; the backend
is NCCL on GPUs and gloo on CPU. ``train.batch_size`` is the global batch: each process takes its share.

Per iteration ``it``: the schedules' values at ``it`` are applied; the batch of ``it`` (a pure function of
the seed and ``it``) goes through :meth:`~dino_boc.train.ssl.SSLObjective.losses` under bf16 autocast on
GPU; the loss terms are averaged over processes and checked — a NaN or infinite loss raises
:class:`NonFiniteLossError` BEFORE the optimiser step, so the weights in memory and every checkpoint on
disk stay good; otherwise backward, the gradient of each student module is clipped (3.0), AdamW steps
(the head's last layer at lr 0 during the first epoch; its gradient still counts in the clipping norm and
in AdamW's moments, as the released loop) and the teacher follows by EMA. Every
``train.checkpoint_every`` iterations (and at the end) a checkpoint is written atomically; ``resume=True``
continues from the newest one and reproduces the losses of an uninterrupted run (drop path is re-seeded
from ``(seed, it, rank)`` every iteration and the data are indexed by iteration).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from dino_boc import distributed as dist_utils
from dino_boc.errors import ConfigError, DinoBocError
from dino_boc.models import build_model
from dino_boc.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from dino_boc.train.config import HeadConfig, TrainConfig, config_to_dict, load_config, save_config, saved_config
from dino_boc.train.data import BatchBuilder, SampleIndex, iters_per_epoch, make_loader, seeded
from dino_boc.train.monitor import Monitor, peak_memory_mb
from dino_boc.train.optim import apply_schedules, build_optimizer
from dino_boc.train.schedules import ScheduleConfig, Schedules, build_schedules
from dino_boc.train.sources import ImageSource, build_source
from dino_boc.train.ssl import HeadSpec, SSLObjective
from dino_boc.precision import resolve_device, resolve_train_precision

__all__ = ["train", "Trainer", "TrainResult", "NonFiniteLossError", "LossHook", "RESUME_MUTABLE_KEYS"]

logger = logging.getLogger(__name__)

LossHook = Callable[[int, dict[str, torch.Tensor]], "dict[str, torch.Tensor] | None"]
"""``hook(iteration, terms) -> terms | None``: sees (and may replace) each step's loss terms before the
backward; for custom terms, extra logging, or fault injection in tests."""

#: config keys that may differ between a run and its resumption (they do not change the numbers)
RESUME_MUTABLE_KEYS = (
    "train.output_dir", "train.num_workers", "train.checkpoint_every", "train.keep_checkpoints",
    "train.log_every", "train.tensorboard", "train.progress", "train.max_iterations", "train.num_threads",
    "data.num_workers", "data.prefetch_factor", "train.compile", "train.grad_checkpointing",
)


class NonFiniteLossError(DinoBocError, ArithmeticError):
    """A loss became NaN or infinite; the run stopped before updating the weights."""


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank).

    Attributes:
        run_dir: the run folder.
        start_iteration: first iteration run by this call (> 0 when resumed).
        iterations: iterations completed in total.
        total_iterations: length of the schedules.
        last_checkpoint: path of the newest checkpoint.
        history: one record per iteration run by this call (loss terms, schedules, speed), as logged.
    """

    run_dir: Path
    start_iteration: int
    iterations: int
    total_iterations: int
    last_checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _head_spec(c: HeadConfig) -> HeadSpec:
    """The head a ``dino`` or ``ibot`` section describes."""
    return HeadSpec(c.head_n_prototypes, c.head_hidden_dim, c.head_bottleneck_dim, c.head_n_layers,
                    norm_last_layer=c.head_norm_last_layer)


def check_resume_config(saved: TrainConfig, current: TrainConfig) -> None:
    """Raise if ``current`` changes anything of ``saved`` that would change the numbers.

    Raises:
        ConfigError: naming the differing keys.
    """
    a, b = _flatten(config_to_dict(saved)), _flatten(config_to_dict(current))
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUME_MUTABLE_KEYS)
    if diff:
        details = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:8])
        raise ConfigError(
            f"resuming with a config that differs from the run's ({details}); resume with the run's own "
            "config (dino-boc train RUN/config.yaml --resume) or start a new run in another --output-dir"
        )


class Trainer:
    """One training run; :meth:`run` trains. See the module docstring.

    Args:
        config: the resolved config.
        output_dir: run folder (default ``config.train.output_dir``).
        sources: image sources to use instead of ``config.data.sources`` (e.g. in-memory arrays).
        loss_hook: see :data:`LossHook`.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        output_dir: str | os.PathLike | None = None,
        sources: Sequence[ImageSource] | None = None,
        loss_hook: LossHook | None = None,
    ) -> None:
        self.cfg = config
        self.run_dir = Path(output_dir if output_dir is not None else config.train.output_dir)
        self.loss_hook = loss_hook
        self._sources = list(sources) if sources is not None else None
        self._owns_group = False

    # ------------------------------------------------------------------ setup
    def _device(self) -> torch.device:
        try:
            return resolve_device(self.cfg.train.device, local_rank=self.local_rank)
        except ConfigError as exc:
            raise ConfigError(f"train.device: {exc}") from exc

    def _setup_distributed(self) -> None:
        wants_cuda = self.cfg.train.device == "cuda" or (self.cfg.train.device == "auto" and torch.cuda.is_available())
        already = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank, self.world, self.local_rank = dist_utils.init_distributed("nccl" if wants_cuda else "gloo")
        self._owns_group = not already and self.world > 1
        if self.cfg.train.distributed == "fsdp" and self.world == 1 and not torch.distributed.is_initialized():
            # FSDP needs a process group, even of one
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
            torch.distributed.init_process_group("nccl" if wants_cuda else "gloo", rank=0, world_size=1)
            self._owns_group = True

    def _build_sources(self) -> list[ImageSource]:
        if self._sources is not None:
            return self._sources
        if not self.cfg.data.sources:
            raise ConfigError(
                "no training data: set data.sources, e.g. data.sources=[{path: images/}] or "
                "[{path: crops.tif, kind: stack}] (or pass sources= to train())"
            )
        return [build_source(s) for s in self.cfg.data.sources]

    def _schedules(self, index: SampleIndex) -> tuple[Schedules, int]:
        o = self.cfg.optim
        ipe = o.iters_per_epoch or iters_per_epoch(index, self.cfg.train.batch_size)
        sc = ScheduleConfig(**{f.name: getattr(o, f.name) for f in fields(ScheduleConfig)} | {"iters_per_epoch": ipe})
        return build_schedules(sc, global_batch_size=self.cfg.train.batch_size), ipe

    def _build_model(self):
        cfg = self.cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            model = build_model(cfg.model)
        if cfg.init.weights:
            from dino_boc.weights import load_model
            from dino_boc.weights.load import load_state_dict_strict

            src = load_model(cfg.init.weights, device="cpu")
            train_only = ("drop_path_rate", "drop_path_uniform")
            keep = {k: v for k, v in src.config.to_dict().items() if k not in train_only}
            mine = {k: v for k, v in cfg.model.to_dict().items() if k not in train_only}
            if keep != mine:
                diff = {k: (mine[k], keep[k]) for k in mine if mine[k] != keep.get(k)}
                raise ConfigError(
                    f"init.weights={cfg.init.weights!r} has another architecture (model config vs weights: {diff}); "
                    "set the model section to the weights' architecture"
                )
            load_state_dict_strict(model, src.state_dict(), source=str(cfg.init.weights))
            logger.info("student and teacher start from %s", cfg.init.weights)
        if cfg.train.grad_checkpointing:
            model.set_grad_checkpointing(True)
        return model

    def _build_objective(self, model) -> SSLObjective:
        d, i = self.cfg.dino, self.cfg.ibot
        head, ibot_head = _head_spec(d), _head_spec(i) if i.separate_head else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeded(self.cfg.train.seed, 99))
            return SSLObjective(
                model, dino_head=head, ibot_head=ibot_head, dino_weight=d.loss_weight,
                koleo_weight=d.koleo_loss_weight, ibot_weight=i.loss_weight,
                channel_weight=d.channel_loss_weight, channel_koleo_weight=d.channel_koleo_loss_weight,
                student_temp=d.student_temp, center_momentum=d.center_momentum, centering=d.centering,
            )

    def _optimizer(self, objective: SSLObjective) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return build_optimizer(
            objective.student, lr_decay=o.layerwise_decay, patch_embed_lr_mult=o.patch_embed_lr_mult,
            num_layers=objective.student.backbone.config.depth, betas=(o.adamw_beta1, o.adamw_beta2),
            weight_decay_rule=o.weight_decay_rule,
        )

    def _wrap(self, objective: SSLObjective) -> tuple[nn.Module, nn.Module]:
        """(student callable, teacher callable): DDP / FSDP2 / compiled as configured."""
        t = self.cfg.train
        student: nn.Module = objective.student
        teacher: nn.Module = objective.teacher
        if t.distributed == "fsdp":
            from dino_boc.train.fsdp import shard_student_teacher

            shard_student_teacher(objective, device=self.device)
        elif self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # without iBOT the mask token (and a separate iBOT head) get no gradient
            unused = self.cfg.ibot.loss_weight <= 0
            student = DDP(objective.student, device_ids=ids, find_unused_parameters=unused)
        if t.compile:
            student = torch.compile(student)
            teacher = torch.compile(teacher)
        return student, teacher

    def setup(self) -> None:
        """Processes, data, schedules, model, objective, optimiser (called by :meth:`run`)."""
        cfg = self.cfg
        self._setup_distributed()
        self.device = self._device()
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        dist_utils.barrier()
        sources = self._build_sources()
        unit = "channel" if cfg.model.arch == "boc" else "image"
        self.index = SampleIndex(sources, unit=unit, balance=cfg.data.balance, seed=cfg.train.seed,
                                 batch_size=cfg.train.batch_size)
        self.schedules, self.iters_per_epoch = self._schedules(self.index)
        self.total = len(self.schedules)
        self.objective = self._build_objective(self._build_model()).to(self.device)
        self.objective.train()
        self.student_fn, self.teacher_fn = self._wrap(self.objective)  # before the optimiser: FSDP swaps params
        self.optimizer = self._optimizer(self.objective)
        i = cfg.ibot
        self.builder = BatchBuilder(
            self.index, cfg.crops, patch_size=cfg.model.patch_size, rank=self.rank, world_size=self.world,
            seed=cfg.train.seed, intensity=cfg.data.intensity, percentiles=cfg.data.percentiles,
            scale=cfg.data.scale, mask_probability=i.mask_sample_probability if i.loss_weight > 0 else 0.0,
            mask_ratio=i.mask_ratio_min_max, mask_mode=i.mask_mode, hcs=cfg.data.hcs,
            channel_ids=cfg.model.arch == "channel_vit",
        )
        precision = resolve_train_precision(cfg.train.precision, self.device)
        self.autocast = precision == "bf16"
        if self.rank == 0:
            n_params = sum(p.numel() for p in self.objective.student.backbone.parameters())
            logger.info(
                "%s: %d sources, %d items (%s), %d iterations/epoch, %d iterations, global batch %d over %d "
                "process(es), %.1fM backbone parameters, %s on %s",
                cfg.model.arch, len(sources), self.index.n_items, unit, self.iters_per_epoch, self.total,
                cfg.train.batch_size, self.world, n_params / 1e6, precision, self.device,
            )

    # ------------------------------------------------------------------ state
    def state(self, iteration: int) -> dict[str, Any]:
        """Everything a checkpoint holds (collective with FSDP: call on every rank)."""
        if self.cfg.train.distributed == "fsdp":
            from dino_boc.train.fsdp import full_state

            objective_state, optim_state = full_state(self.objective, self.optimizer)
        else:
            objective_state, optim_state = self.objective.state_dict(), self.optimizer.state_dict()
        rngs = [rng_state()]
        if torch.distributed.is_initialized() and self.world > 1:
            rngs = [None] * self.world
            torch.distributed.all_gather_object(rngs, rng_state())
        return {
            "iteration": iteration,
            "objective": {k: v.detach().cpu() for k, v in objective_state.items()},
            "optimizer": optim_state,
            "rng": rngs,
            "data": {"iteration": iteration, "samples_seen": iteration * self.cfg.train.batch_size,
                     "epoch": iteration / self.iters_per_epoch},
            "config": config_to_dict(self.cfg),
            "world_size": self.world,
        }

    def load_state(self, state: dict[str, Any]) -> int:
        """Restore a checkpoint; returns the iteration to continue from."""
        saved = saved_config(state["config"])
        check_resume_config(saved, self.cfg)
        if self.cfg.train.distributed == "fsdp":
            from dino_boc.train.fsdp import load_full_state

            load_full_state(self.objective, self.optimizer, state["objective"], state["optimizer"])
        else:
            self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
        rngs = state.get("rng") or []
        if len(rngs) == self.world:
            set_rng_state(rngs[self.rank])
        else:
            logger.warning("checkpoint has RNG states of %d processes, this run has %d: not restored",
                           len(rngs), self.world)
        return int(state["iteration"])

    def save(self, iteration: int) -> Path | None:
        state = self.state(iteration)  # collective
        path = None
        if self.rank == 0:
            path = save_checkpoint(self.run_dir, state, keep=self.cfg.train.keep_checkpoints)
        dist_utils.barrier()
        return path

    # ------------------------------------------------------------------ loop
    def _reduce_terms(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        names = sorted(terms)
        vals = torch.stack([terms[n].detach().float().reshape(()) for n in names])
        if torch.distributed.is_initialized() and self.world > 1:
            torch.distributed.all_reduce(vals)
            vals = vals / self.world
        return dict(zip(names, vals.tolist()))

    def train_step(self, batch, it: int) -> dict[str, float]:
        """One optimiser step on ``batch`` (a :class:`~dino_boc.train.data.Batch`) at iteration ``it``.

        Returns:
            The loss terms averaged over processes (``loss/<term>``) and the schedule values used.

        Raises:
            NonFiniteLossError: a NaN / infinite loss (nothing was updated).
        """
        vals = self.schedules.at(it)
        apply_schedules(self.optimizer, lr=vals["lr"], wd=vals["wd"], last_layer_lr=vals["last_layer_lr"])
        torch.manual_seed(seeded(self.cfg.train.seed, 7, it, self.rank))  # drop path: a function of (it, rank)
        batch = batch.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            terms = self.objective.losses(
                batch.global_crops, batch.local_crops, masks=batch.masks, channel_ids=batch.channel_ids,
                teacher_temp=vals["teacher_temp"], n_global=self.cfg.crops.n_global,
                student=self.student_fn, teacher=self.teacher_fn,
            )
        if self.loss_hook is not None:
            terms = self.loss_hook(it, terms) or terms
        reduced = self._reduce_terms(terms)
        if not all(math.isfinite(v) for v in reduced.values()):
            self._diverged(it, reduced)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        # the frozen last layer keeps its gradient (clip norm, Adam moments); its lr is 0 (Schedules)
        clip = self.cfg.optim.clip_grad
        if clip > 0:
            for module in self.objective.student.children():
                params = [p for p in module.parameters() if p.grad is not None]
                if params:
                    torch.nn.utils.clip_grad_norm_(params, clip)
        self.optimizer.step()
        self.objective.update_teacher(vals["momentum"])
        return {**{f"loss/{k}": v for k, v in reduced.items()}, **vals}

    def _diverged(self, it: int, reduced: dict[str, float]) -> None:
        last = latest_checkpoint(self.run_dir)
        where = (f"the last good checkpoint is {last} (iteration {load_checkpoint(last)['iteration']})"
                 if last is not None else "no checkpoint was written yet")
        terms = ", ".join(f"{k}={v:.4g}" for k, v in sorted(reduced.items()))
        raise NonFiniteLossError(
            f"the loss is not finite at iteration {it} ({terms}); the run stopped before the optimiser step "
            f"and {where}. Lower optim.base_lr, lengthen optim.warmup_epochs, lower optim.clip_grad or use "
            "train.precision=fp32, then continue with --resume"
        )

    def run(self, *, resume: bool = False) -> TrainResult:
        """Train to the end of the schedules (or ``train.max_iterations``).

        Args:
            resume: continue from the newest checkpoint in the run folder (start fresh if there is none).

        Raises:
            NonFiniteLossError: a NaN / infinite loss.
            ConfigError: bad settings, or a resume with a config that changes the numbers.
        """
        self.setup()
        try:
            return self._run(resume)
        finally:
            if self._owns_group:
                dist_utils.cleanup()

    def _run(self, resume: bool) -> TrainResult:
        cfg = self.cfg
        start = 0
        if resume:
            last = latest_checkpoint(self.run_dir)
            if last is not None:
                start = self.load_state(load_checkpoint(last))
                logger.info("resumed from %s at iteration %d", last, start)
            else:
                logger.info("--resume: no checkpoint in %s yet; starting at iteration 0", self.run_dir)
        elif latest_checkpoint(self.run_dir) is not None:
            raise ConfigError(
                f"{self.run_dir} already holds checkpoints; pass --resume to continue that run or choose another "
                "--output-dir"
            )
        if self.rank == 0:
            save_config(cfg, self.run_dir / "config.yaml")
        stop = self.total if cfg.train.max_iterations is None else min(self.total, cfg.train.max_iterations)
        loader = make_loader(
            self.builder, start=start, stop=stop, num_workers=cfg.data.num_workers,
            prefetch_factor=cfg.data.prefetch_factor, pin_memory=self.device.type == "cuda",
        )
        monitor = Monitor(self.run_dir, total=stop, start=start, enabled=self.rank == 0,
                          progress=cfg.train.progress, tensorboard=cfg.train.tensorboard,
                          log_every=cfg.train.log_every)
        history: list[dict[str, Any]] = []
        last_ckpt = latest_checkpoint(self.run_dir) if resume else None
        t_last = time.perf_counter()
        try:
            for batch in loader:
                it = batch.iteration
                record = self.train_step(batch, it)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                now = time.perf_counter()
                step_s, t_last = now - t_last, now
                record.update(
                    iteration=it, epoch=it / self.iters_per_epoch, step_s=step_s,
                    images_per_s=cfg.train.batch_size / step_s, memory_mb=peak_memory_mb(self.device),
                    last=it + 1 == stop,
                )
                history.append({k: v for k, v in record.items() if k != "last"})
                monitor.log(record)
                done = it + 1
                if done % cfg.train.checkpoint_every == 0 or done == stop:
                    last_ckpt = self.save(done) or last_ckpt
        finally:
            monitor.close()
        return TrainResult(self.run_dir, start, stop, self.total, last_ckpt, history)


def train(
    config: TrainConfig | str | os.PathLike | dict | None = None,
    overrides: Sequence[str] | dict[str, Any] = (),
    *,
    output_dir: str | os.PathLike | None = None,
    resume: bool = False,
    sources: Sequence[ImageSource] | None = None,
    loss_hook: LossHook | None = None,
) -> TrainResult:
    """Pretrain a model with the paper's DINOv2 recipe (see the module docstring).

    Args:
        config: a :class:`~dino_boc.train.config.TrainConfig`, a YAML path, a shipped config name
            (``"tiny_cpu"``, ``"vitl16_boc"``, ...) or a dict; None = the paper's ViT-L/16 BoC defaults.
        overrides: ``["section.key=value", ...]`` applied on top.
        output_dir: run folder (default ``train.output_dir``).
        resume: continue from the newest checkpoint of ``output_dir``.
        sources: image sources instead of ``data.sources`` (e.g. ``[ArraySource(images)]``).
        loss_hook: see :data:`LossHook`.

    Returns:
        :class:`TrainResult`; export the teacher with :func:`dino_boc.train.export.export_run`.

    Raises:
        ConfigError: invalid settings, no data, an existing run without ``resume``.
        NonFiniteLossError: the loss became NaN / infinite (checkpoints on disk stay good).
    """
    cfg = config if isinstance(config, TrainConfig) and not overrides else load_config(config, overrides)
    return Trainer(cfg, output_dir=output_dir, sources=sources, loss_hook=loss_hook).run(resume=resume)
