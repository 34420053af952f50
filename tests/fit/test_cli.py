"""`flamefit fit` / `flamefit fit-texture` on real files (stand-in model; skipped without ../shared)."""

import json
from pathlib import Path

import numpy as np
import pytest

from flamefit.cli import main

FAST = ["--set", "resolution=128", "--set", "rigid.iters=5", "--set", "landmarks.iters=15",
        "--set", "photometric.iters=8", "--set", "appearance.iters=3", "--set", "offset.iters=4",
        "--set", "texture_only.iters=4",
        "--set", "texture.fit_resolution=64", "--no-progress"]


@pytest.fixture(scope="module")
def env(standin_env):
    mp = pytest.MonkeyPatch()
    for k, v in standin_env.items():
        mp.setenv(k, v)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def batch_run(env, shared_assets, tmp_path_factory):
    """One run over two good images with the same file name in two folders, a corrupt file and a faceless image."""
    import shutil

    from PIL import Image

    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    good = Path(shutil.copy(shared_assets / "images" / "ffhq_256" / "00002.png", tmp / "a" / "face.png"))
    other = shutil.copy(shared_assets / "images" / "ffhq_256" / "00003.png", tmp / "b" / "face.png")
    corrupt = tmp / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    faceless = tmp / "faceless.png"
    Image.fromarray((np.random.default_rng(0).uniform(0, 255, (96, 96, 3))).astype(np.uint8)).save(faceless)
    out = tmp / "out"
    rc = main(["fit", str(good), str(corrupt), str(faceless), str(other), "--out", str(out), *FAST])
    return rc, out, good


def test_bad_images_reported_and_others_go_on(batch_run):
    from flamefit.errors import ItemsFailed

    rc, out, _ = batch_run
    assert rc == ItemsFailed.exit_code  # one code for "some items failed"
    for suffix in (".npz", ".json", "_mesh.obj", "_mesh.mtl", "_mesh.png", ".glb", "_overlay.png", ".done.json"):
        assert (out / f"a_face{suffix}").is_file(), suffix
    assert not (out / "corrupt.npz").exists() and not (out / "faceless.npz").exists()
    assert (out / "config.yaml").is_file()
    doc = json.loads((out / "a_face.json").read_text())
    assert doc["config"]["resolution"] == 128 and len(doc["flame"]["shape"]) > 0
    data = np.load(out / "a_face.npz")
    assert data["lmks_dense"].shape == (478, 2) and data["lmks_68"].shape == (68, 2)
    assert data["overlay"].shape == (256, 768, 3)
    assert not [p for p in out.iterdir() if p.name.startswith((".staging", ".tmp"))]


def test_same_file_name_in_two_folders_gives_two_results(batch_run):
    """a/face.png and b/face.png must not overwrite each other."""
    _, out, _ = batch_run
    a, b = np.load(out / "a_face.npz"), np.load(out / "b_face.npz")
    assert not np.allclose(a["lmks_68"], b["lmks_68"])  # two different photos, two different results
    assert json.loads((out / "a_face.done.json").read_text())["source"].endswith("a/face.png")
    assert json.loads((out / "b_face.done.json").read_text())["source"].endswith("b/face.png")


def test_rerun_skips_finished_and_overwrite_refits(batch_run, capsys):
    _, out, good = batch_run
    before = (out / "a_face.json").stat().st_mtime_ns
    # same inputs (the names depend on them), so the finished ones are found again
    assert main(["fit", str(good), str(good.parent.parent / "b" / "face.png"), "--out", str(out), *FAST]) == 0
    assert "2 skipped" in capsys.readouterr().err
    assert (out / "a_face.json").stat().st_mtime_ns == before
    assert main(["fit", str(good), str(good.parent.parent / "b" / "face.png"), "--out", str(out), "--overwrite",
                 *FAST]) == 0
    assert (out / "a_face.json").stat().st_mtime_ns != before


