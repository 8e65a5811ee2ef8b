"""Multi-crop augmentation: shapes, normalisation, same geometry on all channels, torchvision equivalence, seeds."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from dino_boc.errors import ConfigError, InputError
from dino_boc.train.augment import (
    MultiCropAugmentation,
    MultiCropConfig,
    random_brightness_contrast,
    random_flips,
    random_resized_crop,
    random_resized_crop_params,
)

SMALL = MultiCropConfig(global_size=32, local_size=16)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(k: int, h: int = 64, w: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(k, h, w, generator=_seeded(seed))


@pytest.mark.parametrize("k", [1, 3])
def test_crop_counts_shapes_and_self_normalisation(k):
    crops = MultiCropAugmentation(SMALL)(_image(k), generator=_seeded(1))
    assert len(crops.global_crops) == 2 and len(crops.local_crops) == 8
    assert all(c.shape == (k, 32, 32) for c in crops.global_crops)
    assert all(c.shape == (k, 16, 16) for c in crops.local_crops)
    for c in crops.global_crops + crops.local_crops:
        torch.testing.assert_close(c.mean(dim=(-2, -1)), torch.zeros(k), atol=1e-5, rtol=0)
        torch.testing.assert_close(c.std(dim=(-2, -1), unbiased=False), torch.ones(k), atol=1e-4, rtol=0)


def test_paper_defaults():
    c = MultiCropConfig()
    assert not c.antialias  # the released torchvision 0.15 tensor resize does not antialias
    assert (c.global_size, c.local_size, c.n_global, c.n_local) == (224, 96, 2, 8)
    assert c.global_scale == (0.4, 1.0) and c.local_scale == (0.005, 0.4)
    assert (c.intensity_std, c.intensity_min, c.eps) == (0.2, 0.5, 1e-7)


def test_same_seed_same_crops_other_seed_other_crops():
    aug = MultiCropAugmentation(SMALL)
    img = _image(2)
    a, b = aug(img, generator=_seeded(7)), aug(img, generator=_seeded(7))
    c = aug(img, generator=_seeded(8))
    for x, y in zip(a.global_crops + a.local_crops, b.global_crops + b.local_crops):
        torch.testing.assert_close(x, y)
    assert not torch.allclose(a.global_crops[0], c.global_crops[0])


def test_every_channel_gets_the_same_window_and_flips():
    # brightness/contrast are affine per channel (no clipping) and self-normalisation undoes them,
    # so identical channels stay identical only if crop and flips are shared
    base = _image(1, seed=3)
    img = base.repeat(4, 1, 1)
    aug = MultiCropAugmentation(MultiCropConfig(global_size=32, local_size=16, clip=False))
    crops = aug(img, generator=_seeded(4))
    for c in crops.global_crops + crops.local_crops:
        for ch in range(1, 4):
            torch.testing.assert_close(c[ch], c[0], atol=2e-4, rtol=0)


def test_brightness_contrast_equals_torchvision_per_channel():
    img = _image(3, seed=5) * 0.8
    out = random_brightness_contrast(img, generator=_seeded(6))
    g = _seeded(6)  # redraw the factors: brightness for all channels, then contrast
    bright = (1 + 0.2 * torch.randn(3, generator=g)).clamp(min=0.5)
    contrast = (1 + 0.2 * torch.randn(3, generator=g)).clamp(min=0.5)
    for k in range(3):
        ref = TF.adjust_contrast(TF.adjust_brightness(img[k : k + 1], bright[k].item()), contrast[k].item())
        torch.testing.assert_close(out[k : k + 1], ref)
    assert not torch.allclose(bright, bright[0].expand(3))  # factors differ per channel


def test_brightness_contrast_without_clipping_keeps_values_above_one():
    img = _image(1, seed=9) * 200  # e.g. a 16-bit image divided by 255
    assert random_brightness_contrast(img, clip=False, generator=_seeded(0)).max() > 1
    assert random_brightness_contrast(img, generator=_seeded(0)).max() <= 1


def test_crop_window_bounds_and_full_window():
    g = _seeded(10)
    for _ in range(200):
        top, left, h, w = random_resized_crop_params(50, 70, scale=(0.05, 0.4), generator=g)
        assert 0 <= top and top + h <= 50 and 0 <= left and left + w <= 70
        assert 0.05 * 3500 * 0.8 <= h * w <= 0.4 * 3500 * 1.2  # area fraction up to rounding
        assert 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.25
    img = _image(2, 24, 24)
    torch.testing.assert_close(random_resized_crop(img, 24, scale=(1, 1), ratio=(1, 1), generator=g), img)


def test_flips():
    img = _image(2, 8, 6)
    torch.testing.assert_close(random_flips(img, p=1.0), torch.flip(img, dims=(-2, -1)))
    torch.testing.assert_close(random_flips(img, p=0.0), img)


def test_bad_inputs_and_settings():
    aug = MultiCropAugmentation(SMALL)
    with pytest.raises(InputError, match="float tensor \\(K, H, W\\)"):
        aug(torch.zeros(8, 8))
    with pytest.raises(InputError, match="float tensor"):
        aug(torch.zeros(1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="local_scale"):
        MultiCropConfig(local_scale=(0.0, 0.4))


@pytest.mark.parametrize("antialias", [False, True])
def test_random_resized_crop_is_a_bilinear_resize_of_the_drawn_window(antialias):
    # the window comes from the same draws; the resize is F.interpolate written here (align_corners=False,
    # as torchvision), antialiased only on request (the released code's tensors are not)
    img = _image(2, 64, 48, seed=4)
    got = random_resized_crop(img, 16, scale=(0.5, 1.0), antialias=antialias, generator=_seeded(5))
    top, left, h, w = random_resized_crop_params(64, 48, scale=(0.5, 1.0), generator=_seeded(5))
    window = img[None, :, top : top + h, left : left + w]
    want = torch.nn.functional.interpolate(window, size=(16, 16), mode="bilinear", align_corners=False,
                                           antialias=antialias)[0]
    torch.testing.assert_close(got, want)
    other = torch.nn.functional.interpolate(window, size=(16, 16), mode="bilinear", align_corners=False,
                                            antialias=not antialias)[0]
    assert (got - other).abs().max() > 1e-3  # the windows shrink, so the two resizes differ


def test_multicrop_uses_the_antialias_setting():
    img = _image(1, 96, 96, seed=2)
    off = MultiCropAugmentation(MultiCropConfig(global_size=16, local_size=8))(img, generator=_seeded(1))
    on = MultiCropAugmentation(MultiCropConfig(global_size=16, local_size=8, antialias=True))(img, generator=_seeded(1))
    assert not torch.allclose(off.global_crops[0], on.global_crops[0])
