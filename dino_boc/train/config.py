"""Training configuration: frozen dataclasses per concern, read from YAML, overridden by ``key=value``.

A run's configuration is :class:`TrainConfig`; its sections are

* ``model``    — :class:`~dino_boc.models.config.ModelConfig` (architecture, drop path, LayerScale);
* ``init``     — :class:`InitConfig` (start from pretrained weights: continue pretraining);
* ``data``     — :class:`DataConfig` (sources, balancing, intensity scaling, HCS, workers);
* ``crops``    — :class:`~dino_boc.train.augment.MultiCropConfig` (multi-crop augmentation);
* ``dino``     — :class:`DinoConfig` (head, DINO and KoLeo terms, HA channel-CLS terms);
* ``ibot``     — :class:`IbotConfig` (masked-patch term and its masks);
* ``optim``    — :class:`OptimConfig` (length, schedules, AdamW, clipping);
* ``train``    — :class:`RunConfig` (batch size, seed, device, precision, distribution, checkpoints, logs).

The defaults of every field are the paper's ViT-L/16 DINO BoC recipe (§4.2, App. D.1), so a YAML file
only lists what differs. :func:`load_config` merges, in order: the defaults, the YAML file (or a shipped
config by name: ``vitl16_boc``, ``vitl16_ha``, ``vitl16_channel_vit``, ``tiny_cpu``), then dotted
overrides such as ``optim.base_lr=1e-4`` or ``data.sources=[{path: imgs/}]`` (values parsed as YAML).
Unknown keys are rejected with the valid keys of their section named.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from dino_boc.errors import ConfigError
from dino_boc.models.config import ModelConfig
from dino_boc.precision import TrainPrecision
from dino_boc.train.augment import MultiCropConfig
from dino_boc.train.optim import WeightDecayRule
from dino_boc.train.schedules import ScheduleConfig

__all__ = [
    "SourceConfig",
    "DataConfig",
    "InitConfig",
    "HeadConfig",
    "DinoConfig",
    "IbotConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "save_config",
    "parse_overrides",
    "config_to_dict",
    "config_from_dict",
    "saved_config",
    "PRE_RELEASED_DEFAULTS",
    "shipped_configs",
    "CONFIG_DIR",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

SourceKind = Literal["auto", "files", "stack"]
Intensity = Literal["minmax", "percentile", "divide"]
Balance = Literal["none", "sources"]


@dataclass(frozen=True)
class SourceConfig:
    """One data source.

    Attributes:
        path: a folder, image file, glob, LoadData CSV or path table (``kind="files"``, read with
            :func:`dino_boc.io.collect_sources`), or a ``.tif``/``.npy`` stack of single-channel images
            ``(N, H, W)`` (``kind="stack"``). Relative paths start at the working directory.
        kind: ``"files"``, ``"stack"`` or ``"auto"`` (a ``.npy`` file or a ``.tif`` whose name contains
            ``crops`` or ``stack`` is a stack; anything else is files).
        name: label of the source in logs (default: the path).
        channels: number of channels of every image of the source, or None to read it from the first
            image (``probe="first"``) or from every image (``probe="all"``).
        probe: how to learn the channel counts when ``channels`` is None.
        channel_ids: Channel-ViT only: the channel-embedding id of each image channel (default 0..K-1).
        dims, channel_width: read options passed to the readers (axes of the files; CHAMMI tapes).
    """

    path: str
    kind: SourceKind = "auto"
    name: str = ""
    channels: int | None = None
    probe: Literal["first", "all"] = "first"
    channel_ids: tuple[int, ...] | None = None
    dims: str | None = None
    channel_width: int | None = None


@dataclass(frozen=True)
class DataConfig:
    """What the model is trained on.

    Attributes:
        sources: one or more :class:`SourceConfig`.
        balance: ``"sources"`` draws each source equally often per epoch (smaller sources cycle, as the
            paper's Extended-CHAMMI runs); ``"none"`` draws every item once per epoch.
        intensity: how each image channel is mapped to [0, 1] before the crops (brightness/contrast act
            through clipping to [0, 1]; the final self-normalisation removes any per-channel affine map):
            ``"divide"`` (default: ``x / scale``, the released ``Div255``; right for 8-bit images),
            ``"minmax"`` (per-image affine map of min..max to 0..1: for 12/16-bit or float images, whose
            values exceed ``scale`` and would saturate, or dim 8-bit data) or ``"percentile"`` (clip to
            ``percentiles`` then scale: hot pixels).
        percentiles: low/high percentiles for ``intensity="percentile"``.
        scale: divisor for ``intensity="divide"`` (255; 65535 maps 16-bit images to [0, 1]).
        hcs: hierarchical channel sampling (Bao et al. 2024) for HA / Channel-ViT: every batch keeps a
            random subset of m ~ U{1..K} channels (the same for the whole batch). Ignored by BoC.
        num_workers: DataLoader worker processes per rank (each builds whole batches).
        prefetch_factor: batches prefetched per worker.
    """

    sources: tuple[SourceConfig, ...] = ()
    balance: Balance = "sources"
    intensity: Intensity = "divide"
    percentiles: tuple[float, float] = (0.1, 99.9)
    scale: float = 255.0
    hcs: bool = False
    num_workers: int = 8
    prefetch_factor: int = 2


@dataclass(frozen=True)
class InitConfig:
    """Where the student and teacher start.

    Attributes:
        weights: None (random, seeded by ``train.seed``) or anything :func:`dino_boc.load_model` takes
            (a registry name, a model folder, a checkpoint) to continue pretraining from; its
            architecture must match ``model``.
    """

    weights: str | None = None


@dataclass(frozen=True)
class HeadConfig:
    """The shape of a DINO projection head: the ``head_*`` keys of the ``dino`` and ``ibot`` sections.

    Attributes:
        head_n_prototypes: prototypes P (65536; a few thousand for small runs).
        head_hidden_dim, head_bottleneck_dim, head_n_layers: head MLP (2048, 256, 3).
        head_norm_last_layer: fix the prototype norms ``last_layer.weight_g`` at 1 (DINOv1's
            ``norm_last_layer=True``); False (default, released DINOv2) trains them.
    """

    head_n_prototypes: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_n_layers: int = 3
    head_norm_last_layer: bool = False


@dataclass(frozen=True)
class DinoConfig(HeadConfig):
    """DINO head (the ``head_*`` keys of :class:`HeadConfig`) and CLS-token terms.

    Attributes:
        loss_weight: weight of the DINO term on the (global) CLS tokens.
        koleo_loss_weight: weight of KoLeo on the student CLS of each global crop (0.1).
        channel_loss_weight: HA only: weight of the DINO term on the channel CLS tokens (mean over
            channels); equal to ``loss_weight`` by default, 0 drops it (the paper's small CHAMMI runs).
        channel_koleo_loss_weight: HA only: weight of KoLeo on the channel CLS tokens of each global crop.
        student_temp: student softmax temperature (0.1).
        center_momentum: EMA momentum of the teacher centre (0.9).
        centering: ``"centering"`` (EMA centre) or ``"sinkhorn_knopp"``.
    """

    loss_weight: float = 1.0
    koleo_loss_weight: float = 0.1
    channel_loss_weight: float = 1.0
    channel_koleo_loss_weight: float = 0.1
    student_temp: float = 0.1
    center_momentum: float = 0.9
    centering: Literal["centering", "sinkhorn_knopp"] = "centering"


@dataclass(frozen=True)
class IbotConfig(HeadConfig):
    """iBOT masked-patch term; the ``head_*`` keys (:class:`HeadConfig`) shape its separate head.

    Attributes:
        loss_weight: weight of the term (1.0); 0 disables masking too.
        mask_sample_probability: fraction of global-crop images that are masked (0.5).
        mask_ratio_min_max: range of mask ratios, stratified over a batch ((0.1, 0.5)).
        mask_mode: HA / Channel-ViT: ``"shared"`` masks the same patches in every channel of an image
            (DINOv2 on RGB masks whole patches); ``"per_channel"`` draws a mask per channel. BoC: one
            channel, both are the same.
        separate_head: use its own head instead of sharing the DINO head.
    """

    loss_weight: float = 1.0
    mask_sample_probability: float = 0.5
    mask_ratio_min_max: tuple[float, float] = (0.1, 0.5)
    mask_mode: Literal["shared", "per_channel"] = "shared"
    separate_head: bool = False


@dataclass(frozen=True)
class OptimConfig(ScheduleConfig):
    """Training length, schedules and AdamW (see :mod:`dino_boc.train.schedules`).

    Attributes:
        epochs: training length in epochs.
        iters_per_epoch: optimiser steps per epoch; None = items per epoch // global batch size.
        base_lr: peak lr for a global batch of 1024 (5e-4), scaled by ``lr_scaling``.
        lr_scaling: ``"sqrt_wrt_1024"`` or ``"none"``.
        min_lr: final lr of the cosine (1e-6).
        warmup_epochs: linear lr warm-up (20).
        weight_decay, weight_decay_end: cosine 0.04 -> 0.2.
        momentum_teacher, final_momentum_teacher: cosine EMA momentum 0.996 -> 1.
        warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs: 0.04 -> 0.07 over 20 epochs.
        freeze_last_layer_epochs: epochs with the head's last layer at lr 0 (1); its gradient still enters
            the clipping norm and AdamW's moments, as in the released loop.
        layerwise_decay: layer-wise lr decay (0.9).
        patch_embed_lr_mult: extra lr factor of the patch embedding (0.2).
        clip_grad: max gradient norm of each student module (backbone, heads), 0 = off (3.0).
        weight_decay_rule: ``"dinov2"`` (released: only ``.bias``, ``norm`` and ``gamma`` parameters are
            exempt; tokens and positional embeddings are decayed) or ``"timm"`` (also 1-D tensors, tokens,
            positional embeddings); see :mod:`dino_boc.train.optim`.
        adamw_beta1, adamw_beta2: AdamW betas.
    """

    epochs: float = 400  # the schedule fields and their defaults are ScheduleConfig's
    iters_per_epoch: int | None = 450
    layerwise_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    clip_grad: float = 3.0
    weight_decay_rule: WeightDecayRule = "dinov2"
    adamw_beta1: float = 0.9
    adamw_beta2: float = 0.999


@dataclass(frozen=True)
class RunConfig:
    """How the run executes.

    Attributes:
        batch_size: GLOBAL batch size (samples per optimiser step over all processes; 1024 in the paper);
            each of the W processes takes ``batch_size / W``. Lower it if memory runs out; the lr follows.
        seed: seeds the weights, the data order, every crop and mask, and drop path.
        output_dir: run folder (checkpoints, logs, resolved config); the CLI's ``--output-dir`` wins.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU:
            :func:`dino_boc.precision.resolve_train_precision`), ``"bf16"`` or ``"fp32"``.
        distributed: ``"ddp"`` or ``"fsdp"`` (FSDP2 ``fully_shard`` per block; for ViT-L on many GPUs).
        grad_checkpointing: recompute block activations in backward (less memory, ~30% slower).
        compile: ``torch.compile`` the student and teacher networks.
        num_threads: CPU threads per process (0 = torch's default).
        checkpoint_every: write a checkpoint every N iterations (and at the end).
        keep_checkpoints: how many recent checkpoints to keep.
        log_every: iterations between JSONL / TensorBoard records.
        tensorboard: write TensorBoard events when the ``tensorboard`` package is installed.
        progress: show a progress bar on the console (rank 0).
        max_iterations: stop after this many iterations in total (schedules still span ``optim.epochs``);
            None runs to the end. For time-boxed runs; resume continues.
    """

    batch_size: int = 1024
    seed: int = 0
    output_dir: str = "runs/dino_boc"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: TrainPrecision = "auto"
    distributed: Literal["ddp", "fsdp"] = "ddp"
    grad_checkpointing: bool = False
    compile: bool = False
    num_threads: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True
    max_iterations: int | None = None


def _default_model() -> ModelConfig:
    return ModelConfig(arch="boc", drop_path_rate=0.1, init_values=1e-5)


@dataclass(frozen=True)
class TrainConfig:
    """The whole run; see the module docstring for the sections."""

    model: ModelConfig = field(default_factory=_default_model)
    init: InitConfig = field(default_factory=InitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    crops: MultiCropConfig = field(default_factory=MultiCropConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    ibot: IbotConfig = field(default_factory=IbotConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def replace(self, **overrides: Any) -> "TrainConfig":
        """A copy with dotted overrides applied, e.g. ``cfg.replace(**{"optim.base_lr": 1e-4})``."""
        d = config_to_dict(self)
        for key, value in overrides.items():
            _set_dotted(d, key, value)
        return config_from_dict(d)


# ---------------------------------------------------------------------------------------------- parsing
def _dataclass_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` (dataclasses, tuples, Optional, Literal)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot parse {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}={value!r}; choose one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and tp is SourceConfig:
            value = {"path": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields; got {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{where} must be a list; got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values; got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a string; got {value!r}")
        return str(value)
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = _dataclass_types(cls)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {[prefix + u for u in unknown]}; valid keys of "
            f"{where or 'the top level'}: {known}"
        )
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Nested plain dict (lists for tuples) of a config; YAML/JSON-serialisable."""
    return _plain(cfg)


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a (possibly partial) nested dict; missing keys take defaults.

    Raises:
        ConfigError: unknown keys (naming the valid ones) or values of the wrong type.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"a training config must be a mapping of sections; got {type(d).__name__}")
    return _build(TrainConfig, d, "")


#: keys added when the defaults became the released DINOv2 loop, with what a run without them did
#: (dino_boc 0.1); a checkpoint whose saved config lacks a key is read with this value
PRE_RELEASED_DEFAULTS: dict[str, Any] = {
    "model.drop_path_uniform": False,
    "crops.antialias": True,
    "dino.head_norm_last_layer": True,
    "ibot.head_norm_last_layer": True,
    "optim.weight_decay_rule": "timm",
}


def saved_config(d: dict[str, Any]) -> TrainConfig:
    """The config of a checkpoint: like :func:`config_from_dict`, but a key the checkpoint does not hold
    takes the value that run used (:data:`PRE_RELEASED_DEFAULTS`), not today's default, so that a resume
    with today's defaults is refused with the differing keys named instead of silently changing the run.
    """
    if isinstance(d, dict):
        d = copy.deepcopy(d)
        for key, value in PRE_RELEASED_DEFAULTS.items():
            section, name = key.split(".")
            if isinstance(d.get(section), dict) and name not in d[section]:
                d[section][name] = value
    return config_from_dict(d)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "sources":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = d
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            if p in node:
                raise ConfigError(f"override {key!r}: {'.'.join(parts[: i + 1])} is not a section")
            nxt = node[p] = {}
        node = nxt
    node[parts[-1]] = value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["optim.base_lr=1e-4", "data.hcs=true"]`` -> ``{"optim.base_lr": 1e-4, "data.hcs": True}``.

    Values are parsed as YAML (numbers, booleans, ``null``, lists ``[a, b]``, mappings).

    Raises:
        ConfigError: an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value; write e.g. optim.base_lr=1e-4")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc})") from None
    return out


