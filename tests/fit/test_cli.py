"""`flamefit fit` / `flamefit fit-texture` on real files (stand-in model; skipped without ../shared)."""

import json

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
    """One run over a good image, a corrupt file and a faceless image."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("cli")
    good = shared_assets / "images" / "ffhq_256" / "00002.png"
    corrupt = tmp / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    faceless = tmp / "faceless.png"
    Image.fromarray((np.random.default_rng(0).uniform(0, 255, (96, 96, 3))).astype(np.uint8)).save(faceless)
    out = tmp / "out"
    rc = main(["fit", str(good), str(corrupt), str(faceless), "--out", str(out), *FAST])
    return rc, out, good


def test_bad_images_reported_and_others_go_on(batch_run):
    rc, out, _ = batch_run
    assert rc != 0  # not everything succeeded
    for suffix in (".npz", ".json", "_mesh.obj", "_mesh.mtl", "_mesh.png", ".glb", "_overlay.png"):
        assert (out / f"00002{suffix}").is_file(), suffix
    assert not (out / "corrupt.npz").exists() and not (out / "faceless.npz").exists()
    assert (out / "config.yaml").is_file()
    doc = json.loads((out / "00002.json").read_text())
    assert doc["config"]["resolution"] == 128 and len(doc["flame"]["shape"]) > 0
    data = np.load(out / "00002.npz")
    assert data["lmks_dense"].shape == (478, 2) and data["lmks_68"].shape == (68, 2)
    assert data["overlay"].shape == (256, 768, 3)


def test_rerun_skips_finished_and_overwrite_refits(batch_run, capsys):
    _, out, good = batch_run
    before = (out / "00002.json").stat().st_mtime_ns
    assert main(["fit", str(good), "--out", str(out), *FAST]) == 0
    assert "1 skipped" in capsys.readouterr().err
    assert (out / "00002.json").stat().st_mtime_ns == before
    assert main(["fit", str(good), "--out", str(out), "--overwrite", *FAST]) == 0
    assert (out / "00002.json").stat().st_mtime_ns != before


def test_error_messages_name_the_files(env, tmp_path, capsys):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"nope")
    rc = main(["fit", str(corrupt), "--out", str(tmp_path / "o"), *FAST])
    err = capsys.readouterr().err
    assert rc != 0 and "broken.jpg" in err and "0 fitted" in err


def test_fit_texture_command(batch_run, capsys):
    _, out, good = batch_run
    rc = main(["fit-texture", str(out / "00002.npz"), str(good), "--out", str(out), *FAST])
    assert rc == 0
    a, b = np.load(out / "00002.npz"), np.load(out / "00002_texture.npz")
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
