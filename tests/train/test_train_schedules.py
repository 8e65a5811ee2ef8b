"""Schedules at chosen iterations, computed from the cosine / linear formulas in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dino_boc.errors import ConfigError
from dino_boc.train.schedules import ScheduleConfig, build_schedules, cosine_schedule, scaled_lr


def test_cosine_schedule_pieces():
    s = cosine_schedule(1.0, 0.1, 30, warmup_iters=10, start_warmup_value=0.5, freeze_iters=4)
    assert s.shape == (30,)
    assert (s[:4] == 0).all()
    np.testing.assert_allclose(s[4:14], 0.5 + 0.5 * np.arange(10) / 9)  # linear, inclusive of both ends
    assert s[13] == pytest.approx(1.0)  # end of the warm-up
    n = 16
    assert s[14] == pytest.approx(1.0)  # cosine starts at the base value
    assert s[14 + n // 2] == pytest.approx(0.55)  # cosine midpoint = (base + final) / 2
    assert s[-1] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * (n - 1) / n)))
    assert (np.diff(s[14:]) < 0).all()


def test_cosine_schedule_rejects_a_warmup_longer_than_training():
    with pytest.raises(ConfigError, match="warm-up"):
        cosine_schedule(1.0, 0.0, 10, warmup_iters=8, freeze_iters=3)


def test_scaled_lr():
    assert scaled_lr(5e-4, 1024) == pytest.approx(5e-4)
    assert scaled_lr(5e-4, 256) == pytest.approx(2.5e-4)
    assert scaled_lr(5e-4, 256, "none") == pytest.approx(5e-4)
    with pytest.raises(ConfigError, match="sqrt_wrt_1024"):
        scaled_lr(5e-4, 256, "linear")  # type: ignore[arg-type]


def test_paper_schedules_at_chosen_iterations():
    ipe, epochs = 10, 100  # 1000 iterations, 20 warm-up epochs = 200 iterations
    s = build_schedules(ScheduleConfig(epochs=epochs, iters_per_epoch=ipe), global_batch_size=4096)
    total, warm = 1000, 200
    assert len(s) == total and all(len(getattr(s, k)) == total for k in ("wd", "momentum", "teacher_temp"))
    peak = 5e-4 * 2.0  # sqrt(4096 / 1024)
    # lr: 0 -> peak linearly, then cosine to 1e-6
    assert s.lr[0] == 0.0
    assert s.lr[warm - 1] == pytest.approx(peak)
    assert s.lr[warm // 2] == pytest.approx(peak * (warm // 2) / (warm - 1))
    n_cos = total - warm
    assert s.lr[warm + n_cos // 2] == pytest.approx((peak + 1e-6) / 2)
    assert s.lr[-1] == pytest.approx(1e-6 + 0.5 * (peak - 1e-6) * (1 + math.cos(math.pi * (n_cos - 1) / n_cos)))
    # weight decay 0.04 -> 0.2 and momentum 0.996 -> 1 (cosine over the whole run)
    assert s.wd[0] == pytest.approx(0.04) and s.wd[total // 2] == pytest.approx(0.12)
    assert s.wd[-1] == pytest.approx(0.2, abs=1e-5)
    assert s.momentum[0] == pytest.approx(0.996) and s.momentum[total // 2] == pytest.approx(0.998)
    assert s.momentum[-1] == pytest.approx(1.0, abs=1e-6)
    # teacher temperature 0.04 -> 0.07 over 20 epochs, then constant
    assert s.teacher_temp[0] == pytest.approx(0.04) and s.teacher_temp[warm - 1] == pytest.approx(0.07)
    assert s.teacher_temp[(warm - 1) // 2] == pytest.approx(0.04 + 0.03 * ((warm - 1) // 2) / (warm - 1))
    assert (s.teacher_temp[warm:] == 0.07).all()
    # last layer frozen during the first epoch, then the lr
    assert (s.last_layer_lr[:ipe] == 0).all()
    np.testing.assert_array_equal(s.last_layer_lr[ipe:], s.lr[ipe:])
    # at(): values by name, clamped past the end
    assert s.at(warm - 1)["lr"] == pytest.approx(peak)
    assert s.at(5 * total) == s.at(total - 1)


def test_short_run_truncates_the_temperature_warmup_but_not_the_lr_warmup():
    s = build_schedules(
        ScheduleConfig(epochs=4, iters_per_epoch=5, warmup_epochs=1, warmup_teacher_temp_epochs=8),
        global_batch_size=64,
    )
    assert len(s) == 20
    np.testing.assert_allclose(s.teacher_temp, np.linspace(0.04, 0.07, 40)[:20])
    with pytest.raises(ConfigError, match="warm-up"):
        build_schedules(ScheduleConfig(epochs=4, iters_per_epoch=5), global_batch_size=64)  # 20 warm-up epochs
    with pytest.raises(ConfigError, match="at least 1 iteration"):
        build_schedules(ScheduleConfig(epochs=0, iters_per_epoch=5, warmup_epochs=0), global_batch_size=64)
