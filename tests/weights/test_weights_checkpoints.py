"""Released checkpoints in every layout load with load_model(path) and give the source model's features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dino_boc
from dino_boc.errors import WeightsError

from .conftest import LAYOUTS, TINY, backbone_state, chunk_keys, released_checkpoint, with_active_blocks


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_source_features(tiny_model, image, write_checkpoint, layout):
    path = write_checkpoint(tiny_model, layout)
    loaded = dino_boc.load_model(path, device="cpu")
    assert loaded.config == tiny_model.config  # architecture inferred from the tensors (heads = D / 64)
    assert loaded.pretrained is True and loaded.name == layout
    for key, value in tiny_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0, msg=key)
    np.testing.assert_array_equal(dino_boc.embed(image, model=loaded), dino_boc.embed(image, model=tiny_model))


def test_chunked_keys_are_numbered_globally():
    state = {f"blocks.{i}.norm1.weight": torch.full((1,), float(i)) for i in range(6)}
    assert sorted(chunk_keys(state, 6, 3)) == [
        "blocks.0.0.norm1.weight", "blocks.0.1.norm1.weight", "blocks.1.2.norm1.weight",
        "blocks.1.3.norm1.weight", "blocks.2.4.norm1.weight", "blocks.2.5.norm1.weight",
    ]


@pytest.mark.parametrize("block_chunks", [1, 4])
def test_other_chunk_counts(tiny_model, image, write_checkpoint, block_chunks):
    obj = chunk_keys(backbone_state(tiny_model), 4, block_chunks)
    loaded = dino_boc.load_model(write_checkpoint(tiny_model, "chunked", obj), device="cpu")
    np.testing.assert_array_equal(dino_boc.embed(image, model=loaded), dino_boc.embed(image, model=tiny_model))


def test_checkpoint_without_mask_token_loads(tiny_model, image, write_checkpoint):
    obj = released_checkpoint(tiny_model, "plain")
    del obj["mask_token"]
    loaded = dino_boc.load_model(write_checkpoint(tiny_model, "plain", obj), device="cpu")
    np.testing.assert_array_equal(dino_boc.embed(image, model=loaded), dino_boc.embed(image, model=tiny_model))


def test_num_heads_overrides_the_d_over_64_convention(image, write_checkpoint):
    four_heads = with_active_blocks(dino_boc.create_model("boc", seed=0, **{**TINY, "num_heads": 4}))
    path = write_checkpoint(four_heads, "plain")
    default = dino_boc.load_model(path, device="cpu")
    assert default.config.num_heads == 2  # 128 / 64: the weights fit, but the features are not the source's
    assert np.abs(dino_boc.embed(image, model=default) - dino_boc.embed(image, model=four_heads)).max() > 1e-3
    given = dino_boc.load_model(path, device="cpu", num_heads=4)
    np.testing.assert_array_equal(dino_boc.embed(image, model=given), dino_boc.embed(image, model=four_heads))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_unknown_key_is_named(tiny_model, write_checkpoint, layout):
    obj = released_checkpoint(tiny_model, layout)
    target = obj["teacher"] if layout == "training" else obj
    prefix = "module.backbone." if layout == "training" else ""
    target[prefix + "registers.weight"] = torch.zeros(4, 128)
    with pytest.raises(WeightsError, match=r"unexpected keys \['backbone\.registers\.weight'\]"):
        dino_boc.load_model(write_checkpoint(tiny_model, layout, obj), device="cpu")


@pytest.mark.parametrize(("layout", "key", "flat"), [
    ("plain", "blocks.1.attn.proj.bias", "blocks.1.attn.proj.bias"),
    ("chunked", "blocks.0.1.attn.proj.bias", "blocks.1.attn.proj.bias"),
    ("training", "module.backbone.blocks.1.1.attn.proj.bias", "blocks.1.attn.proj.bias"),
    ("plain", "norm.weight", "norm.weight"),
])
def test_a_missing_key_is_named(tiny_model, write_checkpoint, layout, key, flat):
    obj = released_checkpoint(tiny_model, layout)
    del (obj["teacher"] if layout == "training" else obj)[key]
    with pytest.raises(WeightsError, match=rf"missing keys \['backbone\.{flat}'\]"):
        dino_boc.load_model(write_checkpoint(tiny_model, layout, obj), device="cpu")


def test_a_different_shape_is_an_error(tiny_model, write_checkpoint):
    obj = released_checkpoint(tiny_model, "plain")
    obj["blocks.2.mlp.fc1.weight"] = torch.zeros(256, 128)
    expected = r"shape mismatches backbone\.blocks\.2\.mlp\.fc1\.weight: checkpoint \(256, 128\) vs model \(512, 128\)"
    with pytest.raises(WeightsError, match=expected):
        dino_boc.load_model(write_checkpoint(tiny_model, "plain", obj), device="cpu")


def test_a_multi_channel_patch_embedding_is_an_error(tiny_model, write_checkpoint):
    obj = released_checkpoint(tiny_model, "plain")
    obj["patch_embed.proj.weight"] = obj["patch_embed.proj.weight"].repeat(1, 3, 1, 1)
    with pytest.raises(WeightsError, match="takes 3 input channels; DINO BoC checkpoints take 1"):
        dino_boc.load_model(write_checkpoint(tiny_model, "plain", obj), device="cpu")


def test_not_a_vit_checkpoint_is_an_error(tiny_model, write_checkpoint):
    with pytest.raises(WeightsError, match="no 'cls_token'"):
        dino_boc.load_model(write_checkpoint(tiny_model, "plain", {"fc.weight": torch.zeros(2, 2)}), device="cpu")
    with pytest.raises(WeightsError, match="holds a str, not a tensor"):
        dino_boc.load_model(write_checkpoint(tiny_model, "plain", {"cls_token": "oops"}), device="cpu")


def test_a_corrupt_checkpoint_file_is_an_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"\x80\x02 this is not a torch file")
    with pytest.raises(WeightsError, match=r"cannot read checkpoint .*broken\.pth"):
        dino_boc.load_model(path, device="cpu")
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        dino_boc.load_model(not_a_dict, device="cpu")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "pickle.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 8), "callback": json.dumps}, path)  # needs weights_only=False
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        dino_boc.load_model(path, device="cpu")


def test_wrong_suffix_is_model_not_found(tmp_path):
    from dino_boc.errors import ModelNotFoundError

    path = tmp_path / "weights.txt"
    path.write_text("hello")
    with pytest.raises(ModelNotFoundError, match=r"\.txt file; expected \.pth"):
        dino_boc.load_model(path, device="cpu")


def test_full_dinov2_training_checkpoint_keeps_the_teacher(tmp_path):
    """{"model": {"student.backbone.*", "teacher.backbone.*", heads}} loads the teacher's weights."""
    import numpy as np
    import torch

    import dino_boc

    teacher = dino_boc.create_model("boc", embed_dim=128, depth=2, num_heads=2, patch_size=8, img_size=32, seed=1)
    student = dino_boc.create_model("boc", embed_dim=128, depth=2, num_heads=2, patch_size=8, img_size=32, seed=2)
    sd = {}
    for prefix, m in (("teacher", teacher), ("student", student)):
        for k, v in m.backbone.state_dict().items():
            sd[f"{prefix}.backbone.{k}"] = v
        sd[f"{prefix}.dino_head.last_layer.weight_v"] = torch.zeros(4, 8)
    path = tmp_path / "training.pth"
    torch.save({"model": sd}, path)
    loaded = dino_boc.load_model(path, device="cpu")
    img = np.random.default_rng(0).integers(0, 255, (2, 32, 32)).astype(np.uint8)
    np.testing.assert_allclose(dino_boc.embed(img, n_last_blocks=2, model=loaded), dino_boc.embed(img, n_last_blocks=2, model=teacher), atol=1e-6)
    assert np.abs(dino_boc.embed(img, n_last_blocks=2, model=loaded) - dino_boc.embed(img, n_last_blocks=2, model=student)).max() > 1e-3
