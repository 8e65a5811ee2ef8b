"""Selecting and ordering channels by index or name."""

from __future__ import annotations

from typing import Sequence

from dino_boc.errors import ChannelError, InputError

__all__ = ["resolve_channels"]


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
