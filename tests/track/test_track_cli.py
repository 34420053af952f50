"""`flamefit track` end to end on a shared real video (MediaPipe in tracking mode), kept short."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flamefit.cli import main

FAST = ["--set", "rigid.iters=10", "--set", "landmarks.iters=30", "--set", "n_shape=50", "--set", "n_expr=30",
        "--identity-frames", "3", "--no-progress", "--no-blendshapes"]


@pytest.fixture(scope="module")
def env(shared_assets):
    mp = pytest.MonkeyPatch()
    mp.setenv("FLAMEFIT_FLAME_MODEL", str(shared_assets / "flame_standin" / "standin_flame2023.pkl"))
    mp.setenv("FLAMEFIT_TEXTURE_SPACE", str(shared_assets / "flame_standin" / "standin_texture.npz"))
    mp.setenv("FLAMEFIT_LANDMARKS_STATIC", str(shared_assets / "flame_landmarks" / "flame_static_embedding.pkl"))
    mp.setenv("FLAMEFIT_LANDMARKS_DYNAMIC", str(shared_assets / "flame_landmarks" / "flame_dynamic_embedding.npy"))
    yield
    mp.undo()


def test_track_cli_writes_frames_overlay_mesh_and_resumes(env, shared_assets, tmp_path):
    video = shared_assets / "videos" / "obama_weekly_address_matted_512.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is not in the shared assets")
    out = tmp_path / "out"
    rc = main(["track", str(video), "--out", str(out), "--end", "0.5", "--every", "2", *FAST])
    assert rc == 0
    frames = sorted(p.name for p in (out / "frames").glob("*.npz"))
    assert frames == [f"{i:06d}.npz" for i in range(0, 13, 2)]  # source indices of every 2nd frame in 0.5 s
    with np.load(out / "frames" / "000004.npz") as d:
        assert d["lmks_dense"].shape == (478, 2) and d["lmks_68"].shape == (68, 2)
        err = np.linalg.norm(d["lmks_68_fit"] - d["lmks_68"], axis=1)
        assert np.median(err) < 8.0  # px in a 512 px frame
    doc = json.loads((out / "track.json").read_text())
    assert doc["video"]["fps"] == 25.0 and doc["frames"]["no_face"] == 0
    assert doc["overlay"]["frames"] == 7 and (out / "overlay.mp4").is_file()
    assert doc["mesh"]["samples"] == 7 and (out / "mesh.pc2").is_file()
    # landmark mode's identity has a photometric stage by default: its texture is written
    assert doc["config"]["track"]["identity_photometric"] and (out / "texture.png").is_file()
    rc = main(["track", str(video), "--out", str(out), "--end", "0.5", "--every", "2", "--no-overlay",
               "--no-mesh", *FAST])
    assert rc == 0
    doc = json.loads((out / "track.json").read_text())
    assert doc["frames"]["skipped_already_done"] == 7 and doc["frames"]["written_this_run"] == 0
    assert doc["identity"]["reused"]


def test_track_cli_identity_landmarks_only(env, shared_assets, tmp_path):
    video = shared_assets / "videos" / "obama_weekly_address_matted_512.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is not in the shared assets")
    rc = main(["track", str(video), "--out", str(tmp_path), "--end", "0.2", "--every", "2", "--no-overlay",
               "--no-mesh", "--identity-landmarks-only", *FAST])
    assert rc == 0
    doc = json.loads((tmp_path / "track.json").read_text())
    assert doc["config"]["track"]["identity_photometric"] is False and not (tmp_path / "texture.png").exists()
    assert "light" not in np.load(tmp_path / "identity.npz").files


def test_track_cli_rejects_fps_and_every_together(env, shared_assets, tmp_path):
    video = shared_assets / "videos" / "obama_weekly_address_matted_512.mp4"
    rc = main(["track", str(video), "--out", str(tmp_path), "--fps", "5", "--every", "2", "--no-progress"])
    assert rc == 2
