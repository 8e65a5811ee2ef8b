"""The DINOv2 objective of the paper for BoC, HA and Channel-ViT: student, EMA teacher, heads, losses.

Per step (:meth:`SSLObjective.losses`):

1. The teacher (no gradient) encodes the global crops; its DINO head turns the CLS token(s) into
   logits, and the head (shared, or iBOT's own) turns the patch tokens at the student's masked positions
   into logits. :class:`~dino_boc.train.losses.DINOLoss` / :class:`~dino_boc.train.losses.IBOTPatchLoss`
   turn them into targets (teacher temperature, centring or Sinkhorn-Knopp).
2. The student (:class:`Student`, one ``forward`` so DDP/FSDP see one call) encodes the masked global
   crops and the local crops and applies the heads.
3. ``loss = w_dino · DINO(global-teacher × every other student crop) + w_koleo · Σ_g KoLeo(student CLS of
   global crop g) + w_ibot · iBOT(masked patches)``; HA adds the same DINO and KoLeo terms on the channel
   CLS tokens (DINO averaged over channels) with their own centre and weights.

Which CLS is used: BoC — the CLS of the single channel; HA — the global CLS (plus the channel CLS terms);
Channel-ViT — the global CLS. The teacher follows the student by EMA (:meth:`SSLObjective.update_teacher`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from dino_boc.models.base import EmbeddingModel, TokenOutput
from dino_boc.train.heads import DINOHead
from dino_boc.train.losses import DINOLoss, IBOTPatchLoss, koleo_loss

__all__ = ["Student", "SSLObjective", "StudentOutput", "HeadSpec"]


@dataclass(frozen=True)
class HeadSpec:
    """Sizes of a DINO head; ``norm_last_layer`` fixes the prototype norms at 1 (else learnt, as DINOv2)."""

    n_prototypes: int
    hidden_dim: int
    bottleneck_dim: int
    n_layers: int
    norm_last_layer: bool = False

    def build(self, in_dim: int) -> DINOHead:
        return DINOHead(
            in_dim, self.n_prototypes, hidden_dim=self.hidden_dim, bottleneck_dim=self.bottleneck_dim,
            n_layers=self.n_layers, learn_last_layer_norm=not self.norm_last_layer,
        )


@dataclass
class StudentOutput:
    """What the losses need from one network pass.

    Attributes:
        cls_logits: ``(C·B, P)`` head logits of the (global) CLS, crop-major.
        cls_tokens: ``(G·B, D)`` backbone CLS of the global crops (for KoLeo); student only.
        ch_logits: HA: ``(C·B·K, P)`` head logits of the channel CLS tokens, else None.
        ch_tokens: HA: ``(G·B·K, D)`` channel CLS of the global crops, else None.
        patch_logits: ``(M, P)`` head logits of the patch tokens at the masked positions, or None.
    """

    cls_logits: torch.Tensor
    cls_tokens: torch.Tensor
    ch_logits: torch.Tensor | None
    ch_tokens: torch.Tensor | None
    patch_logits: torch.Tensor | None


def _cls_of(out: TokenOutput, arch: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(CLS ``(B', D)``, channel CLS ``(B', K, D)`` or None) of the last block."""
    if arch == "boc":
        return out.cls[:, -1, 0], None
    if arch == "ha":
        return out.global_cls[:, -1], out.cls[:, -1]
    return out.global_cls[:, -1], None


