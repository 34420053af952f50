"""``flamefit bench track``: the video tracker's speed, stability, accuracy and memory.

* Synthetic clip with known motion (:func:`flamefit.fit.synthetic_video.make_synthetic_clip`: smooth pose, talking
  jaw, expressions, blinks) written to an mp4 and tracked through the whole pipeline (decode, "detect", fit, write
  npz); the detector is a stand-in that returns the truth's 68 points plus detector-like noise
  (:class:`flamefit.track.GivenLandmarks`). Reported: frames/s per mode and per stage, jitter of the fitted 68
  points against the raw detections' (ratio; target <= 0.35), lag in frames (target |lag| <= 1), the per-frame
  face-region vertex error after a similarity alignment of each frame, the error after ONE alignment for the whole
  clip (target within 2x the per-frame error), and the same for independent single-image fits (rigid + landmarks
  stages, no shared identity) of the same frames (target: the tracker's per-frame error below theirs).
* The shared real videos with MediaPipe in tracking mode (landmark mode): frames/s and stage times.
* Peak RSS of ``flamefit track`` in a fresh process for a short input and one 10x longer (the short video looped
  10 times), both subsampled to the same ``--rss-fps`` (target: within 10 %).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np


def _assets(assets: str | None):
    from flamefit.bench.common import shared_assets_dir

    return shared_assets_dir(assets)


def _asset_paths(assets: Path) -> dict:
    return {"flame": assets / "flame_standin" / "standin_flame2023.pkl",
            "texture_space": assets / "flame_standin" / "standin_texture.npz",
            "landmarks_static": assets / "flame_landmarks" / "flame_static_embedding.pkl",
            "landmarks_dynamic": assets / "flame_landmarks" / "flame_dynamic_embedding.npy"}


# the field of view make_synthetic_clip renders with (its default); the fitter is told it: this bench is the
# oracle column (true landmarks + noise, true focal)
CLIP_FOV_DEG = 20.0


def _fitter(assets: Path, device="cpu"):
    from flamefit.fit.api import build_fitter
    from flamefit.fit.config import load_config

    a = _asset_paths(assets)
    cfg = load_config()
    cfg.camera.video_fov_deg = CLIP_FOV_DEG  # the oracle knows the clip's focal: the tracker's and
    cfg.camera.fov_deg = CLIP_FOV_DEG  # the independent per-frame fits'
    return build_fitter(a["flame"], a["texture_space"], cfg, device=device,
                        landmarks_static=a["landmarks_static"], landmarks_dynamic=a["landmarks_dynamic"])


def _camera_vertices(npz) -> np.ndarray:
    import torch

    from flamefit.model.lbs import axis_angle_to_matrix

    cam = np.asarray(npz["cam"], np.float64)
    R = axis_angle_to_matrix(torch.as_tensor(cam[None, :3]))[0].numpy()
    return np.asarray(npz["vertices"], np.float64) @ R.T + cam[3:]


def _collect(out_dir: Path, indices) -> dict[str, np.ndarray]:
    fit68, det68, verts = [], [], []
    for i in indices:
        p = out_dir / "frames" / f"{i:06d}.npz"
        if not p.is_file():
            fit68.append(np.full((68, 2), np.nan))
            det68.append(np.full((68, 2), np.nan))
            verts.append(None)
            continue
        with np.load(p) as d:
            fit68.append(d["lmks_68_fit"])
            det68.append(d["lmks_68"] if "lmks_68" in d.files else np.full((68, 2), np.nan))
            verts.append(_camera_vertices(d))
    V = next(v for v in verts if v is not None).shape
    verts = [v if v is not None else np.full(V, np.nan) for v in verts]
    return {"lmks_68_fit": np.stack(fit68), "lmks_68": np.stack(det68), "verts_cam": np.stack(verts)}


def _stage_rates(doc: dict) -> dict:
    t = doc["timings"]
    n = max(doc["frames"]["written_this_run"], 1)
    out = {"frames": doc["frames"]["written_this_run"], "total_s": t["total_s"], "identity_s": t["identity_s"],
           "frames_per_s": n / t["total_s"],
           "frames_per_s_excluding_identity": n / max(t["total_s"] - t["identity_s"], 1e-9)}
    for k in ("decode_s", "detect_s", "prepare_s", "landmarks_s", "photometric_s", "write_s"):
        if t.get(k):
            out[f"{k[:-2]}_ms_per_frame"] = 1000 * t[k] / n
    return out


def independent_fits(fitter, clip, video: Path, indices, chunk: int = 10) -> dict[str, np.ndarray]:
    """Rigid + landmark single-image fits of the frames ``indices``, each on its own (no shared identity)."""
    import torch

    from flamefit.fit.crop import params_to_original
    from flamefit.fit.targets import FitTarget
    from flamefit.model.landmarks import model_landmarks_68
    from flamefit.observe.video import read_video
    from flamefit.render.camera import project_points

    want = set(indices)
    images = {f.index: f.image for f in read_video(video, dtype="float32") if f.index in want}
    fit68, verts = [], []
    t0 = time.perf_counter()
    idx = list(indices)
    for s in range(0, len(idx), chunk):
        part = idx[s:s + chunk]
        targets = [FitTarget(image=images[i], lmks_68=clip.lmks_68_noisy[i], name=str(i)) for i in part]
        for raw in fitter.fit_batch(targets, stages=("rigid", "landmarks")):
            p = params_to_original(raw.params, raw.crop)
            with torch.no_grad():
                v, _ = fitter.vertices(p)
                lm = model_landmarks_68(fitter.landmarks68, v, fitter.faces, p.global_pose, p.neck_pose)
                fit68.append(project_points(fitter.to_camera(p, lm), p.intrinsics())[0].numpy())
                verts.append(fitter.to_camera(p, v)[0].double().numpy())
    return {"lmks_68_fit": np.stack(fit68), "verts_cam": np.stack(verts),
            "frames_per_s": len(idx) / (time.perf_counter() - t0)}


def _accuracy(res: dict, clip, indices, detected=None) -> dict:
    """Jitter (against ``detected``'s, default the clip's noisy truth), lag, vertex errors of a run."""
    from flamefit.bench.track_metrics import jitter_report, lag_frames, vertex_error_report

    idx = list(indices)
    out = jitter_report(res["lmks_68_fit"], clip.lmks_68_noisy[idx] if detected is None else detected,
                        clip.lmks_68[idx])
    out["lag_frames"] = lag_frames(res["lmks_68_fit"], clip.lmks_68[idx])
    out.update(vertex_error_report(res["verts_cam"], clip.verts_cam[idx], clip.face_region))
    return out


def synthetic(fitter, tmp: Path, n_frames: int, size: int, photometric_frames: int, independent_frames: int,
              noise_px: float, seed: int = 11, compare_window: bool = True) -> dict:
    import torch

    from flamefit.fit.synthetic_video import make_synthetic_clip
    from flamefit.track import GivenLandmarks, TrackConfig, track_video

    model = fitter.model
    n_render = max(n_frames, photometric_frames)
    video = tmp / "synthetic.mp4"
    with torch.no_grad():
        clip = make_synthetic_clip(model, landmarks68=fitter.landmarks68, texture_space=fitter.full_texture_space,
                                   n_frames=n_render, fps=25, height=size, width=size, seed=seed,
                                   landmark_noise_px=noise_px, video_path=video, keep_frames=False)
    report = {"clip": {"frames": n_render, "size_px": size, "fps": 25, "landmark_noise_px_at_256": noise_px,
                       "detector": "truth 68 points + noise (GivenLandmarks)"}}
    runs = [("landmarks", "landmarks", n_frames, "zero-lag"), ("photometric", "photometric", photometric_frames,
                                                                   "zero-lag")]
    if compare_window:  # the windows' temporal terms alone (the low-latency option) next to the default
        runs.append(("landmarks_smooth_window", "landmarks", n_frames, "window"))
    for name, mode, n, smooth in runs:
        if n < 3:
            continue
        out = tmp / f"syn_{name}"
        doc = track_video(video, out, fitter, GivenLandmarks(clip.lmks_68_noisy),
                          TrackConfig(mode=mode, smooth=smooth), end_s=n / 25 - 1e-6)
        r = {"smooth": smooth, "speed": _stage_rates(doc), "tracker": doc["tracker"]}
        r["accuracy"] = _accuracy(_collect(out, range(n)), clip, range(n))
        report[name] = r
    k = min(independent_frames, n_frames)
    if k >= 3:
        ind = independent_fits(fitter, clip, video, range(k))
        report["independent_fits"] = {"frames": k, "stages": "rigid+landmarks", "frames_per_s": ind["frames_per_s"],
                                      "accuracy": _accuracy(ind, clip, range(k))}
        report["landmarks"]["accuracy_first_frames_like_independent"] = _accuracy(
            _collect(tmp / "syn_landmarks", range(k)), clip, range(k))
    return report


# the detector-in-the-loop clip: a webcam-like field of view, the head turning further and moving in depth
DETECTED_FOV_DEG = 55.0


def detected_clip(oracle, user, tmp: Path, n_frames: int, size: int, photometric_frames: int,
                  seed: int = 23) -> dict:
    """A clip rendered at :data:`DETECTED_FOV_DEG` and tracked as a user tracks it: the real MediaPipe detector
    on the mp4, the focal length from the video prior, ``user``'s assets (model file + texture space). Scored
    against the truth like the oracle clip; jitter against the detector's own 68 points."""
    import torch

    from flamefit.fit.synthetic_video import ClipMotion, make_synthetic_clip
    from flamefit.track import MediaPipeFrames, TrackConfig, track_video

    video = tmp / "detected.mp4"
    n_render = max(n_frames, photometric_frames)
    motion = ClipMotion(yaw_amp_rad=0.5, drift_amp_m=0.03)
    with torch.no_grad():
        clip = make_synthetic_clip(oracle.model, landmarks68=oracle.landmarks68,
                                   texture_space=oracle.full_texture_space, n_frames=n_render, fps=25, height=size,
                                   width=size, seed=seed, motion=motion, pixel_noise=0.01, video_path=video,
                                   keep_frames=False, fov_deg=DETECTED_FOV_DEG)
    true_f = float(clip.K[0, 0])
    report = {"clip": {"frames": n_render, "size_px": size, "fov_deg": DETECTED_FOV_DEG, "yaw_amp_deg":
                       float(np.degrees(motion.yaw_amp_rad)), "depth_drift_m": motion.drift_amp_m,
                       "detector": "MediaPipe (tracking mode)", "assets": "model file + texture space",
                       "focal": "unknown to the tracker (camera.video_fov_deg prior)"}}
    for name, mode, n in (("landmarks", "landmarks", n_frames), ("photometric", "photometric", photometric_frames)):
        if n < 3:
            continue
        out = tmp / f"det_{name}"
        det = MediaPipeFrames(blendshapes=False)
        try:
            doc = track_video(video, out, user, det, TrackConfig(mode=mode), end_s=n / 25 - 1e-6)
        finally:
            det.close()
        res = _collect(out, range(n))
        r = {"speed": _stage_rates(doc), "tracker": doc["tracker"],
             "focal_err_pct": 100 * (doc["identity"]["focal_px"] / true_f - 1)}
        r["accuracy"] = _accuracy(res, clip, range(n), detected=res["lmks_68"])
        report[name] = r
    return report


