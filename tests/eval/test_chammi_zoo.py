"""``chammi(model=NAME_OR_PATH)`` with a zoo model: its own recipe (MorphEm: square 224 resize, instance
norm, final-norm CLS) replaces the paper's resize 256 / crop 224, as in its authors' benchmark code."""

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import save_file

import dino_boc
from dino_boc.errors import ChannelError
from dino_boc.eval import chammi, load_chammi
from dino_boc.eval.chammi import cache_key
from dino_boc.eval.presets import get_preset

from .chammi_fixture import write_chammi


def test_chammi_runs_a_native_morphem_file_with_its_own_recipe(tmp_path):
    root, cache = tmp_path / "CHAMMI", tmp_path / "cache"
    images = write_chammi(root)
    tiny = dino_boc.create_model("boc", embed_dim=64, depth=1, num_heads=1, patch_size=32, img_size=224,
                                 init_values=None, seed=0)
    state = {k: v.contiguous() for k, v in tiny.backbone.state_dict().items() if k != "mask_token"}
    (tmp_path / "morphem").mkdir()
    save_file(state, str(tmp_path / "morphem" / "model.safetensors"))  # MorphEm's native (DINO v1) layout

    got = chammi(root, model=str(tmp_path / "morphem"), cache_dir=cache, preset="chammi", num_workers=0)
    assert len(got) == 1 and got.notna().any(axis=None)
    model = dino_boc.load_model(tmp_path / "morphem", device="cpu")
    table = pd.read_parquet(cache / cache_key(str(tmp_path / "morphem"), get_preset("chammi")) / "HPA.parquet")
    rows = load_chammi(root).query("chammi_source == 'HPA'")
    feats = table[[c for c in table.columns if not c.startswith("Metadata_")]].to_numpy()
    expected = np.stack([dino_boc.embed(images[fp], model=model) for fp in rows["file_path"]])
    assert feats.shape == (len(rows), 4 * 64)  # last-block CLS per channel, at 224 x 224 whatever the crop
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-4)


def test_a_fixed_channel_model_on_a_source_without_its_channels_is_a_clear_error(tmp_path):
    root = tmp_path / "CHAMMI"
    write_chammi(root)
    hpa = dino_boc.create_model("fixed", in_chans=4, channel_names=("microtubules", "protein", "nucleus", "ER"),
                                embed_dim=64, depth=1, num_heads=1, patch_size=8, img_size=32, seed=0)
    with pytest.raises(ChannelError, match=r"CHAMMI source Allen: .*missing \['microtubules', 'ER'\]"):
        chammi(root, model=hpa, cache_dir=tmp_path / "cache", num_workers=0)
