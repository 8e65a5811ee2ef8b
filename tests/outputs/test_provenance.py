import hashlib
import json
from types import SimpleNamespace

import pytest
import torch

from dino_boc.errors import ConfigError, InputError
from dino_boc.outputs.columns import metadata_row, order_metadata_columns
from dino_boc.outputs.provenance import FORMAT_VERSION, FeatureLayout, Provenance, state_dict_sha256
from dino_boc.preprocess.config import PreprocessConfig
from outputs_helpers import make_provenance


def test_dict_and_json_round_trip():
    prov = make_provenance(tiling={"size": 224, "reduce": "mean"}, options={"z": "max", "mask_outside": True})
    d = prov.to_dict()
    assert list(d)[0] == "format_version" and d["format_version"] == FORMAT_VERSION
    assert d["feature_layout"] == {"arch": "boc", "n_last_blocks": 1, "avgpool": False, "channel_pool": "concat"}
    assert Provenance.from_dict(d) == prov
    assert Provenance.from_json(prov.to_json()) == prov
    assert json.loads(prov.to_json()) == d


def test_from_dict_rejects_other_versions_and_unknown_keys():
    d = make_provenance().to_dict()
    with pytest.raises(ConfigError, match="format_version"):
        Provenance.from_dict({**d, "format_version": FORMAT_VERSION + 1})
    with pytest.raises(ConfigError, match="unknown provenance keys"):
        Provenance.from_dict({**d, "colour": "blue"})
    missing = dict(d)
    del missing["model_name"]
    with pytest.raises(ConfigError, match="incomplete"):
        Provenance.from_dict(missing)
    with pytest.raises(ConfigError, match="not valid JSON"):
        Provenance.from_json("{oops")


def test_validation():
    with pytest.raises(ConfigError, match="preprocessing lacks"):
        make_provenance(preprocessing={"normalize": "self"})
    with pytest.raises(ConfigError, match="state_dict_sha256"):
        make_provenance(state_dict_sha256="XYZ")
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        make_provenance(options={"f": object()})
    with pytest.raises(ConfigError, match="n_last_blocks"):
        FeatureLayout(arch="boc", n_last_blocks=-1, avgpool=True)
    with pytest.raises(ConfigError, match="n_last_blocks"):  # 0 (patch means only) needs the patch means
        FeatureLayout(arch="boc", n_last_blocks=0, avgpool=False)


def test_differences_ignore_created_time():
    a = make_provenance(created="2024-01-01T00:00:00+00:00")
    b = make_provenance(created="2025-06-01T12:00:00+00:00")
    assert a.differences(b) == []
    c = make_provenance(feature_layout={"arch": "boc", "n_last_blocks": 4, "avgpool": True})
    assert a.differences(c) == ["feature_layout"]


