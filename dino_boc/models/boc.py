"""DINO Bag of Channels: one single-channel ViT; a K-channel image is K independent images."""

from __future__ import annotations

import torch

from dino_boc.models.base import EmbeddingModel, TokenOutput

__all__ = ["BagOfChannelsModel"]


class BagOfChannelsModel(EmbeddingModel):
    """DINO BoC (paper §3.1): a ``(B, K, H, W)`` input is encoded as ONE batch of ``B·K`` single-channel
    images by the same backbone; the per-channel outputs are kept apart.

    Args:
        config: architecture; ``config.arch`` must be ``"boc"``.
        preprocess: default pre-processing.
        name: registry name, Hub id or path.
    """

    arch = "boc"

    def forward_tokens(
        self,
        x: torch.Tensor,
        *,
        n_last_blocks: int = 1,
        masks: torch.Tensor | None = None,
        channel_ids: torch.Tensor | None = None,
    ) -> TokenOutput:
        """See :meth:`EmbeddingModel.forward_tokens`; ``channel_ids`` must be None for BoC."""
        if channel_ids is not None:
            from dino_boc.errors import InputError

            raise InputError("channel_ids= only applies to Channel-ViT models; BoC encodes channels by content")
        b, k, h, w = self._check_input(x, n_last_blocks, masks)
        bb = self.backbone
        p = self.config.patch_size
        rows, cols = h // p, w // p
        flat_masks = None if masks is None else masks.reshape(b * k, rows * cols)
        t = bb.prepare_tokens(x.reshape(b * k, 1, h, w), flat_masks)
        depth = self.config.depth
        first = depth - n_last_blocks
        t, cls = bb.run_last_blocks(t, n_last_blocks)
        d = t.shape[-1]
        cls_t = cls.reshape(b, k, n_last_blocks, d).transpose(1, 2)
        patch = t[:, bb.num_prefix_tokens:].reshape(b, k, rows * cols, d)  # after the class (+ register) tokens
        return TokenOutput(
            cls=cls_t, global_cls=None, patch=patch, blocks=tuple(range(first, depth)), grid=(rows, cols)
        )