def real_video(fitter, video: Path, tmp: Path, seconds: float, blendshapes: bool) -> dict:
    from flamefit.track import MediaPipeFrames, TrackConfig, track_video

    det = MediaPipeFrames(blendshapes=blendshapes)
    try:
        doc = track_video(video, tmp / f"real_{video.stem}_{int(blendshapes)}", fitter, det, TrackConfig(),
                          end_s=seconds)
    finally:
        det.close()
    return {"video": video.name, "seconds": seconds, "blendshapes": blendshapes, "speed": _stage_rates(doc),
            "tracker": doc["tracker"], "no_face_frames": doc["frames"]["no_face"]}


def _looped(video: Path, times: int, path: Path) -> Path:
    from flamefit.observe.video import VideoWriter, probe_video, read_video

    info = probe_video(video)
    with VideoWriter(path, info.fps or 25.0) as w:
        for _ in range(times):
            for f in read_video(video):
                w.write(f.image)
    return path


_RSS_CHILD = """
import json, sys, torch
torch.set_num_threads(1)
from pathlib import Path
from flamefit.bench.track import _fitter
from flamefit.bench.track_metrics import peak_rss_mb
from flamefit.track import MediaPipeFrames, TrackConfig, track_video
fitter = _fitter(Path(sys.argv[1]))
det = MediaPipeFrames(blendshapes=False)
doc = track_video(sys.argv[2], sys.argv[3], fitter, det, TrackConfig(), fps=float(sys.argv[4]))
print(json.dumps({"peak_rss_mb": peak_rss_mb(), "frames": doc["frames"]["written_this_run"],
                  "total_s": doc["timings"]["total_s"]}))
"""


