"""The Gallery layout writer: per-site files and well means, against pandas computations written here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dino_boc.errors import InputError
from dino_boc.outputs.cpg import write_cpg_layout

FEATS = [f"{ch}_cls0_{d:04d}" for ch in ("DNA", "ER") for d in range(3)]


def _table(tmp_path, rng):
    rows = []
    for plate in ("P1", "P2"):
        for well in ("A01", "B02"):
            for site in (1, 2):
                for _cell in range(2):
                    rows.append({"Metadata_Source": "source_1", "Metadata_Batch": "b1", "Metadata_Plate": plate,
                                 "Metadata_Well": well, "Metadata_Site": site})
    df = pd.DataFrame(rows)
    df[FEATS] = rng.normal(size=(len(df), len(FEATS))).astype(np.float32)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    return df


@pytest.mark.parametrize("form", ["wide", "all_emb", "channel_emb"])
def test_sites_and_well_profiles(tmp_path, form):
    df = _table(tmp_path, np.random.default_rng(0))
    done = write_cpg_layout(tmp_path / "t.parquet", tmp_path / "out", model="tiny", features=form)
    assert (done.n_sites, done.n_wells) == (8, 4)
    site = pd.read_parquet(tmp_path / "out/embeddings/tiny/b1/P2/B02-1/embedding.parquet")
    want_site = df[(df.Metadata_Plate == "P2") & (df.Metadata_Well == "B02") & (df.Metadata_Site == 1)][FEATS]
    prof = pd.read_parquet(tmp_path / "out/profiles/tiny/b1/P1/P1.parquet")
    want_wells = df[df.Metadata_Plate == "P1"].groupby("Metadata_Well")[FEATS].mean()
    assert prof["Metadata_Well"].tolist() == ["A01", "B02"] and prof["Metadata_Count_Rows"].tolist() == [4, 4]
    if form == "wide":
        got_site, got_wells = site[FEATS].to_numpy(), prof[FEATS].to_numpy()
    elif form == "all_emb":
        got_site, got_wells = np.stack(site["all_emb"]), np.stack(prof["all_emb"])
    else:
        assert [c for c in site.columns if c.endswith("_emb")] == ["DNA_emb", "ER_emb"]
        got_site = np.hstack([np.stack(site["DNA_emb"]), np.stack(site["ER_emb"])])
        got_wells = np.hstack([np.stack(prof["DNA_emb"]), np.stack(prof["ER_emb"])])
    np.testing.assert_allclose(got_site, want_site.to_numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(got_wells, want_wells.to_numpy(), rtol=1e-6, atol=1e-6)
    assert site.columns[0].startswith("Metadata_")


def test_missing_gallery_columns_say_what_to_do(tmp_path):
    pd.DataFrame({"Metadata_Plate": ["P"], "DNA_cls0_0000": [1.0]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputError, match="Metadata_Batch.*load_data"):
        write_cpg_layout(tmp_path / "t.parquet", tmp_path / "out", model="m")