def shipped_configs() -> list[str]:
    """Names of the configs shipped in ``dino_boc/train/configs`` (usable instead of a path)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _read_yaml(source: str | Path) -> dict[str, Any]:
    path = Path(source)
    if not path.is_file() and not path.suffix and (CONFIG_DIR / f"{source}.yaml").is_file():
        path = CONFIG_DIR / f"{source}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"config {str(source)!r} is neither a YAML file nor a shipped config; shipped: {shipped_configs()}"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model:, data:, ...); got {type(data).__name__}")
    return data


def load_config(
    source: str | Path | dict[str, Any] | TrainConfig | None = None,
    overrides: Sequence[str] | dict[str, Any] = (),
) -> TrainConfig:
    """The resolved configuration: defaults <- YAML file (or shipped name, or dict) <- overrides.

    Args:
        source: a YAML path, a shipped config name (see :func:`shipped_configs`), a nested dict, a
            :class:`TrainConfig`, or None for the defaults (the paper's ViT-L/16 BoC).
        overrides: ``["section.key=value", ...]`` or ``{"section.key": value}``.

    Raises:
        ConfigError: a missing file, invalid YAML, unknown keys (the valid keys are named) or bad values.
    """
    if isinstance(source, TrainConfig):
        base = config_to_dict(source)
    elif isinstance(source, dict):
        base = _merge(config_to_dict(TrainConfig()), source)
    elif source is None:
        base = config_to_dict(TrainConfig())
    else:
        base = _merge(config_to_dict(TrainConfig()), _read_yaml(source))
    items = parse_overrides(list(overrides)) if not isinstance(overrides, dict) else dict(overrides)
    for key, value in items.items():
        _set_dotted(base, key, value)
    return config_from_dict(base)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    import os

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    os.replace(tmp, path)