class Student(nn.Module):
    """Backbone + DINO head (+ iBOT head); one ``forward`` over global and local crops.

    Args:
        backbone: the model being trained (any :class:`~dino_boc.models.base.EmbeddingModel`).
        dino_head: head for the CLS tokens (and the patches when iBOT shares it).
        ibot_head: separate head for the patches, or None to share ``dino_head``.
    """

    def __init__(self, backbone: EmbeddingModel, dino_head: DINOHead, ibot_head: DINOHead | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        if ibot_head is not None:
            self.ibot_head = ibot_head

    @property
    def patch_head(self) -> DINOHead:
        return getattr(self, "ibot_head", self.dino_head)

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None,
        *,
        masks: torch.Tensor | None = None,
        patch_positions: torch.Tensor | None = None,
        channel_ids: torch.Tensor | None = None,
        channel_heads: bool = False,
    ) -> StudentOutput:
        """Encode the crops and apply the heads.

        Args:
            global_crops: ``(G·B, K, Sg, Sg)``.
            local_crops: ``(L·B, K, Sl, Sl)`` or None.
            masks: bool ``(G·B, K, N)``: patches of the global crops replaced by the mask token, or None.
            patch_positions: bool ``(G·B, K, N)``: patches whose head logits to return (the student's
                masked positions, for both student and teacher), or None.
            channel_ids: Channel-ViT ``(B, K)`` ids (repeated per crop here), or None.
            channel_heads: HA: also return the channel-CLS logits and tokens.
        """
        arch = self.backbone.config.arch
        n_g = global_crops.shape[0]
        kw = _ids_kwargs(channel_ids, n_g)
        out_g = self.backbone.forward_tokens(global_crops, masks=masks, **kw)
        cls_g, ch_g = _cls_of(out_g, arch)
        cls_all, ch_all = [cls_g], [ch_g]
        if local_crops is not None and local_crops.shape[0]:
            out_l = self.backbone.forward_tokens(local_crops, **_ids_kwargs(channel_ids, local_crops.shape[0]))
            cls_l, ch_l = _cls_of(out_l, arch)
            cls_all.append(cls_l)
            ch_all.append(ch_l)
        cls = torch.cat(cls_all)
        patch_logits = None
        if patch_positions is not None:
            patches = out_g.patch.flatten(1, 2)[patch_positions.flatten(1)]  # (M, D), row-major order
            patch_logits = self.patch_head(patches)
        ch_logits = ch_tokens = None
        if channel_heads and ch_g is not None:
            ch_all_t = torch.cat(ch_all)  # (C·B, K, D)
            ch_logits = self.dino_head(ch_all_t.flatten(0, 1))
            ch_tokens = ch_g.flatten(0, 1)
        return StudentOutput(self.dino_head(cls), cls_g, ch_logits, ch_tokens, patch_logits)


