"""The video tracker on synthetic clips with known motion: complete and finite outputs, resume after a kill, faces
lost and found, shot cuts, temporal terms that reduce jitter without lag, the point cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flamefit.bench.track_metrics import jitter_report, lag_frames
from flamefit.fit.params import FlameParams
from flamefit.fit.terms import FitContext, TemporalTerm
from flamefit.track import GivenLandmarks, TrackConfig, track_video
from flamefit.track.outputs import finished_frames, read_point_cache, write_point_cache

FIELDS = ("frame_index", "time_s", "vertices", "cam", "K", "shape", "exp", "pose", "neck", "eyes", "tex", "light",
          "lmks_68_fit", "lmks_68")


def small_cfg(**kw) -> TrackConfig:
    cfg = TrackConfig(identity_frames=4, window=6, tail=2, iters=12, cold_rigid_iters=10, cold_iters=30, smooth_lag=5,
                      identity_photometric_iters=10, identity_photometric_resolution=64)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def run(fitter, clip, path, out, cfg=None, **kw):
    return track_video(path, out, fitter, GivenLandmarks(clip.lmks_68_noisy), cfg or small_cfg(), **kw)


def load_all(out, indices, key):
    return np.stack([np.load(out / "frames" / f"{i:06d}.npz")[key] for i in indices])


def test_every_frame_written_once_complete_and_finite(track_fitter, make_clip, tmp_path):
    fitter = track_fitter[0]
    clip, path = make_clip("plain")
    run(fitter, clip, path, tmp_path)
    T = clip.n_frames
    assert finished_frames(tmp_path) == set(range(T))
    assert sorted(p.name for p in (tmp_path / "frames").glob("*.npz")) == [f"{i:06d}.npz" for i in range(T)]
    for i in (0, T // 2, T - 1):
        with np.load(tmp_path / "frames" / f"{i:06d}.npz") as d:
            for k in FIELDS:
                assert k in d.files, k
                assert np.isfinite(d[k]).all(), k
            assert int(d["frame_index"]) == i
            assert float(d["time_s"]) == pytest.approx(i / 25, abs=1e-3)
            assert d["vertices"].shape == (fitter.model.num_vertices, 3)
            assert "blendshape_scores" in json.loads(str(d["missing"]))  # absent, with a reason
    # the identity is shared: every frame has the same shape, fitted once
    shapes = load_all(tmp_path, range(T), "shape")
    assert np.ptp(shapes, axis=0).max() == 0
    assert (tmp_path / "identity.npz").is_file()
    summary = json.loads((tmp_path / "track.json").read_text())
    assert summary["frames"]["written_this_run"] == T and summary["frames"]["no_face"] == 0
    assert summary["video"]["width"] == 128
    # the fit follows the truth (not the noise): fitted 68 points within a few pixels of the true ones
    err = np.linalg.norm(load_all(tmp_path, range(T), "lmks_68_fit") - clip.lmks_68, axis=-1)
    assert np.median(err) < 2.0


def test_resume_after_kill_loses_and_duplicates_nothing(track_fitter, make_clip, tmp_path):
    fitter = track_fitter[0]
    clip, path = make_clip("plain")
    T = clip.n_frames
    part = run(fitter, clip, path, tmp_path, stop_after=17)  # "killed": pending frames never written
    first = finished_frames(tmp_path)
    assert 0 < len(first) < 17 and first == set(range(len(first)))
    doc = run(fitter, clip, path, tmp_path)
    assert doc["identity"]["reused"]
    assert doc["frames"]["skipped_already_done"] == len(first)
    assert doc["frames"]["written_this_run"] == T - len(first)
    assert finished_frames(tmp_path) == set(range(T))
    records = [json.loads((tmp_path / "frames" / f"{i:06d}.done.json").read_text()) for i in range(T)]
    assert [r["frame_index"] for r in records] == list(range(T))
    # no seam at the resume point: the head's motion there is as smooth as anywhere else
    pose = load_all(tmp_path, range(T), "pose")[:, :3]
    acc = np.linalg.norm(pose[2:] - 2 * pose[1:-1] + pose[:-2], axis=1)
    k = len(first)
    assert acc[k - 2:k + 1].max() < 4 * np.median(acc) + 1e-3
    assert part["written"] == len(first)


def test_face_lost_and_found(track_fitter, make_clip, tmp_path):
    fitter = track_fitter[0]
    absent = (12, 13, 14, 15)
    clip, path = make_clip("lost", face_absent=absent)
    doc = run(fitter, clip, path, tmp_path)
    T = clip.n_frames
    assert doc["no_face_frames"] == list(absent)  # reported, not invented
    assert finished_frames(tmp_path) == set(range(T)) - set(absent)
    after = [i for i in range(16, T)]
    err = np.linalg.norm(load_all(tmp_path, after, "lmks_68_fit") - clip.lmks_68[after], axis=-1)
    assert np.median(err) < 2.0  # found again and tracked
    assert doc["tracker"]["cold_windows"] >= 2  # history cleared: a fresh start after the gap


def test_shot_cut_reinitialises(track_fitter, make_clip, tmp_path):
    fitter = track_fitter[0]
    clip, path = make_clip("cut", cuts=(14,))
    doc = run(fitter, clip, path, tmp_path)
    assert doc["tracker"]["cuts"] >= 1
    T = clip.n_frames
    assert finished_frames(tmp_path) == set(range(T))
    err = np.linalg.norm(load_all(tmp_path, range(T), "lmks_68_fit") - clip.lmks_68, axis=-1).mean(1)
    assert err[14:18].max() < 3.0  # right after the cut the new framing is tracked (not smoothed across it)
    cold = load_all(tmp_path, range(T), "cold_start")
    assert cold[14]


@pytest.mark.parametrize("smooth", ["zero-lag", "window"])
def test_temporal_terms_reduce_jitter_without_lag(track_fitter, make_clip, tmp_path, smooth):
    fitter = track_fitter[0]
    clip, path = make_clip("jitter", n_frames=40, landmark_noise_px=2.0)
    T = clip.n_frames
    run(fitter, clip, path, tmp_path / "on", small_cfg(smooth=smooth))
    run(fitter, clip, path, tmp_path / "off", small_cfg(temporal_weight=0.0))
    on = jitter_report(load_all(tmp_path / "on", range(T), "lmks_68_fit"), clip.lmks_68_noisy, clip.lmks_68)
    off = jitter_report(load_all(tmp_path / "off", range(T), "lmks_68_fit"), clip.lmks_68_noisy, clip.lmks_68)
    assert on["jitter_ratio"] < 0.6 * off["jitter_ratio"]
    assert on["jitter_ratio"] < 0.35
    assert abs(lag_frames(load_all(tmp_path / "on", range(T), "lmks_68_fit"), clip.lmks_68)) <= 1.0


def test_temporal_term_sees_frozen_history():
    B, D = 4, 3
    p = FlameParams.zeros(B, 2, 2)
    p.global_pose = torch.arange(B, dtype=torch.float32).view(B, 1).expand(B, D) * 0.1  # constant velocity
    term = TemporalTerm("t", 1.0, {"global_pose": 1.0}, {})
    ctx = FitContext(None, None, p)
    assert torch.allclose(term(ctx), torch.zeros(B))
    # the same motion continued from the history: still no cost; a history that stood still: cost at the start
    smooth = TemporalTerm("t", 1.0, {"global_pose": 1.0}, {}, {"global_pose": torch.tensor([[-0.2] * D, [-0.1] * D])})
    assert torch.allclose(smooth(ctx), torch.zeros(B), atol=1e-6)
    still = TemporalTerm("t", 1.0, {"global_pose": 1.0}, {}, {"global_pose": torch.tensor([[0.5] * D, [0.5] * D])})
    v = still(ctx)
    assert v[0] > 0 and v[1] > 0 and v[2:].abs().max() < 1e-6


def test_point_cache_matches_the_frames(track_fitter, make_clip, tmp_path):
    fitter = track_fitter[0]
    clip, path = make_clip("plain")
    run(fitter, clip, path, tmp_path)
    info = write_point_cache(tmp_path, fitter, 25.0)
    cache = read_point_cache(tmp_path / "mesh.pc2")
    T = clip.n_frames
    assert info["samples"] == T and cache.shape == (T, fitter.model.num_vertices, 3)
    assert np.allclose(cache[7], load_all(tmp_path, [7], "vertices")[0])
    obj = (tmp_path / "mesh.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == fitter.model.num_vertices


def test_segments_own_each_frame_once_and_share_the_identity(track_fitter, make_clip, tmp_path, monkeypatch):
    from flamefit.jobs.track import track_parallel
    from flamefit.run import InProcessExecutor, RunSpec
    from flamefit.track.segments import plan_segments

    fitter, _, _, _ = track_fitter
    clip, path = make_clip("plain")
    T = clip.n_frames
    segs = plan_segments(T / 25, 0.5, 0.2)
    assert len(segs) == 3 and segs[1]["start_s"] == pytest.approx(0.3) and segs[1]["own_start_s"] == 0.5
    np.save(tmp_path / "lmks.npy", clip.lmks_68_noisy)
    spec = RunSpec(worker="", options={"landmarks_npy": str(tmp_path / "lmks.npy")})
    # the worker builds its own fitter from the spec: hand it this one (same model files are not on a fresh path)
    from flamefit.jobs import track as J

    monkeypatch.setattr(J.TrackWorker, "setup", lambda self: setattr(self, "fitter", fitter))
    out = tmp_path / "out"
    doc = track_parallel(path, out, fitter, GivenLandmarks(clip.lmks_68_noisy), small_cfg(), spec,
                         InProcessExecutor(debug=True), segment_s=0.5, warmup_s=0.2)
    assert doc["segments"]["ok"] == 3
    assert finished_frames(out) == set(range(T))
    assert doc["frames"]["written_this_run"] == T  # no frame written by two segments
    err = np.linalg.norm(load_all(out, range(T), "lmks_68_fit") - clip.lmks_68, axis=-1).mean(1)
    assert err.max() < 3.0
    again = track_parallel(path, out, fitter, GivenLandmarks(clip.lmks_68_noisy), small_cfg(), spec,
                           InProcessExecutor(debug=True), segment_s=0.5, warmup_s=0.2)
    assert again["segments"]["skipped"] == 3 and again["frames"]["written_this_run"] == 0


def test_photometric_mode_writes_light_and_texture(track_fitter, make_clip, tmp_path):
    fitter = track_fitter[0]
    clip, path = make_clip("short", n_frames=10)
    cfg = small_cfg(mode="photometric", identity_frames=3, identity_photometric_iters=10, photometric_iters=4,
                    photometric_resolution=32, identity_photometric_resolution=64)
    doc = run(fitter, clip, path, tmp_path, cfg)
    assert finished_frames(tmp_path) == set(range(10))
    assert (tmp_path / "texture.png").is_file()
    light = load_all(tmp_path, range(10), "light")
    assert np.isfinite(light).all() and np.ptp(light[:, 0], axis=0).max() > 0  # per-frame light
    assert doc["timings"]["photometric_s"] > 0


def test_landmark_mode_identity_fits_appearance_unless_told_not_to(track_fitter, make_clip, tmp_path):
    """Landmark mode: the identity fit's photometric stage (identity_photometric) gives the frames the K frames'
    fitted light and texture, not the start values; without it the identity has no light and no texture.png."""
    fitter = track_fitter[0]
    clip, path = make_clip("short", n_frames=10)
    run(fitter, clip, path, tmp_path / "on", small_cfg(identity_frames=3))
    ident = np.load(tmp_path / "on" / "identity.npz")
    assert "light" in ident.files and (tmp_path / "on" / "texture.png").is_file()
    light = load_all(tmp_path / "on", range(10), "light")
    assert np.allclose(light, ident["light"][None], atol=1e-6)  # every frame: the identity's light
    assert np.abs(light[0, 1:]).max() > 1e-3  # fitted: the start is ambient only (bands 1-8 zero)
    run(fitter, clip, path, tmp_path / "off", small_cfg(identity_frames=3, identity_photometric=False))
    ident_off = np.load(tmp_path / "off" / "identity.npz")
    assert "light" not in ident_off.files and not (tmp_path / "off" / "texture.png").exists()
    assert not np.allclose(ident_off["tex"], ident["tex"])


def test_rerun_in_another_mode_refuses_to_mix_tracks(track_fitter, make_clip, tmp_path):
    from flamefit.errors import ConfigError

    fitter = track_fitter[0]
    clip, path = make_clip("short", n_frames=10)
    run(fitter, clip, path, tmp_path, small_cfg(identity_frames=3))
    with pytest.raises(ConfigError, match="another mode"):
        run(fitter, clip, path, tmp_path, small_cfg(mode="photometric", identity_frames=3))


def test_video_focal_prior_is_recorded_and_a_rerun_with_another_focal_refuses(track_fitter, make_clip, tmp_path):
    import dataclasses

    from flamefit.errors import ConfigError
    from flamefit.track.tracker import _with_config

    fitter = track_fitter[0]
    clip, path = make_clip("short", n_frames=10)
    doc = run(fitter, clip, path, tmp_path, small_cfg(identity_frames=3))
    ident = doc["identity"]
    assert ident["focal_source"].startswith("video_fov_deg prior")
    assert ident["fov_deg"] == pytest.approx(fitter.cfg.camera.video_fov_deg, abs=0.01)
    other = _with_config(fitter, dataclasses.replace(
        fitter.cfg, camera=dataclasses.replace(fitter.cfg.camera, video_fov_deg=30.0)))
    with pytest.raises(ConfigError, match="focal length"):
        run(other, clip, path, tmp_path, small_cfg(identity_frames=3))


def test_tracking_settings_are_validated():
    from flamefit.errors import ConfigError

    small_cfg().validate()
    for k, v, msg in (("jaw_lateral_prior", -1.0, "jaw_lateral_prior"), ("smooth_lag", 0, "smooth_lag"),
                      ("mode", "dense", "mode")):
        with pytest.raises(ConfigError, match=msg):
            small_cfg(**{k: v}).validate()
