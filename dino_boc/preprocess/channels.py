"""Selecting and ordering channels by index or name; hierarchical channel sampling (HCS) for training."""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np
import torch

from dino_boc.errors import ChannelError, InputError

__all__ = ["resolve_channels", "rename_channels", "sample_channels", "HierarchicalChannelSampling"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def resolve_channels(
    selection: Sequence[int | str] | None, n_channels: int, names: Sequence[str] | None = None
) -> list[int]:
    """Indices of the channels to keep, in the requested order.

    Args:
        selection: None (all channels, in order), or indices (negative allowed) and/or names.
        n_channels: K of the image.
        names: the image's channel names, if the file has them.

    Returns:
        Indices into the K channels.

    Raises:
        ChannelError: an index out of range or a name the image does not have.
    """
    if selection is None:
        return list(range(n_channels))
    if isinstance(selection, (str, int)):
        selection = [selection]
    if len(selection) == 0:
        raise InputError("channels=[] selects no channel; pass None for all channels or at least one")
    out: list[int] = []
    for c in selection:
        if isinstance(c, str) and not c.lstrip("-").isdigit():
            if not names:
                raise ChannelError(
                    f"channel name {c!r} given but the image has no channel names; select by index (0..{n_channels - 1})"
                )
            if c not in names:
                raise ChannelError(f"unknown channel name {c!r}; the image has {list(names)}")
            out.append(list(names).index(c))
        else:
            i = int(c)
            if not -n_channels <= i < n_channels:
                raise ChannelError(f"channel index {i} is out of range for an image with {n_channels} channels")
            out.append(i % n_channels)
    return out


def rename_channels(
    names: Sequence[str] | None, n_channels: int, new_names: Sequence[str] | None, *, source: str = "image"
) -> list[str]:
    """The K names of an image's (selected) channels: ``new_names`` when given, else the file's, else ``ch<i>``.

    Args:
        names: the names the file gave (after selection), or None.
        n_channels: K.
        new_names: names set by the user (``channel_names=`` / ``--channel-names``), or None.
        source: names the image in messages.

    Raises:
        ChannelError: ``new_names`` whose count differs from K.
    """
    if isinstance(new_names, str):
        new_names = [n.strip() for n in new_names.split(",") if n.strip()]
    if new_names is not None:
        if len(new_names) != n_channels:
            raise ChannelError(
                f"{source}: channel_names gives {len(new_names)} names {list(new_names)} for {n_channels} channels"
                f"{' ' + str(list(names)) if names else ''}; give one name per channel kept (after channels=)"
            )
        return [str(n) for n in new_names]
    return [str(n) for n in names] if names else [f"ch{i}" for i in range(n_channels)]


def sample_channels(
    x: ArrayT, generator: torch.Generator | None = None, *, dim: int = 0, keep_order: bool = True
) -> tuple[ArrayT, list[int]]:
    """Hierarchical channel sampling (HCS, Bao et al. 2024; paper App. E) of one image or batch.

    Draws ``m ~ U{1..K}``, then m of the K channels uniformly without replacement.

    Args:
        x: ``(K, H, W)`` (``dim=0``) or ``(B, K, H, W)`` (``dim=1``: the same channels for the whole
            batch), a torch tensor or numpy array.
        generator: a seeded ``torch.Generator`` for reproducible draws; None uses the global RNG.
        dim: the channel axis.
        keep_order: return the chosen channels in their input order (else in the order drawn).

    Returns:
        The sub-array with m channels along ``dim`` (same type as ``x``) and the m chosen indices (pass
        them as ``channel_ids`` to a Channel-ViT, whose channel ids follow the input channels).

    Raises:
        InputError: ``x`` has no axis ``dim`` or zero channels.
    """
    if not -x.ndim <= dim < x.ndim:
        raise InputError(f"dim={dim} is not an axis of an array of shape {tuple(x.shape)}")
    k = int(x.shape[dim])
    if k == 0:
        raise InputError(f"cannot sample channels of an image with 0 channels (shape {tuple(x.shape)})")
    m = int(torch.randint(1, k + 1, (1,), generator=generator))
    idx = torch.randperm(k, generator=generator)[:m]
    if keep_order:
        idx = idx.sort().values
    chosen = idx.tolist()
    if isinstance(x, torch.Tensor):
        return x.index_select(dim, idx.to(x.device)), chosen
    return np.take(x, chosen, axis=dim), chosen


class HierarchicalChannelSampling:
    """A training transform applying :func:`sample_channels` to ``(K, H, W)`` images.

    Args:
        seed: seed of the transform's own generator (reproducible draws), or None for the global RNG
            (which DataLoader seeds differently in each worker; a fixed seed repeats in every worker).
        keep_order: keep the chosen channels in input order.

    Example:
        >>> hcs = HierarchicalChannelSampling(seed=0)
        >>> sub, idx = hcs(img)          # img: (K, H, W); sub: (m, H, W), 1 <= m <= K
    """

    def __init__(self, *, seed: int | None = None, keep_order: bool = True):
        self.keep_order = keep_order
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: ArrayT) -> tuple[ArrayT, list[int]]:
        return sample_channels(x, self.generator, keep_order=self.keep_order)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keep_order={self.keep_order})"
