"""Every feature layout of dino_boc: structured tokens -> flat ``(B, F)`` rows and their column names.

The flat layout (documented in docs/features.md) is, for ``L = n_last_blocks``:

* BoC: the CLS tokens of the last L blocks in block order, each block holding channels 0..K-1
  (layer-major, then channel), then the per-channel mean of the last block's patch tokens:
  ``L·K·D + K·D`` (the released evaluation's ``create_linear_input``).
* HA: per block ``[global, channel 0..K-1]`` CLS, then per-channel patch means: ``L·(1+K)·D + K·D``.
* Channel-ViT: per block the CLS, then per-channel patch means: ``L·D + K·D``.
* Fixed-channel (Cell-DINO HPA / Cell Painting): per block the CLS, then the mean of all patch tokens
  (label ``image``): ``L·D + D``, the released ``create_linear_input``.
* Channel-agnostic MAE (OpenPhenom): per block the CLS, then per-channel patch means: ``L·D + K·D``; its
  default is ``L = 0`` (no CLS) with ``channel_pool="mean"``: ``D``, the mean of all patch tokens.

``n_last_blocks=0`` leaves out every CLS token (only the patch means).

``avgpool=False`` drops the patch means. ``channel_pool="mean"`` averages per-channel blocks over
channels (the paper's App. K reduced form: BoC CLS averaged over channels, ``D`` with L=1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, Sequence

import numpy as np

from dino_boc.errors import ConfigError
from dino_boc.models.config import ChannelPool, FeatureSpec, check_feature_options

if TYPE_CHECKING:  # pragma: no cover
    from dino_boc.models.base import EmbeddingModel

__all__ = [
    "Embedding", "flatten", "feature_names", "model_feature_names", "feature_size", "channel_labels",
    "parse_feature_name", "FeatureName",
]

_DEFAULT = FeatureSpec()  # the defaults of the layout options, defined once in models/config.py


@dataclass
class Embedding:
    """The structured form of :func:`dino_boc.embed`'s features, per channel (numpy arrays).

    Attributes:
        cls: ``(B, L, K, D)`` per-channel CLS tokens of the last L blocks, or None (Channel-ViT).
        global_cls: ``(B, L, D)`` global CLS tokens (HA, Channel-ViT), or None (BoC).
        patch_mean: ``(B, K, D)`` per-channel average of the last block's patch tokens, or None if
            ``avgpool=False``.
        channel_names: the K channel names (``"ch0"``, ... when the input had none).
        blocks: the indices of the L blocks.
    """

    cls: np.ndarray | None
    global_cls: np.ndarray | None
    patch_mean: np.ndarray | None
    channel_names: list[str]
    blocks: tuple[int, ...] = field(default_factory=tuple)


_NAME = re.compile(r"^(?P<channel>.+)_(?:cls(?P<block>\d+)|(?P<mean>mean))_(?P<dim>\d+)$")


def channel_labels(channels: int | Sequence[str]) -> list[str]:
    """Column-name labels for K channels: the names when given and unique, else ``ch0..ch{K-1}``."""
    if isinstance(channels, int):
        return [f"ch{i}" for i in range(channels)]
    names = [str(c) for c in channels]
    if len(set(names)) != len(names) or any(not n for n in names):
        return [f"ch{i}" for i in range(len(names))]
    return names


def flatten(emb: Embedding, *, channel_pool: ChannelPool = _DEFAULT.channel_pool) -> np.ndarray:
    """Flat features ``(B, F)`` float32 from the structured form, in the documented order.

    Raises:
        ConfigError: an unknown ``channel_pool``; an embedding with neither CLS tokens nor patch means.
    """
    check_feature_options(channel_pool=channel_pool)
    parts: list[np.ndarray] = []
    ref = emb.cls if emb.cls is not None else emb.global_cls
    if ref is None and emb.patch_mean is None:
        raise ConfigError("the embedding holds neither CLS tokens nor patch means; keep avgpool=True with n_last_blocks=0")
    b, n_blocks = (ref.shape[0], ref.shape[1]) if ref is not None else (emb.patch_mean.shape[0], 0)
    for j in range(n_blocks):
        if emb.global_cls is not None:
            parts.append(emb.global_cls[:, j])
        if emb.cls is not None:
            c = emb.cls[:, j]  # (B, K, D)
            parts.append(c.mean(axis=1) if channel_pool == "mean" else c.reshape(b, -1))
    if emb.patch_mean is not None:
        pm = emb.patch_mean
        parts.append(pm.mean(axis=1) if channel_pool == "mean" else pm.reshape(b, -1))
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def feature_names(
    arch: str,
    channels: int | Sequence[str],
    dim: int,
    *,
    n_last_blocks: int = _DEFAULT.n_last_blocks,
    last_block: int | None = None,
    avgpool: bool = _DEFAULT.avgpool,
    channel_pool: ChannelPool = _DEFAULT.channel_pool,
) -> list[str]:
    """Column names matching :func:`flatten`: ``{channel}_cls{block}_{d}``, ``global_cls{block}_{d}``,
    ``{channel}_mean_{d}``; with ``channel_pool="mean"`` the channel is ``chmean``.

    Args:
        arch: ``"boc"``, ``"ha"``, ``"channel_vit"`` or ``"fixed"``.
        channels: K, or the K channel names (ignored for ``"fixed"``: one patch mean, labelled ``image``).
        dim: D.
        n_last_blocks: L.
        last_block: the model depth (block numbers are 0-based indices ``depth-L .. depth-1``);
            defaults to L (numbers 0..L-1).
        avgpool: include the per-channel patch means.
        channel_pool: ``"concat"`` or ``"mean"``.

    Raises:
        ConfigError: an unknown ``channel_pool``.
    """
    check_feature_options(channel_pool=channel_pool)
    labels = channel_labels(channels)
    if channel_pool == "mean":
        labels = ["chmean"]
    if arch == "fixed":
        labels = ["image"]
    depth = n_last_blocks if last_block is None else last_block
    blocks = range(depth - n_last_blocks, depth)
    dims = [f"{d:04d}" for d in range(dim)]
    names: list[str] = []
    for blk in blocks:
        if arch in ("ha", "channel_vit", "fixed", "ca_mae"):
            names += [f"global_cls{blk}_{d}" for d in dims]
        if arch in ("boc", "ha"):
            names += [f"{c}_cls{blk}_{d}" for c in labels for d in dims]
    if avgpool:
        names += [f"{c}_mean_{d}" for c in labels for d in dims]
    return names


def model_feature_names(
    model: "EmbeddingModel", channels: int | Sequence[str], *, n_last_blocks: int | None = None,
    avgpool: bool | None = None, channel_pool: ChannelPool | None = None,
) -> list[str]:
    """Name of every column of ``model``'s flat features for ``channels`` (a count K or K names).

    Public as ``dino_boc.feature_names(model, channels)``. None takes the model's default feature
    (``model.features``), as :func:`dino_boc.embed` does.

    Raises:
        ConfigError: a bad option (:func:`~dino_boc.models.config.check_feature_options`).
    """
    spec = model.features.override(n_last_blocks=n_last_blocks, avgpool=avgpool, channel_pool=channel_pool)
    return feature_names(model.config.arch, channels, model.config.embed_dim, last_block=model.config.depth,
                         **spec.to_dict())


def feature_size(arch: str, k: int, dim: int, *, n_last_blocks: int = _DEFAULT.n_last_blocks,
                 avgpool: bool = _DEFAULT.avgpool, channel_pool: ChannelPool = _DEFAULT.channel_pool) -> int:
    """F for K channels: BoC ``L·K·D + K·D``, HA ``L·(1+K)·D + K·D``, Channel-ViT ``L·D + K·D``,
    fixed-channel ``L·D + D``."""
    kk = 1 if channel_pool == "mean" or arch == "fixed" else k
    per_block = {"boc": kk, "ha": 1 + kk, "channel_vit": 1, "fixed": 1, "ca_mae": 1}[arch]
    return (n_last_blocks * per_block + (kk if avgpool else 0)) * dim


class FeatureName(NamedTuple):
    """A parsed feature column name (see :func:`feature_names`)."""

    channel: str | None  #: channel label, or None for a global CLS column (HA, Channel-ViT)
    kind: Literal["cls", "mean"]
    block: int | None  #: block index of a CLS column, None for a patch mean
    dim: int


def parse_feature_name(name: str) -> FeatureName | None:
    """The inverse of :func:`feature_names`: what a column holds, or None for a non-feature column."""
    m = _NAME.match(name)
    if m is None:
        return None
    block = None if m["mean"] else int(m["block"])
    channel = m["channel"]
    if channel == "global" and block is not None:
        channel = None
    return FeatureName(channel, "mean" if m["mean"] else "cls", block, int(m["dim"]))
