"""Feature presets of the paper's evaluations (App. D.2): which tokens form the feature vector, and the
pre-processing of the released evaluation.

- ``"chammi"`` (Tables 4 and 5, 1-NN): the CLS tokens of the last block only (L = 1), no patch average,
  so the feature is ``K·D`` for DINO BoC, ``(1+K)·D`` for DINO HA and ``D`` for Channel-ViT.
- ``"linear"`` (Tables 6 and 12, linear probe): the last block's CLS tokens plus the per-channel average of
  its patch tokens (BoC ``K·D + K·D``).

Both use the released CHAMMI transform: resize the shorter side to 256, centre crop 224, then per-channel
self-normalisation (``make_classification_eval_cell_transform(resize_size=256, crop_size=224)``). A zoo
model with its own geometry (MorphEm, DINOv2: a square 224 × 224 resize) keeps its own recipe
(:func:`preset_for`), as in its authors' benchmark code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from dino_boc.errors import ConfigError
from dino_boc.models.config import FeatureOverrides

__all__ = ["FeaturePreset", "PRESETS", "get_preset", "preset_for"]


@dataclass(frozen=True)
class FeaturePreset(FeatureOverrides):
    """Options passed to ``embed`` / ``embed_dataset`` for one evaluation protocol: a name, the feature
    layout (:class:`~dino_boc.models.config.FeatureOverrides`: ``n_last_blocks``, ``avgpool``, ``channel_pool``;
    None keeps the model's default) and the geometry. Only ``name`` is positional.

    Attributes:
        name: short name, used in cache folder names.
        n_last_blocks: L, the number of last blocks whose CLS tokens are concatenated (1).
        avgpool: also append the last block's per-channel average of patch tokens (False).
        resize: shorter side after resizing, or None for no resize.
        crop: side of the centre crop, or None for no crop.
    """

    name: str
    n_last_blocks: int | None = field(default=1, kw_only=True)  # the CHAMMI protocol's last-block CLS
    avgpool: bool | None = field(default=False, kw_only=True)
    resize: int | None = field(default=256, kw_only=True)
    crop: int | None = field(default=224, kw_only=True)

    def embed_kwargs(self) -> dict:
        """The preset as keyword arguments of ``embed`` / ``embed_dataset``."""
        d = asdict(self)
        d.pop("name")
        return d


PRESETS: dict[str, FeaturePreset] = {
    "chammi": FeaturePreset("chammi", n_last_blocks=1, avgpool=False, resize=256, crop=224),
    "linear": FeaturePreset("linear", n_last_blocks=1, avgpool=True, resize=256, crop=224),
}


def get_preset(preset: str | FeaturePreset) -> FeaturePreset:
    """Return a :class:`FeaturePreset` given one or its name.

    Raises:
        ConfigError: an unknown name.
    """
    if isinstance(preset, FeaturePreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ConfigError(f"unknown feature preset {preset!r}; expected one of {sorted(PRESETS)}") from None


def preset_for(preset: FeaturePreset, model) -> FeaturePreset:
    """``preset`` for ``model``: the released resize/crop, unless the model's recipe resizes to a square of
    its own (``model.preprocess.resize_mode == "square"``), which is kept (``resize=None, crop=None``)."""
    if getattr(model.preprocess, "resize_mode", "shorter") == "square":
        return replace(preset, resize=None, crop=None)
    return preset
