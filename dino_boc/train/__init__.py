"""DINOv2 pretraining of DINO BoC, DINO HA and Channel-ViT (paper §4.2, App. C-D.1).

Import explicitly: ``from dino_boc.train import train, load_config, export_run``; nothing in the rest of the package imports
this. Model-independent pieces an engine composes:

* ``augment``   — ``MultiCropAugmentation(MultiCropConfig)``: image ``(K, H, W)`` -> ``MultiCrops`` (2 global +
  8 local, random resized crop, flips, per-channel brightness/contrast, self-normalisation), seeded by a
  ``torch.Generator``.
* ``masking``   — ``stratified_masks`` (the loader's sampler: block-wise iBOT masks on half of the global-crop
  images, ratios stratified in [0.1, 0.5], any rank's share) and ``sample_masks(n_images, grid, ...)`` ->
  ``MaskBatch(masks (B, N), weights (M,), indices, ratios)`` on top of it.
* ``heads``     — ``DINOHead``: 3-layer MLP -> L2 norm -> weight-normed prototypes (norm fixed at 1), shared
  by the DINO and iBOT losses.
* ``losses``    — ``DINOLoss`` (CLS, cross-crop pairs), ``IBOTPatchLoss`` (masked patches), ``KoLeoLoss``;
  ``losses.centering.TeacherCentering`` (EMA centre / Sinkhorn-Knopp) is shared by both. Each step:
  ``t = loss.teacher_probs(teacher_logits, temp)`` (no grad, updates the centre), then ``loss(student, t, ...)``.
* ``schedules`` — ``build_schedules(ScheduleConfig, global_batch_size=...)`` -> ``Schedules`` arrays (lr, wd,
  teacher momentum, teacher temperature, last-layer lr) indexed by iteration; ``Schedules.at(it)``.
* ``optim``     — ``build_optimizer(student)``, the one optimiser of pre-training and fine-tuning (AdamW,
  layer-wise lr decay 0.9 by ``dino_boc.models.backbone.layer_id``, patch-embed lr x 0.2, the released or
  timm weight-decay rule) and ``apply_schedules(optimizer, lr=, wd=, last_layer_lr=)`` every iteration.

Per step an engine: applies ``Schedules.at(it)`` with ``apply_schedules``; runs the teacher on the global crops
and its head on the CLS tokens and the masked patch tokens; turns them into targets with
``teacher_probs``; runs the student on global crops (with masks) and local crops; sums
``DINOLoss + KoLeo (0.1, per global crop) + IBOTPatchLoss``; back-propagates, clips (3.0), steps; then
updates the teacher by EMA with ``Schedules.momentum[it]``.
"""

from dino_boc.train.config import TrainConfig, load_config
from dino_boc.train.engine import NonFiniteLossError, Trainer, TrainResult, train
from dino_boc.train.export import export_run

__all__ = ["train", "Trainer", "TrainResult", "TrainConfig", "load_config", "export_run", "NonFiniteLossError"]
