"""dino-boc plot embedding / patches / channels write their files."""

from __future__ import annotations

from dino_boc.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_embedding_writes_the_figure(feature_table, tmp_path, capsys):
    feature_table.to_parquet(tmp_path / "features.parquet")
    out = tmp_path / "pca.png"
    rc = main(["plot", "embedding", str(tmp_path / "features.parquet"), "--color", "Metadata_group",
               "--method", "pca", "--channels", "DNA", "Mito", "-o", str(out)])
    assert rc == 0 and out.read_bytes()[:8] == PNG
    assert str(out) in capsys.readouterr().out


def test_plot_embedding_bad_column_is_an_error_message(feature_table, tmp_path, capsys):
    feature_table.to_parquet(tmp_path / "f.parquet")
    rc = main(["plot", "embedding", str(tmp_path / "f.parquet"), "--color", "Metadata_nope", "--method", "pca",
               "-o", str(tmp_path / "x.png")])
    assert rc == 1 and "Metadata_nope" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_plot_patches_and_channels_write_the_figures(tiny_model, image, tmp_path):
    import tifffile

    model_dir = tiny_model.save_pretrained(tmp_path / "tiny")
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, image, imagej=True, metadata={"axes": "CYX", "Labels": ["DNA", "ER", "Mito"]})
    rc = main(["plot", "patches", str(path), "--model", str(model_dir), "--channels", "Mito", "0",
               "-o", str(tmp_path / "maps.png")])
    assert rc == 0 and (tmp_path / "maps.png").read_bytes()[:8] == PNG
    rc = main(["plot", "channels", str(path), "-o", str(tmp_path / "montage.svg")])
    assert rc == 0 and b"<svg" in (tmp_path / "montage.svg").read_bytes()[:1000]


def test_channels_are_comma_separated_as_in_embed(feature_table, tmp_path):
    from dino_boc.cli.plot import _channels

    assert _channels(["DNA,Mito"]) == _channels(["DNA", "Mito"]) == _channels(["DNA,", "Mito"]) == ["DNA", "Mito"]
    assert _channels(["2,0"]) == [2, 0]
    feature_table.to_parquet(tmp_path / "features.parquet")
    rc = main(["plot", "embedding", str(tmp_path / "features.parquet"), "--method", "pca", "--channels", "DNA,Mito",
               "-o", str(tmp_path / "pca.png")])
    assert rc == 0 and (tmp_path / "pca.png").read_bytes()[:8] == PNG
