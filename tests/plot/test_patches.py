"""plot.patch_maps / attention_maps / patch_pca: a row per channel, maps at the image's size, attention
that sums as attention does and equals timm's own attention probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from dino_boc.errors import ChannelError, InputError
from dino_boc.plot import attention_maps, patch_maps, patch_pca
from dino_boc.preprocess import prepare_image


def _prepared(image, model):
    return prepare_image(image, model.preprocess, model.config.patch_size)


def _timm_cls_attention(model, x: torch.Tensor) -> np.ndarray:
    """Each channel alone through the plain timm forward; the last block's softmax probabilities are read
    from timm's own (non-fused) attention path with a hook on its attention dropout."""
    attn = model.backbone.blocks[-1].attn
    seen = []
    handle = attn.attn_drop.register_forward_hook(lambda mod, inp, out: seen.append(out[:, :, 0].clone()))
    old = attn.fused_attn
    attn.fused_attn = False
    try:
        with torch.no_grad():
            for k in range(x.shape[0]):
                model.backbone.forward_features(x[k][None, None])
    finally:
        attn.fused_attn = old
        handle.remove()
    return torch.cat(seen).numpy()  # (K, heads, 1+N)


def test_attention_rows_sum_to_one_including_cls(tiny_model, image):
    x = _prepared(image, tiny_model)
    maps, cls = attention_maps(x, tiny_model, with_cls=True)
    assert maps.shape == (3, 2, 4, 4) and cls.shape == (3, 2)
    assert (maps >= 0).all()
    np.testing.assert_allclose(maps.sum(axis=(-2, -1)) + cls, 1.0, atol=1e-5)


def test_attention_equals_timm_probabilities(tiny_model, image):
    x = _prepared(image, tiny_model)
    maps, cls = attention_maps(x, tiny_model, with_cls=True)
    ref = _timm_cls_attention(tiny_model, x)
    np.testing.assert_allclose(cls, ref[:, :, 0], atol=1e-5)
    np.testing.assert_allclose(maps.reshape(3, 2, -1), ref[:, :, 1:], atol=1e-5)


def test_attention_is_per_channel(tiny_model, image):
    x = _prepared(image, tiny_model)
    maps = attention_maps(x, tiny_model)
    np.testing.assert_allclose(attention_maps(x[[2, 0]], tiny_model), maps[[2, 0]], atol=1e-6)


def test_patch_pca_is_min_max_scaled_principal_components(tiny_model, image):
    x = _prepared(image, tiny_model)
    patch = tiny_model.forward_tokens(x[None]).patch[0, 1].detach().numpy()  # (N, D)
    rgb = patch_pca(patch, (4, 4))
    ref = PCA(n_components=3, svd_solver="full").fit_transform(patch.astype(np.float64))
    ref = (ref - ref.min(0)) / (ref.max(0) - ref.min(0))
    got = rgb.reshape(16, 3)
    for c in range(3):  # a sign flip of a component mirrors its min-max scaled values
        assert np.allclose(got[:, c], ref[:, c], atol=1e-4) or np.allclose(got[:, c], 1 - ref[:, c], atol=1e-4)


def test_patch_maps_one_row_per_channel_at_the_image_size(tiny_model, image):
    fig = patch_maps(image, model=tiny_model, names=["DNA", "ER", "Mito"], channels=["Mito", 0])
    panels = {ax.get_label(): ax for ax in fig.axes if ax.images}
    assert sorted(panels) == sorted(f"{kind}:{c}" for kind in ("input", "pca", "attention") for c in ("Mito", "DNA"))
    for label, ax in panels.items():
        arr = ax.images[0].get_array()
        assert arr.shape[:2] == (32, 32), label
    rows = {ax.get_subplotspec().rowspan.start: ax.get_label().split(":")[1] for ax in panels.values()}
    assert rows == {0: "Mito", 1: "DNA"}
    att = panels["attention:Mito"].images[0].get_array()
    ref = attention_maps(_prepared(image, tiny_model)[2:3], tiny_model).mean(axis=1)[0]
    np.testing.assert_allclose(att[::8, ::8], ref, atol=1e-6)


def test_patch_maps_crop_and_path(tiny_model, image, tmp_path):
    import tifffile

    big = np.pad(image, ((0, 0), (4, 12), (0, 8)))  # (3, 48, 40): not a multiple of the patch 8 in H
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, big, imagej=True, metadata={"axes": "CYX", "Labels": ["a", "b", "c"]})
    with pytest.raises(InputError, match="crop"):  # a crop must be a multiple of the patch
        patch_maps(big, model=tiny_model, crop=20)
    # no crop: the same size rule as embed() and the CLI, (44, 40) centre-cropped to (40, 40)
    fitted = patch_maps(big[:, :44], model=tiny_model, attention=False)
    assert all(ax.images[0].get_array().shape[:2] == (40, 40) for ax in fitted.axes if ax.images)
    fig = patch_maps(path, model=tiny_model, crop=24, attention=False, output=tmp_path / "m.png")
    labels = sorted(ax.get_label() for ax in fig.axes if ax.images)
    assert labels == sorted(f"{k}:{c}" for k in ("input", "pca") for c in "abc")
    assert all(ax.images[0].get_array().shape[:2] == (24, 24) for ax in fig.axes if ax.images)
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_patch_maps_errors(tiny_model, image):
    with pytest.raises(ChannelError, match="Golgi"):
        patch_maps(image, model=tiny_model, names=["a", "b", "c"], channels=["Golgi"])
    with pytest.raises(InputError, match="2 channel names"):
        patch_maps(image, model=tiny_model, names=["a", "b"])


def test_attention_needs_a_boc_model(image):
    pytest.importorskip("dino_boc.models.hierarchical")
    import dino_boc

    ha = dino_boc.create_model("ha", embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=32, seed=0)
    with pytest.raises(InputError, match="attention=False"):
        attention_maps(_prepared(image, ha), ha)
    fig = patch_maps(image, model=ha, attention=False)
    assert len([ax for ax in fig.axes if ax.images]) == 6
