"""plot.map_activity: one panel per run, a second panel pairing perturbations of two runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dino_boc.errors import InputError
from dino_boc.plot import map_activity


def activity(seed: int, n: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.uniform(1e-4, 1, n)
    return pd.DataFrame({"Metadata_pert": [f"c{i}" for i in range(n)], "mean_average_precision": rng.uniform(0, 1, n),
                         "corrected_p_value": p, "below_corrected_p": p < 0.05})


def test_two_runs_share_points_by_perturbation(tmp_path):
    a, b = activity(0), activity(1).iloc[::-1]  # row order must not matter
    fig = map_activity({"dino": a, "cellprofiler": b}, key="Metadata_pert", output=tmp_path / "map.png")
    left, right = fig.axes[:2]
    offsets = [c.get_offsets() for c in left.collections]
    np.testing.assert_allclose(offsets[0][:, 0], a.mean_average_precision)
    np.testing.assert_allclose(offsets[1][:, 1], -np.log10(b.corrected_p_value))
    pairs = right.collections[0].get_offsets()
    want = a.merge(b, on="Metadata_pert")[["mean_average_precision_x", "mean_average_precision_y"]].to_numpy()
    np.testing.assert_allclose(np.asarray(pairs), want)
    assert f"{int(a.below_corrected_p.sum())}/20 retrieved" in left.get_legend().get_texts()[0].get_text()
    assert (tmp_path / "map.png").stat().st_size > 0


def test_one_run_one_panel_and_bad_tables():
    assert len(map_activity({"x": activity(2)}, key="Metadata_pert").axes) == 1
    with pytest.raises(InputError, match="lacks columns"):
        map_activity({"x": activity(2).drop(columns="corrected_p_value")}, key="Metadata_pert")
    with pytest.raises(InputError, match="one or two"):
        map_activity({}, key="Metadata_pert")
