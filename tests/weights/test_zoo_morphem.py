"""MorphEm (CaicedoLab/MorphEm): a tiny random checkpoint in its native layout (the DINO v1 ViT of
CHAMMI-75 ``benchmarks/feat_models/vision_transformer.py``, keys as its ``state_dict``), loaded by file and by
registry name through a 127.0.0.1 Hub and then an offline cache, against the published recipe written here:
SaturationNoiseInjector -> InstanceNorm2d -> Resize((224, 224), antialias=True) -> ``x_norm_clstoken`` per
channel, concatenated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import dino_boc
from dino_boc.precision import cpu_native_bf16
from dino_boc.errors import WeightsError

from .zoo_hub import hub_server, run_python

D, DEPTH, HEADS, PATCH, SIZE = 128, 2, 2, 16, 224


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(D, eps=1e-6), nn.LayerNorm(D, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * (D // HEADS) ** -0.5).softmax(-1)
        x = x + self.attn.proj((a @ v).transpose(1, 2).reshape(b, n, D))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class DinoV1ViT(nn.Module):
    """The published DINO v1 ViT (in_chans=1), written from its equations; ``forward`` = x_norm_clstoken."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, D, PATCH, PATCH)
        self.cls_token = nn.Parameter(torch.randn(1, 1, D) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + (SIZE // PATCH) ** 2, D) * 0.5)
        self.blocks = nn.ModuleList(_Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(D, eps=1e-6)
        with torch.no_grad():
            for p in self.parameters():
                p.add_(torch.randn_like(p) * 0.05)

    def forward(self, x):
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], 1) + self.pos_embed
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)[:, 0]


def published_features(net: DinoV1ViT, img: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """CHAMMI-75's MorphEm transform + __call__ on one (K, H, W) image; noise on uint8 from a seeded
    generator, one (H, W) plane per channel (dino_boc's documented seeding)."""
    x = torch.from_numpy(img.astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    if img.dtype == np.uint8:
        for c in range(len(x)):
            noise = torch.empty(x.shape[1:]).uniform_(200, 255, generator=gen)
            x[c] = torch.where(x[c] == 255, noise, x[c])
    x = nn.InstanceNorm2d(len(x), affine=False, track_running_stats=False, eps=1e-7)(x)
    x = F.interpolate(x[None], size=(224, 224), mode="bilinear", align_corners=False, antialias=True)[0]
    with torch.no_grad():
        return torch.cat([net(x[c][None, None]) for c in range(len(x))], dim=1)[0].numpy()


@pytest.fixture
def net():
    return DinoV1ViT().eval()


@pytest.fixture
def native_file(net, tmp_path):
    path = tmp_path / "snapshot" / "model.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(3, 150, 180)).astype(np.uint8)
    u8[:, :20, :20] = 255  # saturated: MorphEm's noise replaces them
    u16 = rng.integers(0, 65536, size=(2, 200, 120)).astype(np.uint16)
    return u8, u16


def test_native_file_gives_the_published_features(net, native_file, images):
    model = dino_boc.load_model(native_file, device="cpu")
    assert model.card["family"] == "morphem" and model.features.n_last_blocks == 1
    assert model.preprocess.saturation_noise == (200.0, 255.0)
    for img in images:
        got = dino_boc.embed(img, model=model, precision="fp32")
        assert got.shape == (img.shape[0] * D,)
        np.testing.assert_allclose(got, published_features(net, img), atol=2e-4, rtol=0)
    # the noise is seeded: a second call gives the same numbers
    np.testing.assert_array_equal(dino_boc.embed(images[0], model=model, precision="fp32"), dino_boc.embed(images[0], model=model, precision="fp32"))


def test_the_noise_only_touches_saturated_uint8_pixels(net, native_file, images):
    model = dino_boc.load_model(native_file, device="cpu")
    u8 = images[0]
    unsaturated = np.minimum(u8, 254)
    as_u16 = u8.astype(np.uint16)  # the same values, but 255 is not saturation in 16 bits
    assert not np.allclose(dino_boc.embed(u8, model=model, precision="fp32"), dino_boc.embed(as_u16, model=model, precision="fp32"), atol=1e-3)
    np.testing.assert_allclose(dino_boc.embed(unsaturated, model=model, precision="fp32"),
                               dino_boc.embed(unsaturated.astype(np.uint16), model=model, precision="fp32"), atol=1e-5)


def test_unknown_keys_are_named(net, tmp_path):
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["blocks.0.attn.q_norm.weight"] = torch.ones(D)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match=r"blocks\.0\.attn\.q_norm\.weight.*family="):
        dino_boc.load_model(tmp_path / "model.safetensors", device="cpu", family="morphem")


def test_by_name_through_the_hub_then_offline(net, native_file, images, tmp_path):
    """The Hub snapshot also holds remote code; it is neither downloaded nor run. The online run is README's
    "real features in three lines", verbatim (``img`` defined first)."""
    files = {
        "model.safetensors": native_file.read_bytes(),
        "config.json": json.dumps({"auto_map": {"AutoModel": "modeling_morphem.MorphEm"}}).encode(),
        "modeling_morphem.py": b"raise SystemExit('remote code must never run')\n",
        "README.md": b"---\nlicense: mit\n---\n# MorphEm\n",
    }
    np.save(tmp_path / "u8.npy", images[0])
    np.save(tmp_path / "u16.npy", images[1])
    code = """
import json, numpy as np, dino_boc
m = dino_boc.load_model("morphem-vits16", device="cpu")
np.save("f8.npy", dino_boc.embed(np.load("u8.npy"), model=m, precision="fp32"))
np.save("f16.npy", dino_boc.embed(np.load("u16.npy"), model=m, precision="fp32"))
row = next(r for r in dino_boc.list_models(details=True) if r["name"] == "morphem-vits16")
print(json.dumps({"card": m.card, "row": row}))
"""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- three-lines -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) == 3
    first = "import numpy as np\nimg = np.load('u16.npy')\n" + block + "np.save('readme.npy', feats)\n"
    with hub_server({"CaicedoLab/MorphEm": files}) as server:
        online = run_python(first, hf_home=tmp_path / "hf", endpoint=server.url, cwd=tmp_path)
        assert online.returncode == 0, online.stderr
    # the README runs with the default precision: bf16 autocast on CPUs with native bf16, fp32 elsewhere
    got, want = np.load(tmp_path / "readme.npy"), published_features(net, images[1])
    if cpu_native_bf16():
        cos = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
        assert cos >= 0.999, cos
        np.testing.assert_allclose(got, want, atol=5e-2, rtol=0)
    else:
        np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)
    assert not any("modeling_morphem" in r for r in server.requests)
    offline = run_python(code, hf_home=tmp_path / "hf", endpoint=None, cwd=tmp_path)
    assert offline.returncode == 0, offline.stderr
    info = json.loads(offline.stdout.strip().splitlines()[-1])
    assert info["row"]["cached"] is True and info["row"]["licence"] == "MIT" and info["row"]["gated"] is False
    assert info["card"]["source"] == "hf-hub:CaicedoLab/MorphEm" and info["card"]["licence"] == "MIT"
    assert not list((tmp_path / "hf").rglob("modeling_morphem.py"))
    for name, img in (("f8", images[0]), ("f16", images[1])):
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), published_features(net, img), atol=2e-4, rtol=0)
    assert math.isfinite(float(np.load(tmp_path / "f8.npy").sum()))

