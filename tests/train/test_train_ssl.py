"""The DINOv2 objective composed by SSLObjective, against an independent computation from the equations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dino_boc import create_model
from dino_boc.train.ssl import HeadSpec, SSLObjective

SPEC = HeadSpec(n_prototypes=48, hidden_dim=40, bottleneck_dim=24, n_layers=3)


def _crops(k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    global_crops = torch.randn(2 * 3, k, 16, 16, generator=g)  # G=2 crops x B=3, crop-major
    local_crops = torch.randn(2 * 3, k, 8, 8, generator=g)  # L=2
    masks = torch.zeros(6, k, 4, dtype=torch.bool)
    masks[0, :, :2] = True
    masks[4, :, 1:] = True
    masks[5, :, 3] = True
    return global_crops, local_crops, masks


def _ce(t: torch.Tensor, s_logits: torch.Tensor, temp: float = 0.1) -> torch.Tensor:
    return -(t * F.log_softmax(s_logits / temp, dim=-1)).sum(-1)


def _koleo(x: torch.Tensor) -> torch.Tensor:
    z = F.normalize(x, dim=-1)
    d = torch.cdist(z, z) + torch.diag(torch.full((len(z),), 10.0))
    return -torch.log(d.min(dim=1).values + 1e-8).mean()


def _dino(t_logits, s_logits, temp, center=0.0):
    """Mean over the (teacher crop g, student crop c != g) pairs of the batch-mean cross-entropy."""
    t = F.softmax((t_logits - center) / temp, dim=-1)  # (G, B', P)
    pairs = [_ce(t[g], s_logits[c]).mean() for g in range(t.shape[0]) for c in range(s_logits.shape[0]) if c != g]
    return torch.stack(pairs).mean()


@pytest.mark.parametrize("arch", ["boc", "ha"])
def test_loss_terms_match_the_equations(arch):
    k = 1 if arch == "boc" else 2
    # no LayerScale: distinct CLS tokens, so KoLeo distances are far from its epsilon
    model = create_model(arch, embed_dim=32, depth=2, num_heads=2, patch_size=8, img_size=16, init_values=None, seed=0)
    torch.manual_seed(1)
    obj = SSLObjective(model, dino_head=SPEC, koleo_weight=0.1, channel_weight=0.5, channel_koleo_weight=0.2)
    with torch.no_grad():  # make the teacher differ from the student
        for p in obj.teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    obj.train()
    gc, lc, masks = _crops(k)
    terms = obj.losses(gc, lc, masks=masks, channel_ids=None, teacher_temp=0.05, n_global=2)

    s_net, t_net = obj.student, obj.teacher
    with torch.no_grad():
        t_g = t_net.backbone.forward_tokens(gc)
        s_g = s_net.backbone.forward_tokens(gc, masks=masks)
        s_l = s_net.backbone.forward_tokens(lc)
        pick = (lambda o: o.cls[:, -1, 0]) if arch == "boc" else (lambda o: o.global_cls[:, -1])
        t_logits = t_net.dino_head(pick(t_g)).reshape(2, 3, -1)
        s_logits = s_net.dino_head(torch.cat([pick(s_g), pick(s_l)])).reshape(4, 3, -1)
        dino = _dino(t_logits, s_logits, 0.05)
        koleo = _koleo(pick(s_g)[:3]) + _koleo(pick(s_g)[3:])
        # iBOT: teacher sees the unmasked crops; each image weighs 1 whatever its number of masked patches
        flat = masks.flatten(1)
        t_p = F.softmax(t_net.dino_head(t_g.patch.flatten(1, 2)[flat]) / 0.05, dim=-1)
        s_p = s_net.dino_head(s_g.patch.flatten(1, 2)[flat])
        per_image = flat.sum(1).clamp(min=1).float()
        weights = (1.0 / per_image).unsqueeze(1).expand_as(flat)[flat]
        ibot = (_ce(t_p, s_p) * weights).sum() / flat.shape[0]
        expected_total = dino + 0.1 * koleo + ibot
        assert terms["dino"].item() == pytest.approx(dino.item(), rel=1e-5)
        assert terms["koleo"].item() == pytest.approx(koleo.item(), rel=1e-5)
        assert terms["ibot"].item() == pytest.approx(ibot.item(), rel=1e-5)
        if arch == "ha":  # channel CLS: every (image, channel) a sample, separate centre
            t_ch = t_net.dino_head(t_g.cls[:, -1].flatten(0, 1)).reshape(2, 3 * k, -1)
            s_ch = torch.cat([s_g.cls[:, -1], s_l.cls[:, -1]]).flatten(0, 1)
            s_ch = s_net.dino_head(s_ch).reshape(4, 3 * k, -1)
            dino_ch = _dino(t_ch, s_ch, 0.05)
            koleo_ch = _koleo(s_g.cls[:3, -1].flatten(0, 1)) + _koleo(s_g.cls[3:, -1].flatten(0, 1))
            assert terms["dino_channel"].item() == pytest.approx(dino_ch.item(), rel=1e-5)
            assert terms["koleo_channel"].item() == pytest.approx(koleo_ch.item(), rel=1e-5)
            expected_total = expected_total + 0.5 * dino_ch + 0.2 * koleo_ch
        else:
            assert "dino_channel" not in terms
        assert terms["total"].item() == pytest.approx(expected_total.item(), rel=1e-5)
    # the centres moved towards the teacher's batch mean, after being used
    torch.testing.assert_close(obj.dino_loss.centering.center, 0.1 * t_logits.reshape(6, -1).mean(0, keepdim=True))
    terms["total"].backward()
    assert obj.student.backbone.backbone.mask_token.grad is not None
    assert all(p.grad is None for p in obj.teacher.parameters())


def test_channel_vit_uses_the_global_cls_and_channel_ids():
    model = create_model("channel_vit", embed_dim=32, depth=2, num_heads=2, patch_size=8, img_size=16,
                         max_channels=4, seed=0)
    obj = SSLObjective(model, dino_head=SPEC)
    gc, lc, masks = _crops(3)
    ids = torch.tensor([[3, 0, 1]] * 3)
    terms = obj.losses(gc, lc, masks=masks, channel_ids=ids, teacher_temp=0.04, n_global=2)
    assert set(terms) == {"dino", "koleo", "ibot", "total"} and math.isfinite(terms["total"].item())
    other = obj.losses(gc, lc, masks=masks, channel_ids=torch.tensor([[0, 1, 2]] * 3), teacher_temp=0.04, n_global=2)
    assert other["koleo"].item() != pytest.approx(terms["koleo"].item())  # the ids reach the model


def test_update_teacher_is_an_ema():
    model = create_model("boc", embed_dim=32, depth=1, num_heads=2, patch_size=8, img_size=16, seed=0)
    obj = SSLObjective(model, dino_head=SPEC)
    with torch.no_grad():
        for p in obj.student.parameters():
            p.add_(1.0)
    t0 = {k: v.clone() for k, v in obj.teacher.state_dict().items()}
    obj.update_teacher(0.9)
    s = obj.student.state_dict()
    for k, v in obj.teacher.state_dict().items():
        torch.testing.assert_close(v, 0.9 * t0[k] + 0.1 * s[k] if v.is_floating_point() and k in dict(
            obj.teacher.named_parameters()) else s[k])