def rss(assets: Path, video: Path, tmp: Path, fps: float) -> dict:
    from flamefit.observe.video import probe_video

    long = _looped(video, 10, tmp / "long.mp4")
    out = {}
    for name, v in (("short", video), ("long_10x", long)):
        proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(assets), str(v), str(tmp / f"rss_{name}"),
                               str(fps)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            out[name] = {"error": proc.stderr.strip().splitlines()[-1:]}
            continue
        d = json.loads(proc.stdout.strip().splitlines()[-1])
        d["duration_s"] = probe_video(v).duration_s
        out[name] = d
    if "peak_rss_mb" in out.get("short", {}) and "peak_rss_mb" in out.get("long_10x", {}):
        out["long_over_short"] = out["long_10x"]["peak_rss_mb"] / out["short"]["peak_rss_mb"]
    out["fps_subsampling"] = fps
    return out


def targets(report: dict) -> dict:
    out = {}
    for name in ("landmarks", "photometric"):
        d = report.get("detected", {}).get(name)
        if d:
            a = d["accuracy"]
            out[f"detected_{name}_per_frame<=1.2mm"] = bool(a["per_frame_aligned_mm"] <= 1.2)
            out[f"detected_{name}_whole_clip<=4mm"] = bool(a["clip_aligned_mm"] <= 4.0)
            out[f"detected_{name}_jitter_ratio<=0.35"] = bool(a["jitter_ratio"] <= 0.35)
            out[f"detected_{name}_lag_rounds_to_0"] = bool(abs(a["lag_frames"]) < 0.5)
    lm = report.get("synthetic", {}).get("landmarks")
    if lm:
        a = lm["accuracy"]
        out["jitter_ratio<=0.35"] = bool(a["jitter_ratio"] <= 0.35)
        out["|lag|<=1"] = bool(abs(a["lag_frames"]) <= 1)
        out["clip_over_frame<=2"] = bool(a["clip_over_frame"] <= 2)
        ind = report["synthetic"].get("independent_fits")
        if ind:
            mine = lm["accuracy_first_frames_like_independent"]["per_frame_aligned_mm"]
            out["per_frame_error_below_independent"] = bool(mine < ind["accuracy"]["per_frame_aligned_mm"])
    for r in report.get("real", []):
        if not r.get("blendshapes"):
            out[f"landmarks>=10fps[{r['video']}]"] = bool(r["speed"]["frames_per_s_excluding_identity"] >= 10)
    ph = report.get("synthetic", {}).get("photometric")
    if ph:
        out["photometric>=2fps[synthetic]"] = bool(ph["speed"]["frames_per_s_excluding_identity"] >= 2)
        out["landmarks>=10fps[synthetic]"] = bool(lm["speed"]["frames_per_s_excluding_identity"] >= 10)
    if "long_over_short" in report.get("rss", {}):
        out["rss_within_10%"] = bool(abs(report["rss"]["long_over_short"] - 1) <= 0.10)
    return out