def _ids_kwargs(channel_ids: torch.Tensor | None, n_images: int) -> dict:
    """Channel ids for a crop-major batch of ``n_images`` = crops × B images."""
    if channel_ids is None:
        return {}
    b = channel_ids.shape[0]
    return {"channel_ids": channel_ids.repeat(n_images // b, 1)}


class SSLObjective(nn.Module):
    """Student, EMA teacher, heads and losses of DINOv2 training.

    Args:
        model: the (initialised) model to train; the teacher starts as its copy.
        dino_head: sizes of the DINO head.
        ibot_head: sizes of a separate iBOT head, or None to share the DINO head.
        dino_weight, koleo_weight, ibot_weight: loss weights (1, 0.1, 1).
        channel_weight, channel_koleo_weight: HA channel-CLS term weights.
        student_temp, center_momentum, centering: loss settings (0.1, 0.9, ``"centering"``).
    """

    def __init__(
        self,
        model: EmbeddingModel,
        *,
        dino_head: HeadSpec,
        ibot_head: HeadSpec | None = None,
        dino_weight: float = 1.0,
        koleo_weight: float = 0.1,
        ibot_weight: float = 1.0,
        channel_weight: float = 1.0,
        channel_koleo_weight: float = 0.1,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "centering",
    ) -> None:
        super().__init__()
        d = model.config.embed_dim
        self.arch = model.config.arch
        self.student = Student(model, dino_head.build(d), None if ibot_head is None else ibot_head.build(d))
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self.weights = {
            "dino": dino_weight, "koleo": koleo_weight, "ibot": ibot_weight,
            "dino_channel": channel_weight if self.arch == "ha" else 0.0,
            "koleo_channel": channel_koleo_weight if self.arch == "ha" else 0.0,
        }
        loss_kw = {"student_temp": student_temp, "center_momentum": center_momentum, "centering": centering}
        self.dino_loss = DINOLoss(dino_head.n_prototypes, **loss_kw)
        self.channel_loss = DINOLoss(dino_head.n_prototypes, **loss_kw)
        spec = ibot_head or dino_head
        self.ibot_loss = IBOTPatchLoss(spec.n_prototypes, **loss_kw)

    @property
    def channel_terms(self) -> bool:
        """HA with a non-zero channel-CLS DINO or KoLeo weight."""
        return self.weights["dino_channel"] > 0 or self.weights["koleo_channel"] > 0

    def train(self, mode: bool = True) -> "SSLObjective":
        super().train(mode)
        self.teacher.eval()  # the teacher never drops paths
        return self

    def losses(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None,
        *,
        masks: torch.Tensor | None,
        channel_ids: torch.Tensor | None,
        teacher_temp: float,
        n_global: int,
        student: nn.Module | None = None,
        teacher: nn.Module | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every loss term and their weighted sum ``"total"`` for one batch (call ``backward`` on ``"total"``).

        Args:
            global_crops: ``(G·B, K, Sg, Sg)``, crop-major.
            local_crops: ``(L·B, K, Sl, Sl)`` or None.
            masks: bool ``(G·B, K, N)`` or None (no iBOT term).
            channel_ids: Channel-ViT ``(B, K)`` or None.
            teacher_temp: this iteration's teacher temperature.
            n_global: G.
            student, teacher: wrapped versions (DDP / FSDP / compiled) to call instead of the plain modules.

        Returns:
            Scalars: ``dino``, ``koleo``, ``ibot`` (and ``dino_channel``, ``koleo_channel`` for HA) — each
            unweighted — and ``total`` (weighted sum, with gradient).
        """
        s_net = self.student if student is None else student
        t_net = self.teacher if teacher is None else teacher
        # every rank takes part in the iBOT centring all-reduce, also with no masked patch of its own
        use_masks = masks if (masks is not None and self.weights["ibot"] > 0) else None
        with torch.no_grad():
            t_out = t_net(global_crops, None, masks=None, patch_positions=use_masks, channel_ids=channel_ids,
                          channel_heads=self.channel_terms)
        n = global_crops.shape[0]
        b = n // n_global
        t_dino = self.dino_loss.teacher_probs(t_out.cls_logits.reshape(n_global, b, -1), teacher_temp)
        s_out = s_net(global_crops, local_crops, masks=use_masks, patch_positions=use_masks, channel_ids=channel_ids,
                      channel_heads=self.channel_terms)
        n_crops = s_out.cls_logits.shape[0] // b
        terms: dict[str, torch.Tensor] = {}
        terms["dino"] = self.dino_loss(s_out.cls_logits.reshape(n_crops, b, -1), t_dino)
        terms["koleo"] = sum(koleo_loss(c) for c in s_out.cls_tokens.chunk(n_global)) if b > 1 else _zero(s_out)
        if use_masks is not None:
            t_ibot = self.ibot_loss.teacher_probs(t_out.patch_logits, teacher_temp)
            terms["ibot"] = self.ibot_loss(s_out.patch_logits, t_ibot, use_masks.flatten(1))
        else:
            terms["ibot"] = _zero(s_out)
        if self.channel_terms:
            k = t_out.ch_logits.shape[0] // n
            t_ch = self.channel_loss.teacher_probs(t_out.ch_logits.reshape(n_global, b * k, -1), teacher_temp)
            terms["dino_channel"] = self.channel_loss(s_out.ch_logits.reshape(n_crops, b * k, -1), t_ch)
            ch_chunks = s_out.ch_tokens.chunk(n_global)
            terms["koleo_channel"] = sum(koleo_loss(c) for c in ch_chunks) if b * k > 1 else _zero(s_out)
        total = sum(self.weights[name] * value for name, value in terms.items())
        terms["total"] = total
        return terms

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher <- m · teacher + (1 - m) · student`` over every parameter (buffers copied).

        With FSDP2 both networks are first put back in their sharded state (the teacher's root stays
        gathered after its forward, having no backward), so the update runs shard by shard.
        """
        for net in (self.student, self.teacher):
            for m in net.modules():
                if callable(getattr(m, "reshard", None)) and hasattr(m, "unshard"):
                    m.reshard()
        t_params = [p for p in self.teacher.parameters()]
        s_params = [p.detach() for p in self.student.parameters()]
        locals_t = [_local(p) for p in t_params]
        locals_s = [_local(p) for p in s_params]
        torch._foreach_mul_(locals_t, momentum)
        torch._foreach_add_(locals_t, locals_s, alpha=1.0 - momentum)
        for tb, sb in zip(self.teacher.buffers(), self.student.buffers()):
            _local(tb).copy_(_local(sb))


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of an FSDP2 DTensor parameter, or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _zero(out: StudentOutput) -> torch.Tensor:
    return out.cls_logits.sum() * 0.0
