"""The one feature-layout spec (models/config.py) and the classes built on it: the model's default, the run's
options (EmbedOptions), the evaluation presets and the layout a table records (FeatureLayout)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dino_boc.errors import ConfigError
from dino_boc.eval.presets import PRESETS, FeaturePreset
from dino_boc.models.config import (
    CHANNEL_POOLS,
    FeatureDefaults,
    FeatureOverrides,
    FeatureSpec,
    ModelConfig,
    check_feature_options,
)
from dino_boc.outputs.provenance import FeatureLayout
from dino_boc.pipeline.options import EmbedOptions
from dino_boc.preprocess.config import PreprocessConfig

LAYOUT = ("n_last_blocks", "avgpool", "channel_pool")


def _names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_every_layout_class_takes_its_options_from_the_spec():
    """The three options are declared once (FeatureSpec) and once as run-level overrides (None: the default)."""
    assert _names(FeatureSpec) == list(LAYOUT) and _names(FeatureOverrides) == list(LAYOUT)
    assert FeatureDefaults is FeatureSpec
    for cls in (EmbedOptions, FeaturePreset):
        assert issubclass(cls, FeatureOverrides) and _names(cls)[:3] == list(LAYOUT)
    assert issubclass(FeatureLayout, FeatureSpec) and _names(FeatureLayout) == [*LAYOUT, "arch"]
    assert CHANNEL_POOLS == ("concat", "mean")


@pytest.mark.parametrize("options,message", [
    (dict(n_last_blocks=-1), "n_last_blocks=-1 must be a non-negative integer"),
    (dict(n_last_blocks=True), "n_last_blocks=True must be a non-negative integer"),
    (dict(n_last_blocks=1.0), "n_last_blocks=1.0 must be"),
    (dict(avgpool="yes"), "avgpool='yes' must be true or false"),
    (dict(channel_pool="max"), "channel_pool='max'; choose 'concat' or 'mean'"),
    (dict(n_last_blocks=0, avgpool=False), "n_last_blocks=0 with avgpool=False leaves no feature"),
])
def test_one_validation_for_every_class(options, message):
    with pytest.raises(ConfigError, match=message):
        check_feature_options(**options)
    with pytest.raises(ConfigError, match=message):
        FeatureSpec(**options)
    with pytest.raises(ConfigError, match=message):
        EmbedOptions(**options)
    with pytest.raises(ConfigError, match=message):
        FeaturePreset("p", **options)
    with pytest.raises(ConfigError, match=message):
        FeatureLayout(arch="boc", **options)


def test_dict_round_trip_and_errors():
    spec = FeatureSpec(n_last_blocks=0, avgpool=True, channel_pool="mean")
    assert spec.to_dict() == {"n_last_blocks": 0, "avgpool": True, "channel_pool": "mean"}
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert FeatureSpec.from_dict({"avgpool": False}) == FeatureSpec(n_last_blocks=4, avgpool=False)
    with pytest.raises(ConfigError, match=r"unknown feature layout keys \['pool'\]; known: \['avgpool', "):
        FeatureSpec.from_dict({"pool": "mean"})
    with pytest.raises(ConfigError, match="the feature layout is a list; expected a JSON object"):
        FeatureSpec.from_dict([4, True])
    layout = FeatureLayout.from_dict({"arch": "ha", "n_last_blocks": 2, "avgpool": False, "channel_pool": "concat"})
    assert layout == FeatureLayout(arch="ha", n_last_blocks=2, avgpool=False)
    assert list(layout.to_dict()) == ["arch", *LAYOUT]  # the key order of format_version 1
    with pytest.raises(ConfigError, match="incomplete feature layout"):
        FeatureLayout.from_dict({"n_last_blocks": 2, "avgpool": False})


def test_override_and_resolve_keep_the_default_where_none():
    model_default = FeatureSpec(n_last_blocks=0, avgpool=True, channel_pool="mean")  # OpenPhenom's
    assert model_default.override() == model_default
    assert model_default.override(n_last_blocks=1, channel_pool="concat") == FeatureSpec(n_last_blocks=1)
    assert EmbedOptions().resolve(model_default) == model_default
    assert EmbedOptions(avgpool=False, n_last_blocks=2).resolve(model_default) == \
        FeatureSpec(n_last_blocks=2, avgpool=False, channel_pool="mean")
    with pytest.raises(ConfigError, match="leaves no feature"):  # only the combination is wrong
        EmbedOptions(avgpool=False).resolve(model_default)
    # the CHAMMI preset pins L = 1 without patch means and keeps the model's channel pooling
    assert PRESETS["chammi"].resolve(model_default) == FeatureSpec(n_last_blocks=1, avgpool=False, channel_pool="mean")


def test_options_are_keyword_only_where_fields_were_inherited():
    """A positional call in the former field order fails loudly instead of filling another field."""
    with pytest.raises(TypeError):
        EmbedOptions(4)
    with pytest.raises(TypeError):
        FeaturePreset("p", 1, False)
    with pytest.raises(TypeError):
        FeatureLayout("boc", 1, False)
    assert FeaturePreset("p") == FeaturePreset("p", n_last_blocks=1, avgpool=False, resize=256, crop=224)
    assert FeaturePreset("p").embed_kwargs() == {"n_last_blocks": 1, "avgpool": False, "channel_pool": None,
                                                 "resize": 256, "crop": 224}


def test_config_sections_from_their_json_form():
    """ModelConfig, PreprocessConfig and FeatureSpec read config.json sections by one rule (_fields.from_fields)."""
    cfg = ModelConfig(arch="channel_vit", embed_dim=64, depth=2, num_heads=2, max_channels=2, channel_names=("a", "b"))
    assert cfg.to_dict()["channel_names"] == ["a", "b"]  # tuples are written as JSON lists
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    pre = PreprocessConfig(normalize="percentile", percentiles=(2.0, 98.0), saturation_noise=(200.0, 255.0))
    assert pre.to_dict()["percentiles"] == [2.0, 98.0] and pre.to_dict()["saturation_noise"] == [200.0, 255.0]
    assert PreprocessConfig().to_dict()["saturation_noise"] is None
    assert PreprocessConfig.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    with pytest.raises(ConfigError, match=r"unknown model config keys \['depht'\]"):
        ModelConfig.from_dict({"depht": 3})
    with pytest.raises(ConfigError, match=r"unknown preprocessing keys \['norm'\]"):
        PreprocessConfig.from_dict({"norm": "self"})
    with pytest.raises(ConfigError, match="the model config is a str; expected a JSON object"):
        ModelConfig.from_dict("boc")
    with pytest.raises(ConfigError, match="embed_dim=64 is not divisible by num_heads=5"):
        ModelConfig.from_dict({"embed_dim": 64, "num_heads": 5})
