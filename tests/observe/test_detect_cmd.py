"""`flamefit detect`: files per image, JSON on stdout, bad images reported while the others go on."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from flamefit.cli import main


@pytest.fixture()
def images(tmp_path, ffhq_dir, detector):  # detector: MediaPipe must be there
    good1 = shutil.copy(ffhq_dir / "00000.png", tmp_path / "a.png")
    good2 = shutil.copy(ffhq_dir / "00001.png", tmp_path / "b.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    return [str(good1), str(bad), str(good2)]


def test_detect_writes_files_and_reports_failures(images, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["detect", *images, "--out", str(out)])
    captured = capsys.readouterr()
    assert code != 0  # one image failed
    assert "bad.png" in captured.err
    for stem in ("a", "b"):
        data = np.load(out / f"{stem}.npz")
        assert data["lmks_dense"].shape == (478, 2) and data["lmks_68"].shape == (68, 2)
        assert data["mask"].shape == (256, 256)
        assert (out / f"{stem}_overlay.png").is_file()
    assert not (out / "bad.npz").exists()


def test_detect_json(images, capsys):
    code = main(["detect", images[0], images[2], "--json", "--no-mask"])
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)  # exactly one JSON object on stdout
    assert report["n_ok"] == 2 and report["n_failed"] == 0
    first = report["images"][0]
    assert first["ok"] and len(first["lmks_dense"]) == 478 and len(first["lmks_68"]) == 68
    assert 0 <= first["lmks_dense"][0][0] <= 256


def test_detect_json_with_a_failure(images, capsys):
    from flamefit.errors import ItemsFailed

    code = main(["detect", *images, "--json", "--no-mask"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == ItemsFailed.exit_code  # one code for "some items failed", as in `flamefit fit`
    assert len([ln for ln in captured.err.splitlines() if ln.startswith("error:") and "bad.png" in ln]) >= 1
    assert [e["ok"] for e in report["images"]] == [True, False, True]
    assert report["images"][1]["error_type"] == "InputImageError"


def test_detect_folder_and_same_names(tmp_path, ffhq_dir, detector):
    """A folder expands to its images; equal file names in two folders give two outputs; each set is finished."""
    from flamefit.io.outputs import is_finished

    for sub, src in (("x", "00003.png"), ("y", "00004.png")):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy(ffhq_dir / src, tmp_path / "in" / sub / "face.png")
    out = tmp_path / "out"
    assert main(["detect", str(tmp_path / "in" / "x"), str(tmp_path / "in" / "y"), "--out", str(out),
                 "--no-overlay"]) == 0
    for name in ("x_face", "y_face"):
        assert is_finished(out, name, ["npz"], verify_hashes=True)
    assert not np.allclose(np.load(out / "x_face.npz")["lmks_68"], np.load(out / "y_face.npz")["lmks_68"])
    # --shard I/N: every N-th image from I, with the names of the whole list
    out2 = tmp_path / "out2"
    args = ["detect", str(tmp_path / "in" / "x"), str(tmp_path / "in" / "y"), "--out", str(out2), "--no-overlay"]
    assert main([*args, "--shard", "1/2"]) == 0
    assert sorted(p.name for p in out2.glob("*.npz")) == ["y_face.npz"]
    assert main([*args, "--shard", "2/2"]) == 2  # ConfigError: no such shard


def test_detect_needs_an_output(images, capsys):
    assert main(["detect", images[0]]) == 2
    assert "--out" in capsys.readouterr().err


def test_detect_blendshapes_from_the_resolved_task_file(images, tmp_path, capsys, monkeypatch):
    """A plain install finds face_landmarker.task (flamefit ships it); the parent resolves it once and the workers
    write the 52 scores and the transform. --face-landmarker off / wrong paths: absent with the reason, or an error."""
    out = tmp_path / "out"
    assert main(["detect", images[0], "--out", str(out), "--no-mask"]) == 0
    data = np.load(out / "a.npz")
    assert data["blendshape_scores"].shape == (52,) and np.all((data["blendshape_scores"] >= 0)
                                                              & (data["blendshape_scores"] <= 1))
    assert data["face_transform"].shape == (4, 4) and np.isfinite(data["face_transform"]).all()

    code = main(["detect", images[0], "--out", str(out), "--face-landmarker", str(tmp_path / "nope.task")])
    assert code == 3 and "nope.task" in capsys.readouterr().err  # an explicit wrong path is an error

    monkeypatch.setenv("FLAMEFIT_NO_SHIPPED_ASSETS", "1")
    from flamefit import assets

    monkeypatch.setattr(assets, "bundled_files", lambda name: [])
    capsys.readouterr()
    assert main(["detect", images[0], "--json", "--no-mask"]) == 0
    entry = json.loads(capsys.readouterr().out)["images"][0]
    assert "face_landmarker.task" in entry["missing"]["blendshape_scores"]
