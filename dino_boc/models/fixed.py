"""Fixed-channel ViT (the Cell-DINO HPA and Cell Painting releases): one patch embedding over ``in_chans``
named channels in the model's own order; the image is encoded as a whole."""

from __future__ import annotations

from typing import Sequence

import torch

from dino_boc.errors import ChannelError, InputError
from dino_boc.models.base import EmbeddingModel, TokenOutput

__all__ = ["FixedChannelModel"]


class FixedChannelModel(EmbeddingModel):
    """A DINOv2 ViT with ``in_chans = C`` (``config.arch == "fixed"``).

    Its channels are named (``config.channel_names``, in the order the patch embedding expects them); give
    an image's channel names with ``embed(img, channels=[...])`` and they are reordered onto the model's
    (:meth:`select_channels`) — a wrong order would otherwise give wrong features without any error.
    """

    arch = "fixed"

    @property
    def input_channels(self) -> tuple[str, ...]:
        """The model's channel names, in its order."""
        return self.config.channel_names

    def select_channels(self, given: Sequence[int | str] | None, k: int, names: Sequence[str] | None = None
                        ) -> list[int]:
        """Indices into an image's K channels that give the model's channels in its order.

        Args:
            given: the names of the image's channels in the image's order (``channels=`` of ``embed``), or
                None to use ``names``.
            k: K of the image.
            names: the channel names a file carries.

        Raises:
            ChannelError: no names, a count that is not K, or one of the model's channels missing.
        """
        labels = list(given) if given is not None else (list(names) if names else None)
        want = list(self.input_channels)
        if labels is None:
            raise ChannelError(
                f"{self.name!r} takes the channels {want} in this order; name your image's {k} channels with "
                f"channels=[...] (in the image's order) so that they can be matched"
            )
        if any(not isinstance(c, str) for c in labels) or len(labels) != k:
            raise ChannelError(
                f"channels={labels!r} must name each of the image's {k} channels (strings, image order); "
                f"the model takes {want}"
            )
        folded = [c.casefold() for c in labels]
        missing = [c for c in want if c.casefold() not in folded]
        if missing:
            raise ChannelError(
                f"{self.name!r} needs the channels {want}; the image has {labels} (missing {missing}). A "
                "fixed-channel model cannot run without all of its channels: use a channel-adaptive model "
                "(e.g. dino-boc-vitl16, morphem-vits16) for other channel sets"
            )
        return [folded.index(c.casefold()) for c in want]

    def forward_tokens(
        self,
        x: torch.Tensor,
        *,
        n_last_blocks: int = 1,
        masks: torch.Tensor | None = None,
        channel_ids: torch.Tensor | None = None,
    ) -> TokenOutput:
        """See :meth:`EmbeddingModel.forward_tokens`: ``global_cls (B, L, D)``, ``patch (B, 1, N, D)``.

        Raises:
            InputError: K is not the model's ``in_chans``, or ``channel_ids`` given.
        """
        if channel_ids is not None:
            raise InputError("channel_ids= only applies to Channel-ViT models; name channels with channels=")
        b, k, h, w = self._check_input(x, n_last_blocks, masks)
        if k != self.config.in_chans:
            raise InputError(
                f"{self.name!r} takes {self.config.in_chans} channels {list(self.input_channels)}, got {k}"
            )
        bb = self.backbone
        p = self.config.patch_size
        rows, cols = h // p, w // p
        flat_masks = None if masks is None else masks.any(dim=1).reshape(b, rows * cols)
        t, cls = bb.run_last_blocks(bb.prepare_tokens(x, flat_masks), n_last_blocks)
        depth = self.config.depth
        first = depth - n_last_blocks
        patch = t[:, 1:].reshape(b, 1, rows * cols, t.shape[-1])
        return TokenOutput(cls=None, global_cls=cls, patch=patch,
                           blocks=tuple(range(first, depth)), grid=(rows, cols))