@click.command(name="track")
@click.option("--assets", type=click.Path(file_okay=False), help="The shared assets folder (../shared/assets).")
@click.option("--frames", default=100, show_default=True, help="Synthetic clip length (landmark mode).")
@click.option("--photometric-frames", default=40, show_default=True, help="Frames tracked in photometric mode.")
@click.option("--independent-frames", default=30, show_default=True,
              help="Frames fitted independently for the comparison.")
@click.option("--size", default=384, show_default=True, help="Synthetic frame size (pixels).")
@click.option("--noise", default=1.5, show_default=True, help="Detector noise (px at 256 px).")
@click.option("--real/--no-real", "do_real", default=True, show_default=True, help="Also track the shared videos.")
@click.option("--real-seconds", default=4.0, show_default=True, help="Seconds of each real video.")
@click.option("--rss/--no-rss", "do_rss", default=True, show_default=True, help="Peak RSS short vs 10x input.")
@click.option("--rss-fps", default=2.0, show_default=True, help="Frames/s tracked in the RSS runs.")
@click.option("--compare-window/--no-compare-window", default=True, show_default=True,
              help="Also track the synthetic clip with --smooth window (the windows' temporal terms alone).")
@click.option("--seed", default=11, show_default=True, help="Seed of the synthetic clip.")
@click.option("--detected/--no-detected", "do_detected", default=True, show_default=True,
              help="Also track a webcam-like clip through the real detector with an unknown focal length.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(assets, frames, photometric_frames, independent_frames, size, noise, do_real, real_seconds, do_rss,
            rss_fps, compare_window, seed, do_detected, as_json):
    """Tracker speed per mode and stage, jitter/lag, vertex errors vs independent fits, peak RSS."""
    from flamefit.bench.common import environment

    assets = _assets(assets)
    fitter = _fitter(assets)
    report: dict = {"environment": environment()}
    with tempfile.TemporaryDirectory(prefix="flamefit-bench-track-") as tmp:
        tmp = Path(tmp)
        if do_detected:
            from flamefit.bench.fit import _user_fitter

            report["detected"] = detected_clip(fitter, _user_fitter(assets), tmp, frames, size, photometric_frames)
        report["synthetic"] = synthetic(fitter, tmp, frames, size, photometric_frames, independent_frames, noise,
                                        seed=seed, compare_window=compare_window)
        if do_real:
            report["real"] = []
            for name in ("obama_weekly_address_matted_512.mp4", "tears_of_steel_clip01_640x360.mp4"):
                v = assets / "videos" / name
                if v.is_file():
                    report["real"].append(real_video(fitter, v, tmp, real_seconds, blendshapes=False))
            v = assets / "videos" / "obama_weekly_address_matted_512.mp4"
            if v.is_file():
                report["real"].append(real_video(fitter, v, tmp, min(real_seconds, 2.0), blendshapes=True))
        if do_rss:
            v = assets / "videos" / "obama_weekly_address_matted_512.mp4"
            if v.is_file():
                report["rss"] = rss(assets, v, tmp, rss_fps)
    report["targets_met"] = targets(report)
    if as_json:
        click.echo(json.dumps(report, default=float))
        return
    click.echo(json.dumps(report, indent=1, default=float))