def test_state_dict_sha256_follows_documented_recipe():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    expected = hashlib.sha256()
    for key in ("bias", "weight"):
        t = lin.state_dict()[key]
        expected.update(key.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        expected.update(t.detach().numpy().astype("<f4").tobytes())
    assert state_dict_sha256(lin) == expected.hexdigest()

    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(lin.state_dict())
    assert state_dict_sha256(twin) == state_dict_sha256(lin.state_dict())
    with torch.no_grad():
        twin.weight[0, 0] += 1e-3
    assert state_dict_sha256(twin) != state_dict_sha256(lin)


def test_from_model_reads_model_attributes():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    model.name = "tiny"
    model.pretrained = False
    model.config = SimpleNamespace(arch="ha")
    model.preprocess = PreprocessConfig(crop=32)
    prov = Provenance.from_model(model, n_last_blocks=4, avgpool=True, tiling={"size": 64, "reduce": "mean"})
    assert prov.model_name == "tiny" and prov.pretrained is False
    assert prov.state_dict_sha256 == state_dict_sha256(model)
    assert prov.preprocessing == json.loads(json.dumps(PreprocessConfig(crop=32).to_dict()))
    assert prov.feature_layout == FeatureLayout(arch="ha", n_last_blocks=4, avgpool=True)
    run_pre = PreprocessConfig(resize=64, crop=56)
    prov2 = Provenance.from_model(model, n_last_blocks=1, avgpool=False, preprocessing=run_pre)
    assert prov2.preprocessing["resize"] == 64 and prov2.preprocessing["crop"] == 56


def test_metadata_row_names():
    extra = {"Plate": "P1", "Metadata_Well": "A01"}
    row = metadata_row("/a/b.tif", ["DNA", "RNA"], extra, cell_label=7, centroid=(3, 4.5))
    assert row == {
        "Metadata_path": "/a/b.tif",
        "Metadata_channels": "DNA;RNA",
        "Metadata_Plate": "P1",
        "Metadata_Well": "A01",
        "Metadata_cell_label": 7,
        "Metadata_centroid_y": 3.0,
        "Metadata_centroid_x": 4.5,
    }
    with pytest.raises(InputError, match="reserved|sets"):
        metadata_row("x.tif", ["DNA"], {"path": "elsewhere"})
    with pytest.raises(InputError, match="';'"):
        metadata_row("x.tif", ["DNA;RNA"])


def test_metadata_column_order():
    first_seen = {
        "Metadata_centroid_x": (0, 0, 9),
        "Metadata_Well": (2, 0, 0),
        "Metadata_path": (0, 0, 0),
        "Metadata_Plate": (0, 0, 3),
        "Metadata_index": (0, 0, 0),
        "Metadata_cell_label": (0, 0, 7),
        "Metadata_channels": (0, 0, 1),
    }
    assert order_metadata_columns(first_seen) == [
        "Metadata_index",
        "Metadata_path",
        "Metadata_channels",
        "Metadata_Plate",
        "Metadata_Well",
        "Metadata_cell_label",
        "Metadata_centroid_x",
    ]


def test_outputs_written_with_the_old_key_name_are_read(tmp_path):
    """format_version 1 outputs written before the rename carry the state-dict hash as ``weights_sha256``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dino_boc.outputs import read_provenance

    new = make_provenance()
    old = {("weights_sha256" if k == "state_dict_sha256" else k): v for k, v in new.to_dict().items()}
    assert "state_dict_sha256" not in old and old["weights_sha256"] == "ab" * 32
    table = pa.table({"Metadata_path": ["a.tif"], "DNA_f0": [0.5]})
    path = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({"dino_boc": json.dumps(old)}), path)
    assert read_provenance(path) == new
    assert Provenance.from_dict(old).state_dict_sha256 == "ab" * 32
    with pytest.raises(ConfigError, match="both 'weights_sha256'"):
        Provenance.from_dict({**old, "state_dict_sha256": "cd" * 32})


def test_reads_provenance_written_before_the_one_layout_spec():
    """An output of an earlier version (its JSON as written then) reads back, and is written again the same."""
    text = ('{"format_version": 1, "model_name": "tiny-boc", "weights_sha256": null, "pretrained": false, '
            '"preprocessing": {"normalize": "self", "resize": null, "crop": 32, "scale": 255.0, "eps": 1e-07}, '
            '"feature_layout": {"arch": "ha", "n_last_blocks": 4, "avgpool": true, "channel_pool": "concat"}, '
            '"tiling": null, "options": {"dims": null}, "dino_boc_version": "0.1.0", '
            '"created": "2025-01-01T12:00:00+00:00"}')
    prov = Provenance.from_json(text)
    assert prov.feature_layout == FeatureLayout(arch="ha", n_last_blocks=4, avgpool=True, channel_pool="concat")
    assert prov.to_json() == text.replace('"weights_sha256"', '"state_dict_sha256"')  # the one renamed key
    with pytest.raises(ConfigError, match=r"unknown feature layout keys \['pool'\]"):
        Provenance.from_json(text.replace('"channel_pool"', '"pool"'))
