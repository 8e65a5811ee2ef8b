"""DINO Channel-ViT (paper §3.2; Bao et al. 2024, Bourriez et al. 2024): single-channel patches, shared
position embeddings plus a learned embedding per channel id, one CLS token, full attention.

The sequence of one image is ``[CLS, h_1,1 + p_1 + c_id(1), …, h_K,N + p_N + c_id(K)]`` (``1 + K·N``
tokens); every block attends over all of it with timm's fused SDPA.
"""

from __future__ import annotations

import operator
from typing import Sequence

import torch
from torch import nn

from dino_boc.errors import ChannelError, InputError
from dino_boc.models.base import EmbeddingModel, TokenOutput
from dino_boc.models.config import ModelConfig
from dino_boc.preprocess.config import PreprocessConfig

__all__ = ["ChannelViTModel"]


class ChannelViTModel(EmbeddingModel):
    """DINO Channel-ViT: one single-channel patch projection (``backbone.patch_embed``), the backbone's
    position embeddings shared by all channels, ``channel_embed`` ``(K_max, D)`` indexed by channel id,
    and the backbone's ``cls_token`` (class position embedding) as the only CLS.

    The model cannot encode more than ``K_max = config.max_channels`` channels, nor a channel whose id it
    was not trained with. Channel ids come from ``channel_ids=`` (ints, or names from
    ``config.channel_names``); by default input channel j has id j.

    Args:
        config: architecture; ``config.arch`` must be ``"channel_vit"`` with ``max_channels > 0``.
        preprocess: default pre-processing.
        name: registry name, Hub id or path.
    """

    arch = "channel_vit"

    def __init__(self, config: ModelConfig, *, preprocess: PreprocessConfig | None = None, name: str = ""):
        super().__init__(config, preprocess=preprocess, name=name)
        self.channel_embed = nn.Parameter(torch.zeros(config.max_channels, config.embed_dim))
        nn.init.trunc_normal_(self.channel_embed, std=0.02)

    @property
    def max_channels(self) -> int:
        """K_max, the number of learned channel embeddings."""
        return self.config.max_channels

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"channel_embed"}

    # ---------------------------------------------------------------- channel ids
    def resolve_channel_ids(self, channel_ids: Sequence[int | str] | None, k: int) -> torch.Tensor:
        """Channel-embedding ids ``(K,)`` for K input channels (after any ``channels=`` selection).

        Args:
            channel_ids: None (ids ``0..K-1``), or one id per input channel: an int in ``0..K_max-1`` or
                a name from ``config.channel_names``.
            k: K, the number of input channels.

        Returns:
            int64 ``(K,)``.

        Raises:
            InputError: K > K_max, a wrong number of ids, an id out of range, a repeated id.
            ChannelError: a name the model does not know.
        """
        kmax = self.config.max_channels
        if k > kmax:
            raise InputError(
                f"the input has {k} channels but this Channel-ViT has channel embeddings for at most {kmax}; "
                f"select at most {kmax} channels with channels=, or use a BoC model (any number of channels)"
            )
        if channel_ids is None:
            return torch.arange(k)
        if isinstance(channel_ids, (str, int)):
            channel_ids = [channel_ids]
        if isinstance(channel_ids, torch.Tensor):
            channel_ids = channel_ids.tolist()
        ids = [self._one_id(c) for c in channel_ids]
        if len(ids) != k:
            raise InputError(f"channel_ids has {len(ids)} entries but the input has {k} channels; give one per channel")
        return self._checked(torch.tensor(ids, dtype=torch.long))

    def _one_id(self, c: int | str) -> int:
        names = self.config.channel_names
        if isinstance(c, str):
            if c in names:
                return names.index(c)
            if not names:
                raise ChannelError(
                    f"channel name {c!r} given but this model stores no channel names; pass integer ids 0.."
                    f"{self.config.max_channels - 1}"
                )
            raise ChannelError(f"unknown channel name {c!r}; this model knows {list(names)}")
        try:
            return operator.index(c)
        except TypeError:
            raise InputError(f"channel id {c!r} is neither an int nor a channel name") from None

    def _checked(self, ids: torch.Tensor) -> torch.Tensor:
        """Validate ids ``(K,)`` or ``(B, K)``: in range, no repeats within an image."""
        kmax = self.config.max_channels
        bad = ids[(ids < 0) | (ids >= kmax)]
        if bad.numel():
            raise InputError(
                f"channel id(s) {sorted(set(bad.tolist()))} out of range; this model has ids 0..{kmax - 1}"
                + (f" ({list(self.config.channel_names)})" if self.config.channel_names else "")
            )
        srt = ids.sort(dim=-1).values
        if (srt[..., 1:] == srt[..., :-1]).any():
            raise InputError(f"channel_ids {ids.tolist()} repeat an id; each input channel needs its own id")
        return ids

    # ---------------------------------------------------------------- tokens
    def _tokens(self, x: torch.Tensor, ids: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """``(B, K, H, W)`` -> ``(B, 1 + K·N, D)``: ``[CLS + pos_cls, patch + pos + channel_embed[id]]``."""
        bb = self.backbone
        b, k, h, w = x.shape
        p = bb.patch_embed(x.reshape(b * k, 1, h, w))  # (B·K, rows, cols, D)
        _, rows, cols, d = p.shape
        n = rows * cols
        if masks is not None:
            p = torch.where(masks.reshape(b * k, rows, cols, 1), bb.mask_token.to(p.dtype).reshape(1, 1, 1, d), p)
        pos = bb.pos_embed_for(rows, cols)
        chan = self.channel_embed[ids].reshape(-1, k, 1, d)  # (1 or B, K, 1, D)
        patches = p.reshape(b, k, n, d) + pos[:, None, 1:] + chan
        tokens = torch.cat([(bb.cls_token + pos[:, :1]).expand(b, -1, -1), patches.reshape(b, k * n, d)], dim=1)
        return bb.norm_pre(bb.pos_drop(tokens))

    def forward_tokens(
        self,
        x: torch.Tensor,
        *,
        n_last_blocks: int = 1,
        masks: torch.Tensor | None = None,
        channel_ids: torch.Tensor | Sequence[int | str] | None = None,
    ) -> TokenOutput:
        """See :meth:`EmbeddingModel.forward_tokens`.

        Args:
            channel_ids: ``(K,)`` or ``(B, K)`` ids, a list of ids/names, or None for ``0..K-1``.

        Returns:
            :class:`TokenOutput` with ``cls=None``, ``global_cls (B, L, D)``, ``patch (B, K, N, D)``.

        Raises:
            InputError: bad shapes, K > K_max, invalid ids (``ChannelError`` for an unknown name).
        """
        b, k, h, w = self._check_input(x, n_last_blocks, masks)
        p = self.config.patch_size
        rows, cols = h // p, w // p
        n = rows * cols
        if channel_ids is None or not isinstance(channel_ids, torch.Tensor):
            ids = self.resolve_channel_ids(channel_ids, k)
        else:
            if channel_ids.is_floating_point() or channel_ids.is_complex() or channel_ids.dtype == torch.bool:
                raise InputError(f"channel_ids has dtype {channel_ids.dtype}; expected integer ids")
            ids = channel_ids.long()
            if tuple(ids.shape) not in ((k,), (b, k)):
                raise InputError(f"channel_ids has shape {tuple(ids.shape)}; expected (K,) = ({k},) or (B, K)")
            self.resolve_channel_ids(None, k)  # K <= K_max
            ids = self._checked(ids)
        t = self._tokens(x, ids.to(x.device), masks)
        t, glob = self.backbone.run_last_blocks(t, n_last_blocks)
        depth = self.config.depth
        first = depth - n_last_blocks
        d = t.shape[-1]
        return TokenOutput(
            cls=None,
            global_cls=glob,
            patch=t[:, 1:].reshape(b, k, n, d),
            blocks=tuple(range(first, depth)),
            grid=(rows, cols),
        )