def test_a_damaged_result_is_refit_not_skipped(env, shared_assets, tmp_path, capsys):
    good = shared_assets / "images" / "ffhq_256" / "00004.png"
    out = tmp_path / "out"
    assert main(["fit", str(good), "--out", str(out), "--no-mesh", "--no-overlay", *FAST]) == 0
    npz = out / "00004.npz"
    npz.write_bytes(npz.read_bytes()[:-100])  # e.g. a run killed while copying the folder
    capsys.readouterr()
    assert main(["fit", str(good), "--out", str(out), "--no-mesh", "--no-overlay", *FAST]) == 0
    assert "1 fitted, 0 skipped" in capsys.readouterr().err
    assert len(np.load(npz)["vertices"]) > 0


def test_error_messages_name_the_files(env, tmp_path, capsys):
    """One line per failed item on stderr, even with the progress display on and a path wider than 80 columns."""
    deep = tmp_path / ("a_rather_long_folder_name_" * 4)
    deep.mkdir()
    corrupt = deep / "broken.jpg"
    corrupt.write_bytes(b"nope")
    rc = main(["fit", str(corrupt), "--out", str(tmp_path / "o"), *FAST[:-1], "--progress"])
    captured = capsys.readouterr()
    assert rc != 0 and "0 fitted" in captured.err and "broken.jpg" not in captured.out
    lines = [ln for ln in captured.err.splitlines() if "broken.jpg" in ln and ln.startswith("error:")]
    assert len(lines) >= 1 and str(corrupt) in lines[0]  # the whole path on one line


def test_fit_texture_command(batch_run, capsys):
    _, out, good = batch_run
    rc = main(["fit-texture", str(out / "a_face.npz"), str(good), "--out", str(out), *FAST])
    assert rc == 0
    a, b = np.load(out / "a_face.npz"), np.load(out / "face_texture.npz")
    assert np.allclose(a["vertices"], b["vertices"], atol=1e-6)


def test_bad_config_is_a_config_error(env, tmp_path, shared_assets):
    good = shared_assets / "images" / "ffhq_256" / "00002.png"
    rc = main(["fit", str(good), "--out", str(tmp_path), "--set", "weights.nope=1"])
    assert rc == 2  # ConfigError


def test_missing_model_is_a_clear_error(monkeypatch, tmp_path, capsys):
    """No ../shared needed: a missing model file stops before any image work, with the path in the message."""
    monkeypatch.setenv("FLAMEFIT_FLAME_MODEL", str(tmp_path / "nope.pkl"))
    img = tmp_path / "x.png"
    img.write_bytes(b"")
    rc = main(["fit", str(img), "--out", str(tmp_path / "out")])
    assert rc == 3  # ModelFileError
    assert "nope.pkl" in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--flame", "--texture-space", "--config", "--set", "--overwrite", "--out"):
        assert opt in out
    assert main(["fit-texture", "--help"]) == 0


def test_one_of_several_faces_is_fitted_and_said_so(env, shared_assets, tmp_path, capsys):
    """Two faces in one photo: the largest is fitted, the ok line and the json say how many were found and which."""
    from PIL import Image

    from flamefit.observe.image import load_image

    ffhq = shared_assets / "images" / "ffhq_256"
    canvas = np.full((300, 640, 3), 0.45, np.float32)
    canvas[20:276, 360:616] = load_image(ffhq / "00003.png")  # the larger face, on the right
    small = np.asarray(Image.fromarray((load_image(ffhq / "00007.png") * 255).astype(np.uint8)).resize((160, 160)))
    canvas[70:230, 40:200] = small / 255.0
    photo = tmp_path / "two.png"
    Image.fromarray((canvas * 255).astype(np.uint8)).save(photo)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["fit", str(photo), "--out", str(out), "--no-mesh", "--no-overlay", *FAST]) == 0
    assert "2 faces found, fitted the largest (#1" in capsys.readouterr().err
    doc = json.loads((out / "two.json").read_text())
    assert doc["detected_faces"] == {"found": 2, "fitted_index": 1}
