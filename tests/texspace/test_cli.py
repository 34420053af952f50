"""`flamefit texspace ...` smoke tests: every subcommand on a work folder of synthetic photos, exit codes, and a
built space that `flamefit fit --texture-space` accepts. Tiny sizes and iterations (CI)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flamefit.cli import main


def _model_args(p, fit):
    args = ["--flame", str(p["flame"]), "--landmarks-static", str(p["static"]), "--landmarks-dynamic",
            str(p["dynamic"]), "--no-progress"]
    for s in fit:
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def work(synthetic_photos, tiny_fit, tmp_path_factory):
    """`texspace unwrap` of two photos and the broken file: exit 7 (some items failed), the two maps written."""
    p = synthetic_photos
    root = tmp_path_factory.mktemp("texspace_cli")
    w = root / "work"
    code = main(["texspace", "unwrap", str(p["images"] / "synth_0000.png"), str(p["images"] / "synth_0001.png"),
                 str(p["images"] / "broken.png"), "--work", str(w), "--detections", str(p["detections"]),
                 "--texture-space", str(p["start"]), "--size", "64", *_model_args(p, tiny_fit)])
    return {"root": root, "work": w, "unwrap_code": code}


def test_unwrap_lists_the_bad_photo(work, capsys):
    assert work["unwrap_code"] == 7
    names = sorted(x.stem for x in (work["work"] / "iter0" / "unwrapped").glob("*.npz"))
    assert names == ["synth_0000", "synth_0001"]
    rec = json.loads((work["work"] / "iter0" / "stages" / "unwrap.json").read_text())
    assert [f["name"] for f in rec["failed"]] == ["broken"]
    build = json.loads((work["work"] / "build.json").read_text())
    assert build["config"]["size"] == 64 and "texture space" in build["layout_source"]


def test_stage_commands_then_preview(work, capsys, synthetic_photos):
    from flamefit.model.texture_space import load_texture_space

    w = str(work["work"])
    assert main(["texspace", "train-inpaint", "--work", w, "--steps", "3"]) == 0
    assert "train-inpaint (3 steps on 2 maps)" in capsys.readouterr().err
    assert main(["texspace", "inpaint", "--work", w]) == 0
    assert len(list((work["work"] / "iter0" / "completed").glob("*.npz"))) == 2
    out = work["root"] / "space.npz"
    assert main(["texspace", "pca", "--work", w, "--components", "1", "--out", str(out),
                 "--flame", str(synthetic_photos["flame"])]) == 0
    assert load_texture_space(out).n_components == 1
    # a rerun of a finished stage is skipped
    assert main(["texspace", "inpaint", "--work", w]) == 0
    assert "skipped" in capsys.readouterr().err
    png = work["root"] / "grid.png"
    assert main(["texspace", "preview", str(out), "--out", str(png), "--flame", str(synthetic_photos["flame"])]) == 0
    from PIL import Image

    img = np.asarray(Image.open(png))
    assert img.shape[1] == 3 * img.shape[0]  # one component: -2 sd | mean | +2 sd


def test_build_cli_and_fit_accepts_the_space(synthetic_photos, tiny_fit, tmp_path, capsys, shared_assets):
    p = synthetic_photos
    out = tmp_path / "space.npz"
    args = ["texspace", "build", str(p["images"] / "synth_0002.png"), str(p["images"] / "synth_0003.png"),
            str(p["images"] / "synth_0000.png"), "--out", str(out), "--components", "2", "--size", "64",
            "--detections", str(p["detections"]), "--texture-space", "none",
            *_model_args(p, tiny_fit)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "ok:" in err and out.is_file() and out.with_name("space_preview.png").is_file()
    assert "inpaint (opencv_telea)" in err and "train-inpaint" not in err  # the measured default: no network
    assert main(args) == 0  # resumed: every stage skipped
    assert err.count("skipped") == 0 and capsys.readouterr().err.count("skipped") >= 3
    photo = sorted((shared_assets / "images" / "faces_ccby").glob("*.jpg"))[0]
    code = main(["fit", str(photo), "--out", str(tmp_path / "fit"), "--texture-space", str(out), "--no-mesh",
                 *_model_args(p, tiny_fit)])
    assert code == 0, capsys.readouterr().err
    with np.load(tmp_path / "fit" / f"{photo.stem}.npz") as d:
        assert d["tex"].shape == (2,)


def test_bad_options_are_usage_errors(tmp_path, capsys):
    assert main(["texspace", "pca", "--work", str(tmp_path / "nowhere")]) == 2
    assert "not a texture-space work folder" in capsys.readouterr().err
    assert main(["texspace", "build", "x.png", "--out", str(tmp_path / "s.npz"), "--fill", "magic"]) == 2
