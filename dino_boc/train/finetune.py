"""Fine-tuning a classifier on a dino_boc backbone: a linear head, optionally the last blocks unfrozen.

The head reads the last block's CLS tokens. For DINO BoC and DINO HA those are per channel, ``(B, K, D)``:
``pool="mean"`` averages them over channels (any K, any order, as the model itself), ``pool="concat"``
concatenates them (``K·D``, needs the same K channels in the same order for every image). Channel-ViT
has one global CLS token, used as is.

Training is AdamW with layer-wise learning-rate decay (as in the dinov2 / BEiT fine-tuning recipes): a
parameter of layer l (embeddings 0, block i → i + 1, final norm and head L + 1) gets
``lr · layer_decay ** (L + 1 − l)`` (the patch embedding a further × 0.2, as in training); linear warm-up
over the first 10 % of steps, then a cosine decay to 0. Biases, norms and tokens take no weight decay.
Frozen parameters are left out of the optimiser and never change.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from dino_boc.errors import ConfigError, InputError
from dino_boc.preprocess import prepare_image
from dino_boc.train.optim import apply_schedules, build_optimizer

__all__ = ["Classifier", "FinetuneHistory", "prepare_images", "finetune_optimizer", "finetune", "predict"]

logger = logging.getLogger(__name__)

Pool = Literal["mean", "concat"]
_WARMUP_FRACTION = 0.1


class Classifier(nn.Module):
    """A linear classification head on a dino_boc model.

    Args:
        model: a dino_boc model (``create_model``, ``load_model``); its ``forward(x)`` gives the tokens.
        num_classes: C.
        pool: how per-channel CLS tokens become one vector: ``"mean"`` over channels (D) or ``"concat"``
            (K·D, fixed K); ignored for Channel-ViT (global CLS, D).
        num_channels: K, required for ``pool="concat"``.
        unfreeze_last: how many last blocks (and the final norm) are trained with the head; 0 trains the
            head only (a linear probe through the model); the model's depth trains everything, embeddings
            included.

    Raises:
        ConfigError: ``unfreeze_last`` outside 0..depth, or ``pool="concat"`` without ``num_channels``.
    """

    def __init__(self, model: nn.Module, num_classes: int, *, pool: Pool = "mean", num_channels: int | None = None,
                 unfreeze_last: int = 0):
        super().__init__()
        depth = model.config.depth
        if not 0 <= unfreeze_last <= depth:
            raise ConfigError(f"unfreeze_last={unfreeze_last}; expected 0..{depth} (the model has {depth} blocks)")
        if pool not in ("mean", "concat"):
            raise ConfigError(f"pool={pool!r}; expected 'mean' or 'concat'")
        if pool == "concat" and not num_channels:
            raise ConfigError("pool='concat' needs num_channels=K (every image must have the same K channels)")
        self.model, self.pool, self.num_channels, self.unfreeze_last = model, pool, num_channels, unfreeze_last
        joint = model.config.arch == "channel_vit"
        width = model.config.embed_dim * (num_channels if pool == "concat" and not joint else 1)
        self.head = nn.Linear(width, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self._freeze()

    def _freeze(self) -> None:
        depth = self.model.config.depth
        for name, param in self.model.named_parameters():
            layer = self.model.layer_id(name)  # 0 embeddings, i + 1 block i, depth + 1 final norm
            param.requires_grad_(self.unfreeze_last > 0 and (layer > depth - self.unfreeze_last or
                                                             self.unfreeze_last == depth))

    def train(self, mode: bool = True) -> "Classifier":
        """Training mode for the head and unfrozen blocks; frozen blocks stay in eval mode (no drop-path)."""
        super().train(mode)
        if mode:
            blocks = self.model.backbone.blocks
            for i in range(len(blocks) - self.unfreeze_last):
                blocks[i].eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled vector the head reads: ``(B, D)`` or ``(B, K·D)`` from pre-processed ``x (B, K, H, W)``."""
        if self.pool == "concat" and x.shape[1] != self.num_channels and self.model.config.arch != "channel_vit":
            raise InputError(f"the input has {x.shape[1]} channels; pool='concat' was set up for "
                             f"num_channels={self.num_channels} — give every image the same channels")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.unfreeze_last > 0):
            out = self.model(x)
        if out.cls is None:  # Channel-ViT: one global CLS token
            return out.global_cls[:, -1]
        cls = out.cls[:, -1]  # (B, K, D), last block
        return cls.mean(dim=1) if self.pool == "mean" else cls.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` of pre-processed images ``x (B, K, H, W)``."""
        return self.head(self.features(x))


@dataclass
class FinetuneHistory:
    """What happened during :func:`finetune`.

    Attributes:
        loss: mean training cross-entropy of each epoch.
        val_accuracy: accuracy on the validation images after each epoch (empty without them).
        lr: the head's learning rate at each step.
    """

    loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


def prepare_images(images: np.ndarray | Sequence[np.ndarray], model: nn.Module, *, resize: int | None = None,
                   crop: int | None = None) -> torch.Tensor:
    """Pre-process raw images as the model expects (``dino_boc.preprocess.prepare_image``) and stack them.

    Args:
        images: ``(B, K, H, W)`` array or a list of ``(K, H, W)`` arrays of any dtype.
        model: supplies the pre-processing settings (``model.preprocess``) and the patch size.
        resize, crop: override the model's resize / crop (pixels); every result must have the same size.

    Returns:
        float32 ``(B, K, H', W')``.

    Raises:
        InputError: an invalid image, or images that end up with different shapes (pass ``crop=``).
    """
    cfg = model.preprocess
    cfg = replace(cfg, resize=resize if resize is not None else cfg.resize, crop=crop if crop is not None else cfg.crop)
    tensors = [prepare_image(np.asarray(im), cfg, model.config.patch_size) for im in images]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise InputError(f"images have different shapes after pre-processing {sorted(shapes)}; pass crop= (and "
                         "select the same channels for every image)")
    return torch.stack(tensors)


def finetune_optimizer(classifier: Classifier, *, layer_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, one group per (layer-wise lr multiplier, weight decay or not).

    Groups carry ``lr_multiplier`` (``layer_decay ** (L + 1 − l)``, times 0.2 for the patch embedding) and
    ``wd_multiplier`` (0 or 1); ``dino_boc.train.optim.apply_schedules`` sets each step's rates from them.

    Raises:
        ConfigError: ``layer_decay`` outside (0, 1].
    """
    return build_optimizer(
        classifier, lr_decay=layer_decay, num_layers=classifier.model.config.depth, weight_decay_rule="timm"
    )


def _labels(labels, n: int, num_classes: int) -> torch.Tensor:
    y = np.asarray(labels).reshape(-1)
    codes_ok = np.issubdtype(y.dtype, np.integer) and (y.size == 0 or 0 <= y.min() <= y.max() < num_classes)
    if y.shape[0] != n or not codes_ok:
        raise InputError(f"labels: {y.shape[0]} values of dtype {y.dtype}; expected {n} integer class codes in "
                         f"0..{num_classes - 1} — map names to codes, e.g. np.unique(names, return_inverse=True)")
    return torch.as_tensor(y, dtype=torch.int64)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal / vertical flips and 90° rotations (square images) per image."""
    flip = torch.rand(x.shape[0], 2, generator=gen) < 0.5
    x = torch.where(flip[:, 0, None, None, None], x.flip(-1), x)
    x = torch.where(flip[:, 1, None, None, None], x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        rot = (torch.rand(x.shape[0], generator=gen) < 0.5)[:, None, None, None]
        x = torch.where(rot, x.transpose(-1, -2), x)
    return x


@torch.no_grad()
def predict(classifier: Classifier, images: torch.Tensor, *, batch_size: int = 64) -> np.ndarray:
    """Predicted class codes ``(B,)`` of pre-processed images ``(B, K, H, W)`` (eval mode)."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.head.parameters()).device
    out = [classifier(images[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    classifier.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def finetune(
    classifier: Classifier,
    images: torch.Tensor,
    labels,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    layer_decay: float = 0.75,
    weight_decay: float = 0.05,
    batch_size: int = 32,
    augment: bool = True,
    val: tuple[torch.Tensor, np.ndarray] | None = None,
    seed: int = 0,
) -> FinetuneHistory:
    """Train ``classifier`` (head and unfrozen blocks) with softmax cross-entropy; in place, on its device.

    Args:
        classifier: a :class:`Classifier`; move it to a GPU first if you have one.
        images: pre-processed ``(B, K, H, W)`` float images (see :func:`prepare_images`).
        labels: ``(B,)`` integer class codes in ``0..C-1``.
        epochs: passes over the images.
        lr: peak learning rate of the head; earlier layers get ``lr · layer_decay ** (L + 1 − l)``.
            Lower it (e.g. 1e-4) when unfreezing many blocks of a pre-trained model.
        layer_decay: in (0, 1]; 1 gives every layer the same rate.
        weight_decay: AdamW weight decay of weight matrices.
        batch_size: images per step.
        augment: random flips and 90° rotations of each batch.
        val: optional ``(images, labels)`` scored after every epoch (for monitoring; nothing is selected on it).
        seed: seeds the shuffling and augmentation.

    Returns:
        :class:`FinetuneHistory` (per-epoch loss, per-epoch validation accuracy, per-step lr).

    Raises:
        InputError: labels that are not integer codes, one per image.
        ConfigError: ``layer_decay`` outside (0, 1] or ``epochs`` < 1.
    """
    if epochs < 1:
        raise ConfigError(f"epochs={epochs}; expected at least 1")
    y = _labels(labels, images.shape[0], classifier.head.out_features)
    opt = finetune_optimizer(classifier, layer_decay=layer_decay)
    device = next(classifier.head.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(images.shape[0] / batch_size)
    warmup = max(1, round(_WARMUP_FRACTION * steps))
    history, step = FinetuneHistory(), 0
    classifier.train()
    for epoch in range(epochs):
        total = 0.0
        for rows in torch.randperm(images.shape[0], generator=gen).split(batch_size):
            x = images[rows]
            x = (_augment(x, gen) if augment else x).to(device)
            rate = lr * (step + 1) / warmup if step < warmup else \
                lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
            apply_schedules(opt, lr=rate, wd=weight_decay, last_layer_lr=rate)
            loss = nn.functional.cross_entropy(classifier(x), y[rows].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.lr.append(rate)
            total += float(loss.detach()) * len(rows)
            step += 1
        history.loss.append(total / images.shape[0])
        if val is not None:
            history.val_accuracy.append(float(np.mean(predict(classifier, val[0]) == np.asarray(val[1]))))
        logger.info("epoch %d/%d: loss %.4f%s", epoch + 1, epochs, history.loss[-1],
                    f", val accuracy {history.val_accuracy[-1]:.3f}" if val is not None else "")
    classifier.eval()
    return history
