"""Every bad input gets our exception class and a message that names the problem and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dino_boc
from dino_boc.errors import ChannelError, ConfigError, InputError, ModelNotFoundError


def _img(*shape, dtype=np.uint8):
    return np.ones(shape, dtype=dtype)


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (_img(32, 32), ["2 dimensions", "(K, H, W)", "img[None]"]),
        (_img(1, 1, 1, 32, 32), ["5 dimensions", "(K, H, W)"]),
        (_img(0, 32, 32), ["0 channels", "K >= 1"]),
        (_img(2, 0, 32, 32), ["0 channels"]),
        (_img(0, 2, 32, 32), ["batch is empty"]),
        (_img(2, 4, 4), ["4x4", "smaller than one 8x8 patch"]),
        (_img(2, 32, 32, dtype=bool), ["bool", "astype(np.uint8)"]),
        (_img(2, 32, 32, dtype=np.complex64), ["complex"]),
        (np.full((2, 32, 32), "a", dtype=object), ["dtype object", "integers or floats"]),
        (torch.ones(2, 32, 32, dtype=torch.bool), ["bool"]),
        ([], ["empty list"]),
        (5, ["type int", "numpy array"]),
        ([[_img(1, 32, 32)]], ["nested lists"]),
    ],
    ids=["2d", "5d", "k0", "batch-k0", "b0", "tiny", "bool", "complex", "object",
         "torch-bool", "empty-list", "int", "nested"],
)
def test_bad_images(tiny_model, image, words):
    with pytest.raises(InputError) as info:
        dino_boc.embed(image, model=tiny_model)
    for w in words:
        assert w in str(info.value)


def test_a_crop_that_is_not_a_multiple_of_the_patch(tiny_model):
    with pytest.raises(InputError) as info:
        dino_boc.embed(_img(2, 48, 48), model=tiny_model, crop=36)
    for w in ("36x36", "multiple of the patch size 8", "crop=32"):
        assert w in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_channel(tiny_model, bad):
    img = np.ones((3, 32, 32), dtype=np.float32)
    img[2, 5, 7] = bad
    with pytest.raises(InputError, match=r"NaN or infinite values in channel\(s\) \[2\].*nan_to_num"):
        dino_boc.embed(img, model=tiny_model)


def test_unknown_channel_name(tiny_model):
    with pytest.raises(ChannelError, match="'Tubulin'.*no channel names.*0..1") as info:
        dino_boc.embed(_img(2, 32, 32), ["Tubulin"], model=tiny_model)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("index", [2, -3, 10])
def test_out_of_range_channel_index(tiny_model, index):
    with pytest.raises(ChannelError, match=f"channel index {index} is out of range.*2 channels"):
        dino_boc.embed(_img(2, 32, 32), [index], model=tiny_model)


def test_empty_channel_selection(tiny_model):
    with pytest.raises(InputError, match=r"channels=\[\] selects no channel"):
        dino_boc.embed(_img(2, 32, 32), [], model=tiny_model)


@pytest.mark.parametrize("n", [5, -1])
def test_n_last_blocks_outside_the_depth(tiny_model, n):
    with pytest.raises(InputError, match=f"n_last_blocks={n} but the model has 4 blocks; choose 1..4"):
        dino_boc.embed(_img(1, 32, 32), model=tiny_model, n_last_blocks=n)


def test_n_last_blocks_zero_keeps_only_the_patch_means(tiny_model):
    img = _img(2, 32, 32)
    full = dino_boc.embed(img, model=tiny_model, n_last_blocks=1)  # [CLS per channel, patch mean per channel]
    np.testing.assert_array_equal(dino_boc.embed(img, model=tiny_model, n_last_blocks=0), full[full.size // 2:])
    with pytest.raises(InputError, match="n_last_blocks=0 with avgpool=False leaves no feature"):
        dino_boc.embed(img, model=tiny_model, n_last_blocks=0, avgpool=False)


@pytest.mark.parametrize("batch_size", [0, -2, 1.5])
def test_bad_batch_size(tiny_model, batch_size):
    with pytest.raises(InputError, match="batch_size=.*positive integer"):
        dino_boc.embed(_img(1, 32, 32), model=tiny_model, batch_size=batch_size)


def test_bad_options(tiny_model):
    with pytest.raises(ConfigError, match="normalize='zscore' is unknown"):
        dino_boc.embed(_img(1, 32, 32), model=tiny_model, normalize="zscore")
    with pytest.raises(ConfigError, match="crop=-8 must be a positive integer"):
        dino_boc.embed(_img(1, 32, 32), model=tiny_model, crop=-8)
    with pytest.raises(ConfigError, match="channel_pool='max'; choose 'concat' or 'mean'"):
        dino_boc.embed(_img(1, 32, 32), model=tiny_model, channel_pool="max")
    with pytest.raises(InputError, match="precision='fp8'"):
        dino_boc.embed(_img(1, 32, 32), model=tiny_model, precision="fp8")
    with pytest.raises(InputError, match="channel_ids= only applies to Channel-ViT"):
        dino_boc.embed(_img(1, 32, 32), model=tiny_model, channel_ids=[0])
    with pytest.raises(InputError, match="model must be a dino_boc model or a model name"):
        dino_boc.embed(_img(1, 32, 32), model=object())


def test_forward_tokens_checks_its_input(tiny_model):
    with pytest.raises(InputError, match=r"expected a \(B, K, H, W\) tensor"):
        tiny_model.forward_tokens(torch.zeros(2, 32, 32))
    with pytest.raises(InputError, match="30x32 is not a positive multiple of the patch size 8.*crop=24"):
        tiny_model.forward_tokens(torch.zeros(1, 2, 30, 32))


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'dino-boc-vitl61'.*Did you mean \['dino-boc-vitl16'"):
        dino_boc.load_model("dino-boc-vitl61", device="cpu")
    with pytest.raises(ModelNotFoundError, match="Known names"):
        dino_boc.embed(_img(1, 32, 32), model="no-such-model")


def test_bad_model_config():
    with pytest.raises(ConfigError, match="embed_dim=64 is not divisible by num_heads=3"):
        dino_boc.create_model("boc", embed_dim=64, depth=1, num_heads=3)
    with pytest.raises(ConfigError, match="arch='vit' is unknown"):
        dino_boc.create_model("vit", embed_dim=64, depth=1, num_heads=1)
