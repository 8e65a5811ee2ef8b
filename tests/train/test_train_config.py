"""Training config: YAML + dotted overrides -> frozen dataclasses; unknown keys named; paper defaults."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from dino_boc.errors import ConfigError
from dino_boc.train.config import (
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_overrides,
    save_config,
    shipped_configs,
)


def test_defaults_are_the_paper_vitl16_boc_recipe():
    cfg = load_config("vitl16_boc")
    assert cfg == load_config(None).replace(**{"data.num_workers": 10, "train.output_dir": "runs/vitl16_boc"})
    m = cfg.model
    assert (m.arch, m.embed_dim, m.depth, m.num_heads, m.patch_size) == ("boc", 1024, 24, 16, 16)
    assert (m.drop_path_rate, m.init_values) == (0.1, 1e-5)
    assert cfg.train.batch_size == 1024
    assert (cfg.dino.head_n_prototypes, cfg.dino.head_hidden_dim, cfg.dino.head_bottleneck_dim) == (65536, 2048, 256)
    assert cfg.dino.koleo_loss_weight == 0.1 and cfg.dino.center_momentum == 0.9
    assert cfg.ibot.mask_ratio_min_max == (0.1, 0.5) and cfg.ibot.mask_sample_probability == 0.5
    o = cfg.optim
    assert (o.base_lr, o.min_lr, o.warmup_epochs, o.weight_decay, o.weight_decay_end) == (5e-4, 1e-6, 20, 0.04, 0.2)
    assert (o.momentum_teacher, o.warmup_teacher_temp, o.teacher_temp) == (0.996, 0.04, 0.07)
    assert (o.layerwise_decay, o.patch_embed_lr_mult, o.clip_grad, o.freeze_last_layer_epochs) == (0.9, 0.2, 3.0, 1)
    c = cfg.crops
    assert (c.global_size, c.local_size, c.n_global, c.n_local) == (224, 96, 2, 8)
    assert (c.global_scale, c.local_scale) == ((0.4, 1.0), (0.005, 0.4))
    # the released loop and views (issue 14): trained prototype norms, decayed tokens, uniform drop path,
    # Div255 views, no antialiasing in the random resized crop
    assert not cfg.dino.head_norm_last_layer and not cfg.ibot.head_norm_last_layer
    assert o.weight_decay_rule == "dinov2" and m.drop_path_uniform
    assert (cfg.data.intensity, cfg.data.scale) == ("divide", 255.0) and not c.antialias
    for name in ("vitl16_ha", "vitl16_channel_vit"):
        other = load_config(name)
        assert (other.data.intensity, other.crops.antialias, other.optim.weight_decay_rule) == ("divide", False, "dinov2")
        assert other.model.drop_path_uniform and not other.dino.head_norm_last_layer


def test_demo_recipe_keeps_the_choices_its_shipped_weights_were_trained_with():
    demo = load_config("vitt16_nuclei_demo")
    assert demo.data.intensity == "minmax" and demo.crops.antialias and not demo.model.drop_path_uniform
    assert demo.dino.head_norm_last_layer and demo.optim.weight_decay_rule == "timm"


def test_shipped_configs_all_load():
    names = shipped_configs()
    assert {"vitl16_boc", "vitl16_ha", "vitl16_channel_vit", "tiny_cpu"} <= set(names)
    archs = {n: load_config(n).model.arch for n in names}
    assert archs["vitl16_ha"] == "ha" and archs["vitl16_channel_vit"] == "channel_vit"
    tiny = load_config("tiny_cpu")
    assert 64 <= tiny.model.embed_dim <= 192 and 2 <= tiny.model.depth <= 6
    assert (tiny.crops.global_size, tiny.crops.local_size) == (32, 16)


def test_overrides_are_parsed_as_yaml_and_applied():
    parsed = parse_overrides(["a.b=1e-4", "c=true", "d=[1, 2]", "e=null"])
    assert parsed == {"a.b": "1e-4", "c": True, "d": [1, 2], "e": None}
    cfg = load_config("tiny_cpu", ["optim.base_lr=1e-4", "data.sources=[{path: x.tif, kind: stack}, y/]",
                                   "ibot.mask_ratio_min_max=[0.2, 0.3]", "optim.iters_per_epoch=null"])
    assert cfg.optim.base_lr == 1e-4  # "1e-4" is a string in YAML 1.1; floats accept it
    assert [s.path for s in cfg.data.sources] == ["x.tif", "y/"] and cfg.data.sources[0].kind == "stack"
    assert cfg.ibot.mask_ratio_min_max == (0.2, 0.3) and cfg.optim.iters_per_epoch is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.base_lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.bogus=1", r"optim\.bogus.*valid keys of optim: \['epochs', 'iters_per_epoch', 'base_lr'"),
        ("nosection.x=1", r"unknown config key\(s\) \['nosection'\].*'model', 'init', 'data'"),
        ("crops.global_size=big", "crops.global_size must be an integer"),
        ("train.precision=fp8", r"train.precision='fp8'; choose one of \['auto', 'bf16', 'fp32'\]"),
        ("model.num_heads=5", "not divisible by num_heads=5"),
        ("data.sources=[{path: a, colour: red}]", r"data.sources\[0\]\.colour"),
        ("optim.base_lr", "not key=value"),
    ],
)
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny_cpu", [override])


def test_yaml_file_and_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  arch: ha\n  embed_dim: 64\n  num_heads: 4\ntrain:\n  batch_size: 8\n")
    cfg = load_config(path, ["train.seed=3"])
    assert (cfg.model.arch, cfg.model.embed_dim, cfg.train.batch_size, cfg.train.seed) == ("ha", 64, 8, 3)
    assert cfg.model.depth == TrainConfig().model.depth  # untouched keys keep their defaults
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg
    assert config_from_dict(yaml.safe_load((tmp_path / "resolved.yaml").read_text())) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_missing_config_names_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match="tiny_cpu"):
        load_config("no_such_config")
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(tmp_path / "bad.yaml")


def test_dino_and_ibot_heads_share_one_head_config():
    from dino_boc.train.config import DinoConfig, HeadConfig, IbotConfig

    head = [f.name for f in dataclasses.fields(HeadConfig)]
    assert head == ["head_n_prototypes", "head_hidden_dim", "head_bottleneck_dim", "head_n_layers",
                    "head_norm_last_layer"]
    for cls in (DinoConfig, IbotConfig):
        assert issubclass(cls, HeadConfig)
        assert {f.name: f.default for f in dataclasses.fields(cls) if f.name in head} == \
            {"head_n_prototypes": 65536, "head_hidden_dim": 2048, "head_bottleneck_dim": 256, "head_n_layers": 3,
             "head_norm_last_layer": False}
    cfg = config_from_dict({"ibot": {"separate_head": True, "head_n_prototypes": 512},
                            "dino": {"head_n_layers": 2}})
    assert (cfg.ibot.head_n_prototypes, cfg.ibot.head_n_layers) == (512, 3)
    assert (cfg.dino.head_n_prototypes, cfg.dino.head_n_layers) == (65536, 2)
