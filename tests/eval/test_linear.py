import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from dino_boc.errors import InputError
from dino_boc.eval import linear_probe
from dino_boc.eval.linear import DEFAULT_LRS, fit_linear_sweep


def separable(n, rng, w_true, flip=False):
    x = rng.normal(size=(n, w_true.shape[0])) * 3.0 + 1.0  # not standardised: the probe must do it
    y = np.argmax(x @ w_true, axis=1)
    return x, (w_true.shape[1] - 1 - y if flip else y)


def test_default_sweep_is_14_log_spaced_rates_in_1e4_to_1():
    assert len(DEFAULT_LRS) == 14
    assert DEFAULT_LRS[0] == pytest.approx(1e-4) and DEFAULT_LRS[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(np.log10(DEFAULT_LRS)), 4 / 13)


def test_recovers_a_linearly_separable_labelling():
    rng = np.random.default_rng(0)
    w_true = rng.normal(size=(12, 3))
    (xtr, ytr), (xv, yv), (xte, yte) = (separable(n, rng, w_true) for n in (400, 200, 200))
    labels = np.array(["a", "b", "c"])
    res = linear_probe(xtr, labels[ytr], xv, labels[yv], xte, labels[yte], weight_decays=(0.0, 1e-4),
                       epochs=15, batch_size=100, device="cpu")
    assert res.test_macro_f1 > 0.95 and res.test_accuracy > 0.95
    assert len(res.sweep) == 28 and {"lr", "weight_decay", "val_macro_f1"} <= set(res.sweep.columns)
    # reported test scores are the chosen member's, recomputed independently
    pred = res.model.predict(xte, res.member)
    assert res.test_macro_f1 == pytest.approx(f1_score(labels[yte], pred, average="macro"))


def test_learning_rate_is_chosen_on_validation_never_on_test():
    rng = np.random.default_rng(1)
    w_true = rng.normal(size=(8, 2))
    xtr, ytr = separable(300, rng, w_true)
    xv, yv = separable(150, rng, w_true)
    xte, yte = separable(150, rng, w_true, flip=True)  # test labels disagree with validation
    lrs = (1e-4, 1e-3, 1e-1)
    res = linear_probe(xtr, ytr, xv, yv, xte, yte, lrs=lrs, weight_decays=(0.0,), epochs=3, batch_size=32,
                       device="cpu")
    assert not [c for c in res.sweep.columns if "test" in c]
    val_scores = [f1_score(yv, res.model.predict(xv, m), average="macro") for m in range(len(lrs))]
    test_scores = [f1_score(yte, res.model.predict(xte, m), average="macro") for m in range(len(lrs))]
    assert np.argmax(val_scores) != np.argmax(test_scores)  # the construction makes them disagree
    assert res.member == int(np.argmax(val_scores)) and res.lr == pytest.approx(lrs[res.member])
    assert res.val_macro_f1 == pytest.approx(max(val_scores))
    assert res.test_macro_f1 == pytest.approx(test_scores[res.member]) and res.test_macro_f1 < max(test_scores)


def test_batched_sweep_equals_torch_adamw_per_member():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5)) * 2 + 3
    y = rng.integers(0, 3, size=40)
    lrs, wds, epochs = (1e-3, 3e-2), (0.0, 0.5), 6
    sweep = fit_linear_sweep(x, y, lrs=lrs, weight_decays=wds, epochs=epochs, batch_size=64, device="cpu")
    init = fit_linear_sweep(x, y, lrs=lrs, weight_decays=wds, epochs=0, batch_size=64, device="cpu")
    z = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
    yt = torch.tensor(y)
    for s, (lr, wd) in enumerate([(a, b) for a in lrs for b in wds]):
        w = init.weight[s].clone().requires_grad_(True)
        b = torch.zeros(3, requires_grad=True)
        opt = torch.optim.AdamW([{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}],
                                lr=lr, betas=(0.9, 0.999), eps=1e-8)
        for t in range(epochs):  # one full batch per epoch
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t / epochs))
            opt.zero_grad()
            F.cross_entropy(z @ w + b, yt).backward()
            opt.step()
        torch.testing.assert_close(sweep.weight[s], w.detach(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(sweep.bias[s], b.detach(), atol=1e-5, rtol=1e-4)


def test_members_do_not_interact():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(50, 4)), rng.integers(0, 2, size=50)
    both = fit_linear_sweep(x, y, lrs=(1e-2, 1.0), weight_decays=(0.0,), epochs=4, batch_size=16, device="cpu")
    one = fit_linear_sweep(x, y, lrs=(1e-2,), weight_decays=(0.0,), epochs=4, batch_size=16, device="cpu")
    torch.testing.assert_close(both.weight[0], one.weight[0])


def test_bad_inputs():
    x = np.zeros((10, 3))
    with pytest.raises(InputError, match="at least 2"):
        linear_probe(x, np.zeros(10), x, np.zeros(10), x, np.zeros(10), device="cpu")
    with pytest.raises(InputError, match="val_x"):
        linear_probe(x, np.arange(10) % 2, np.zeros((4, 2)), np.zeros(4), x, np.zeros(10), epochs=1, device="cpu")
