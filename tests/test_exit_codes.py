"""One test per exit code of the README's table ("Errors and exit codes"), through ``flamefit.cli.main`` on real
files (the stand-in model of ../shared/assets; skipped without it), for ``fit``, ``track`` and ``texspace build``.

Input paths and output paths are checked before any model is loaded: those tests make loading a model an error
(``_no_model_loading``), so they also prove the order and stay fast. The content errors (an unreadable image, no
face) need the models; they run with small iteration counts and fail before any fitting."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from flamefit import errors
from flamefit.cli import main

FAST = ["--set", "resolution=128", "--set", "rigid.iters=2", "--set", "landmarks.iters=2", "--set",
        "photometric.iters=1", "--set", "appearance.iters=1", "--set", "offset.iters=1", "--set",
        "texture_only.iters=1", "--set", "texture.fit_resolution=64", "--no-progress", "--no-mesh", "--no-overlay"]
TRACK_FAST = ["--set", "rigid.iters=2", "--set", "landmarks.iters=2", "--set", "n_shape=20", "--set", "n_expr=10",
              "--identity-frames", "2", "--no-progress", "--no-blendshapes", "--no-overlay", "--no-mesh",
              "--identity-landmarks-only"]
TEX_FAST = ["--no-progress", "--size", "32", "--set", "resolution=96", "--set", "rigid.iters=2", "--set",
            "landmarks.iters=2", "--set", "photometric.iters=1", "--set", "appearance.iters=1", "--set",
            "offset.iters=1"]


@pytest.fixture
def env(shared_assets, monkeypatch):
    monkeypatch.setenv("FLAMEFIT_FLAME_MODEL", str(shared_assets / "flame_standin" / "standin_flame2023.pkl"))
    monkeypatch.setenv("FLAMEFIT_TEXTURE_SPACE", str(shared_assets / "flame_standin" / "standin_texture.npz"))
    monkeypatch.setenv("FLAMEFIT_LANDMARKS_STATIC",
                       str(shared_assets / "flame_landmarks" / "flame_static_embedding.pkl"))
    monkeypatch.setenv("FLAMEFIT_LANDMARKS_DYNAMIC",
                       str(shared_assets / "flame_landmarks" / "flame_dynamic_embedding.npy"))


@pytest.fixture
def face(shared_assets, tmp_path) -> Path:
    return Path(shutil.copy(shared_assets / "images" / "ffhq_256" / "00002.png", tmp_path / "face.png"))


@pytest.fixture
def faceless(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "grey.png"
    Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(path)
    return path


@pytest.fixture
def garbage(tmp_path) -> Path:
    path = tmp_path / "garbage.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return path


@pytest.fixture
def no_model_loading(monkeypatch):
    """Resolving the model files (the step before any model loads) fails the test."""
    import flamefit.run

    def boom(*_a, **_k):
        raise AssertionError("models were resolved/loaded before the input/output check")

    monkeypatch.setattr(flamefit.run, "resolve_assets", boom)


@pytest.fixture
def blocked_out(tmp_path) -> Path:
    """An output path below a regular FILE: cannot be created, even by root."""
    (tmp_path / "afile").write_text("not a folder")
    return tmp_path / "afile" / "sub"


def _run(capsys, args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if code and code != errors.EXIT_INTERRUPTED:  # every error is an "error: ..." line
        assert lines, err
    return code, err


def _video(path: Path, n: int = 6, size: int = 128) -> Path:
    from flamefit.observe.video import VideoWriter

    with VideoWriter(path, fps=25.0) as w:
        for _ in range(n):
            w.write(np.full((size, size, 3), 128, np.uint8))
    return path


# ---- 0 ------------------------------------------------------------------------------------------------------------

def test_0_success(env, capsys, face, tmp_path):
    code, err = _run(capsys, ["fit", face, "--out", tmp_path / "out", *FAST])
    assert code == errors.EXIT_OK == 0, err
    assert (tmp_path / "out" / "face.done.json").is_file()


# ---- 1, 6, 70, 130: mapped by class, the same in every command ----------------------------------------------------

@pytest.mark.parametrize(("exc", "code"), [
    (errors.FlamefitError("something a user can fix"), 1),
    (errors.NotYetImplemented("not in this version"), 6),
    (RuntimeError("internal"), 70),
    (KeyboardInterrupt(), 130),
])
@pytest.mark.parametrize("command", ["fit", "track", "texspace"])
def test_1_6_70_130_by_class(env, capsys, monkeypatch, face, tmp_path, exc, code, command):
    import flamefit.io.outputs

    def raise_it(*_a, **_k):
        raise exc

    monkeypatch.setattr(flamefit.io.outputs, "check_output_path", raise_it)
    video = tmp_path / "v.mp4"
    if command == "track":
        _video(video)
    args = {"fit": ["fit", face, "--out", tmp_path / "o", *FAST],
            "track": ["track", video, "--out", tmp_path / "o", *TRACK_FAST],
            "texspace": ["texspace", "build", face, "--out", tmp_path / "s.npz", *TEX_FAST]}[command]
    got, err = _run(capsys, args)
    assert got == code, err


# ---- 2 ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["fit", "track", "texspace"])
def test_2_bad_configuration(env, capsys, no_model_loading, face, tmp_path, command):
    video = _video(tmp_path / "v.mp4") if command == "track" else None
    args = {"fit": ["fit", face, "--out", tmp_path / "o"],
            "track": ["track", video, "--out", tmp_path / "o"],
            "texspace": ["texspace", "build", face, "--out", tmp_path / "s.npz"]}[command]
    code, err = _run(capsys, [*args, "--set", "weights.nope=1"])
    assert code == errors.EXIT_USAGE == 2, err


@pytest.mark.parametrize("start,end,msg", [("1.0", None, "past the end"), ("0.2", "0.1", "not after --start")])
def test_2_track_selection_outside_the_video(env, capsys, no_model_loading, tmp_path, start, end, msg):
    """A start at or past the video's end (6 frames: 0.24 s) is its own error, before the models load, not
    "no face was found"."""
    video = _video(tmp_path / "v.mp4")
    args = ["track", video, "--out", tmp_path / "o", "--start", start] + (["--end", end] if end else [])
    code, err = _run(capsys, args)
    assert code == errors.EXIT_USAGE == 2, err
    assert msg in err and "no face" not in err


# ---- 3 ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["fit", "track", "texspace"])
def test_3_missing_model_file(env, capsys, monkeypatch, face, tmp_path, command):
    monkeypatch.setenv("FLAMEFIT_FLAME_MODEL", str(tmp_path / "nope.pkl"))
    video = _video(tmp_path / "v.mp4") if command == "track" else None
    args = {"fit": ["fit", face, "--out", tmp_path / "o", *FAST],
            "track": ["track", video, "--out", tmp_path / "o", *TRACK_FAST],
            "texspace": ["texspace", "build", face, "--out", tmp_path / "s.npz", *TEX_FAST]}[command]
    code, err = _run(capsys, args)
    assert code == errors.EXIT_MODEL_FILE == 3, err
    assert "nope.pkl" in err


# ---- 4 ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["fit", "track", "texspace", "detect"])
def test_4_missing_input_before_the_models(env, capsys, no_model_loading, face, tmp_path, command):
    missing = tmp_path / "nope.mp4" if command == "track" else tmp_path / "nope.png"
    args = {"fit": ["fit", missing, "--out", tmp_path / "o"],
            "track": ["track", missing, "--out", tmp_path / "o"],
            "texspace": ["texspace", "build", missing, "--out", tmp_path / "s.npz"],
            "detect": ["detect", missing, "--out", tmp_path / "o"]}[command]
    code, err = _run(capsys, args)
    assert code == errors.EXIT_INPUT == 4, err
    assert str(missing) in err and "does not exist" in err
    if command != "track":  # one missing file among good ones stops the run too (a typo), before any work
        many = [*args[:-3], face, *args[-3:]]  # ... missing face --out OUT
        code, err = _run(capsys, many)
        assert code == 4 and str(missing) in err, err


def test_4_a_folder_as_video_and_a_file_that_is_no_video(env, capsys, no_model_loading, tmp_path):
    code, err = _run(capsys, ["track", tmp_path, "--out", tmp_path / "o"])
    assert code == 4, err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 but not really a video" * 10)
    code, err = _run(capsys, ["track", bad, "--out", tmp_path / "o"])
    assert code == errors.EXIT_INPUT == 4, err
    assert str(bad) in err


def test_4_unreadable_image_single_input(env, capsys, garbage, tmp_path):
    code, err = _run(capsys, ["fit", garbage, "--out", tmp_path / "o", *FAST])
    assert code == errors.EXIT_INPUT == 4, err
    assert str(garbage) in err.splitlines()[-1]  # the last line names the file, not just "1 of 1 items failed"


# ---- 5 ------------------------------------------------------------------------------------------------------------

def test_5_no_face_single_input_fit(env, capsys, faceless, tmp_path):
    code, err = _run(capsys, ["fit", faceless, "--out", tmp_path / "o", *FAST])
    assert code == errors.EXIT_NO_FACE == 5, err


def test_5_all_items_failed_with_one_code_and_7_mixed(env, capsys, faceless, garbage, tmp_path):
    """Many inputs, all failed: the shared code when they agree (5), else 7."""
    other = tmp_path / "grey2.png"
    shutil.copy(faceless, other)
    code, err = _run(capsys, ["fit", faceless, other, "--out", tmp_path / "o", *FAST])
    assert code == 5, err
    code, err = _run(capsys, ["fit", faceless, garbage, "--out", tmp_path / "o", *FAST])
    assert code == errors.EXIT_ITEMS_FAILED == 7, err


def test_5_no_face_texspace_build(env, capsys, faceless, tmp_path):
    code, err = _run(capsys, ["texspace", "build", faceless, "--out", tmp_path / "s.npz", *TEX_FAST])
    assert code == 5, err


def test_5_no_face_in_the_video(env, capsys, tmp_path):
    video = _video(tmp_path / "grey.mp4")
    code, err = _run(capsys, ["track", video, "--out", tmp_path / "o", *TRACK_FAST])
    assert code == 5, err


# ---- 7 ------------------------------------------------------------------------------------------------------------

def test_7_some_items_failed_the_others_written(env, capsys, face, garbage, tmp_path):
    code, err = _run(capsys, ["fit", face, garbage, "--out", tmp_path / "o", *FAST])
    assert code == errors.EXIT_ITEMS_FAILED == 7, err
    assert (tmp_path / "o" / "face.done.json").is_file()
    assert "1 fitted, 0 skipped (already done), 1 failed" in err


# ---- 8 ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["fit", "track", "texspace", "detect"])
def test_8_output_below_a_file(env, capsys, no_model_loading, face, blocked_out, tmp_path, command):
    video = _video(tmp_path / "v.mp4") if command == "track" else None
    args = {"fit": ["fit", face, "--out", blocked_out],
            "track": ["track", video, "--out", blocked_out],
            "texspace": ["texspace", "build", face, "--out", blocked_out / "space.npz"],
            "detect": ["detect", face, "--out", blocked_out]}[command]
    code, err = _run(capsys, args)
    assert code == errors.EXIT_OUTPUT == 8, err
    line = err.splitlines()[-1]
    assert "afile" in line and "is a file" in line and "choose another output path" in line


@pytest.mark.parametrize("command", ["fit", "track", "texspace"])
def test_8_output_is_an_existing_file_or_folder(env, capsys, no_model_loading, face, tmp_path, command):
    video = _video(tmp_path / "v.mp4") if command == "track" else None
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = {"fit": ["fit", face, "--out", afile],
            "track": ["track", video, "--out", afile],
            "texspace": ["texspace", "build", face, "--out", tmp_path]}[command]  # a folder where a file goes
    code, err = _run(capsys, args)
    assert code == 8, err


@pytest.mark.parametrize("command", ["fit", "track", "texspace"])
def test_8_output_not_writable(env, capsys, no_model_loading, monkeypatch, face, tmp_path, command):
    """Read-only folder: tests run as root (chmod does not stop root), so the write probe is made to fail."""
    import tempfile

    def denied(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    video = _video(tmp_path / "v.mp4") if command == "track" else None
    monkeypatch.setattr(tempfile, "mkstemp", denied)
    args = {"fit": ["fit", face, "--out", tmp_path / "o"],
            "track": ["track", video, "--out", tmp_path / "o"],
            "texspace": ["texspace", "build", face, "--out", tmp_path / "s.npz"]}[command]
    code, err = _run(capsys, args)
    assert code == 8, err
    assert "not writable" in err and "Permission denied" in err


def test_8_output_read_only_folder(env, capsys, no_model_loading, face, tmp_path):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: a read-only folder is writable anyway (see test_8_output_not_writable)")
        code, err = _run(capsys, ["fit", face, "--out", ro])
        assert code == 8, err
    finally:
        ro.chmod(0o700)


def test_8_disk_full(env, capsys, no_model_loading, monkeypatch, face, tmp_path):
    import collections

    import flamefit.io.outputs as outputs

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 10 * 2**20, 10 * 2**20))
    code, err = _run(capsys, ["fit", face, "--out", tmp_path / "o"])
    assert code == 8, err
    assert "only 10 MB free" in err and f"{outputs.MIN_FREE_MB} MB" in err


def test_every_code_is_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for code in errors.EXIT_CODES:
        assert f"\n| {code} | " in readme, code
    assert errors.OutputPathError.exit_code == 8 and str(errors.OutputPathError.exit_code) in errors.__doc__


def test_4_and_8_fit_texture_and_texspace_stages(env, capsys, no_model_loading, face, blocked_out, tmp_path):
    """The other commands that take input files or write outputs check them the same way, before any work."""
    code, err = _run(capsys, ["fit-texture", tmp_path / "nope.npz", face, "--out", tmp_path / "o"])
    assert code == 4 and "nope.npz" in err, err
    npz = tmp_path / "fit.npz"
    npz.write_bytes(b"")
    code, err = _run(capsys, ["fit-texture", npz, face, "--out", blocked_out])
    assert code == 8, err
    code, err = _run(capsys, ["texspace", "unwrap", tmp_path / "nope.png", "--work", tmp_path / "w"])
    assert code == 4, err
    code, err = _run(capsys, ["texspace", "unwrap", face, "--work", blocked_out])
    assert code == 8, err
