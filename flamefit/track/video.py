"""Track a video file: streaming decode -> detection -> identity -> windowed tracking -> per-frame outputs.

    from flamefit.track import TrackConfig, track_video, MediaPipeFrames
    summary = track_video("clip.mp4", "out/", fitter, MediaPipeFrames(), TrackConfig(mode="landmarks"), fps=25)

Resumable: frames with a complete output set are not fitted again; they are read back as the temporal history of
the next window (so a rerun after ``kill -9`` continues with no lost or duplicated frame and no seam). The identity
is fitted once (``identity.npz``) and reused by reruns and by the segments of a parallel run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from flamefit.errors import FaceNotFound, FlamefitError
from flamefit.track.outputs import (
    FrameWriter,
    finished_frames,
    identity_path,
    is_frame_done,
    load_frame,
    load_identity,
    save_identity,
    write_point_cache,
    write_summary,
)
from flamefit.track.tracker import FrameObs, Identity, TrackConfig, Tracker, fit_identity

FORMAT = "flamefit-track/1"


# -- detectors: VideoFrame -> FrameObs ---------------------------------------------------------------------------------

class MediaPipeFrames:
    """MediaPipe in tracking (video) mode through :class:`flamefit.observe.landmarks.FaceTracker`; blendshape scores
    from the FaceLandmarker task when ``blendshapes`` and the task file is available."""

    def __init__(self, blendshapes: bool = True, face_landmarker=None, search_every: int = 25):
        from flamefit.observe.landmarks import FaceTracker

        self.blendshapes = blendshapes
        # while no face is tracked, the thorough still-image search runs every `search_every` frames (the quick
        # one on every frame): on the shared clip with cuts, frames without a face cost 176 ms each at 10, 71 at 25
        self.tracker = FaceTracker(face_landmarker=face_landmarker if blendshapes else None,
                                   search_every=search_every)
        self._last_ms = -1

    def __call__(self, frame) -> FrameObs:
        det = self.tracker.track(frame.image, source=f"frame {frame.index}")
        obs = FrameObs(frame.index, frame.time_s, frame.image)
        if det is None:
            return obs
        obs.lmks_dense = det.lmks_dense
        obs.lmks_68 = det.lmks_68
        obs.confidence = float(det.confidence)
        if self.blendshapes:
            ms = max(int(round(frame.time_s * 1000)), self._last_ms + 1)
            self._last_ms = ms
            try:
                ex = self.tracker.expression(frame.image, det, timestamp_ms=ms)
                obs.blendshape_scores = ex.blendshape_scores
                obs.blendshape_names = ex.blendshape_names
                if ex.blendshape_scores is None:
                    obs.blendshape_missing = ex.missing.get("blendshape_scores")
            except FlamefitError as e:
                obs.blendshape_missing = str(e)
        else:
            obs.blendshape_missing = "blendshapes were not requested (--no-blendshapes)"
        return obs

    def still(self, frame) -> FrameObs:
        """Detection on one frame on its own (the identity's sample frames): the robust still-image search."""
        obs = FrameObs(frame.index, frame.time_s, frame.image)
        try:
            det = self.tracker._detector.detect(frame.image, select="largest", source=f"frame {frame.index}")
        except FaceNotFound:
            return obs
        obs.lmks_dense, obs.lmks_68, obs.confidence = det.lmks_dense, det.lmks_68, float(det.confidence)
        return obs

    def close(self) -> None:
        self.tracker.close()


class GivenLandmarks:
    """A detector stand-in that returns given per-frame landmarks (by source index; NaN rows: no face), e.g. a
    synthetic clip's noisy truth for benchmarks and tests."""

    def __init__(self, lmks_68: np.ndarray | None = None, lmks_dense: np.ndarray | None = None):
        self.lmks_68 = lmks_68
        self.lmks_dense = lmks_dense

    def __call__(self, frame) -> FrameObs:
        obs = FrameObs(frame.index, frame.time_s, frame.image)
        for k in ("lmks_68", "lmks_dense"):
            arr = getattr(self, k)
            if arr is not None and frame.index < len(arr) and np.isfinite(arr[frame.index]).all():
                setattr(obs, k, np.asarray(arr[frame.index], np.float32))
        obs.blendshape_missing = "landmarks were given (no detector ran)"
        return obs

    still = __call__

    def close(self) -> None:
        pass


# -- identity ----------------------------------------------------------------------------------------------------------

def sample_identity_frames(video, detector, cfg: TrackConfig, *, start_s=None, end_s=None) -> list[FrameObs]:
    """``cfg.identity_frames`` frames spread evenly over [start_s, end_s) (or the whole clip), detected on their own.
    Only these few frames are in memory."""
    from flamefit.observe.video import probe_video, read_video

    info = probe_video(video)
    t0 = start_s or 0.0
    t1 = end_s if end_s is not None else (info.duration_s or 0.0)
    span = max(t1 - t0, 1e-3)
    fps = max(cfg.identity_frames / span, 1e-3)
    out = []
    for frame in read_video(video, fps=fps, start_s=start_s, end_s=end_s):
        out.append(detector.still(frame))
        if len(out) >= cfg.identity_frames:
            break
    return out


def get_identity(video, out_dir, fitter, detector, cfg: TrackConfig, *, start_s=None, end_s=None,
                 refit: bool = False) -> tuple[Identity, bool]:
    """(identity, reused): ``identity.npz`` of an earlier run when it fits this mode and model, else a new fit."""
    from flamefit.errors import ConfigError
    from flamefit.observe.video import probe_video

    ident = None if refit else load_identity(out_dir)
    if ident is not None:
        info = probe_video(video)
        from flamefit.fit.init import video_focal

        focal = video_focal(info.height, info.width, fitter.cfg.camera)[0]
        same = {"mode": ident.mode == cfg.mode, "frame size": tuple(ident.image_size) == (info.height, info.width),
                "model": len(ident.shape) == fitter.n_shape and len(ident.tex) == fitter.texture_space.n_components,
                "focal length": abs(ident.focal_px - focal) <= 1e-6 * focal}
        if all(same.values()):
            return ident, True
        if finished_frames(out_dir):  # resuming would mix two tracks in one folder
            bad = ", ".join(k for k, v in same.items() if not v)
            raise ConfigError(f"{out_dir} holds a track made with another {bad} ({identity_path(out_dir)}); rerun "
                              "with --overwrite to track again from scratch, or choose another --out folder")
    frames = sample_identity_frames(video, detector, cfg, start_s=start_s, end_s=end_s)
    ident = fit_identity(fitter, frames, cfg)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_identity(out_dir, ident, fitter)
    return ident, False


# -- the run ----------------------------------------------------------------------------------------------------------

def check_selection(video, info, start_s=None, end_s=None) -> None:
    """A :class:`~flamefit.errors.ConfigError` when ``start_s``/``end_s`` select no time of ``video`` (whose
    :func:`~flamefit.observe.video.probe_video` is ``info``): a start at or past the end would otherwise read as
    "no face was found"."""
    from flamefit.errors import ConfigError

    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ConfigError(f"--end {end_s:g} s is not after --start {start_s:g} s: nothing of {video} to track; "
                          "give an end after the start")
    duration = info.duration_s
    if start_s is not None and duration and start_s >= duration:
        raise ConfigError(f"--start {start_s:g} s is at or past the end of {video} ({duration:g} s long): nothing "
                          f"to track; give a start before {duration:g} s")


def track_video(video, out_dir, fitter, detector, cfg: TrackConfig | None = None, *, fps=None, every=None,
                start_s=None, end_s=None, own_start_s=None, own_end_s=None, identity: Identity | None = None,
                overwrite: bool = False, overlay: bool = False, mesh: bool = False, summary: bool = True,
                progress=None, stop_after: int | None = None) -> dict:
    """Track ``video`` into ``out_dir`` (see the module doc); returns the summary written to ``track.json``.

    ``fps``/``every``/``start_s``/``end_s``: frame selection (:class:`flamefit.observe.video.VideoReader`).
    ``own_start_s``/``own_end_s``: only frames in this time range are written (a segment of a parallel run; the
    frames before it are tracked as warm-up history only). ``stop_after``: stop after this many frames were
    pushed (tests of resuming). ``progress(n_selected_so_far)`` is called per frame."""
    from flamefit.observe.video import probe_video, read_video

    cfg = cfg or TrackConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    info = probe_video(video)
    check_selection(video, info, start_s, end_s)
    reused = identity is not None
    t0 = time.perf_counter()
    if identity is None:
        identity, reused = get_identity(video, out_dir, fitter, detector, cfg, start_s=start_s, end_s=end_s,
                                        refit=overwrite)
    identity_s = time.perf_counter() - t0

    def owned(obs) -> bool:
        return (own_start_s is None or obs.time_s >= own_start_s) and (own_end_s is None or obs.time_s < own_end_s)

    writer = FrameWriter(out_dir, fitter, source=str(video), owned=owned)
    tracker = Tracker(fitter, identity, cfg, writer)
    done = set() if overwrite else finished_frames(out_dir)
    counts = {"selected": 0, "already_done": 0, "warmup": 0, "failed": 0}
    t_decode = t_detect = 0.0
    failed: list[int] = []
    read_end_s = end_s
    if own_end_s is not None:  # a segment: its last owned frames are tracked with the frames after them as future
        rate = fps or (info.fps or 25.0) / (every or 1)
        future = (cfg.tail + (cfg.smooth_lag if tracker.smoother is not None else 0)) / rate
        read_end_s = own_end_s + future if end_s is None else min(end_s, own_end_s + future)
    reader = read_video(video, fps=fps, every=every, start_s=start_s, end_s=read_end_s)
    t1 = time.perf_counter()
    try:
        for frame in reader:
            t_decode += time.perf_counter() - t1
            counts["selected"] += 1
            # frames of another segment (this one's warm-up/cool-down) are always tracked here, never read back:
            # a segment's result must not depend on whether its neighbour ran first
            if frame.index in done and owned(FrameObs(frame.index, frame.time_s, None)) \
                    and is_frame_done(out_dir, frame.index):
                params, pts = load_frame(out_dir, frame.index)
                obs = FrameObs(frame.index, frame.time_s, None)
                if pts is not None:
                    setattr(obs, "lmks_68" if len(pts) == 68 else "lmks_dense", pts)
                tracker.push_known(obs, params)
                counts["already_done"] += 1
            else:
                if not owned(FrameObs(frame.index, frame.time_s, None)):
                    counts["warmup"] += 1
                t2 = time.perf_counter()
                obs = detector(frame)
                t_detect += time.perf_counter() - t2
                try:
                    tracker.push(obs)
                except FlamefitError as e:  # a diverged window: its frames are reported, the run goes on
                    failed.extend(o.index for o in tracker.new)
                    tracker.new, tracker.pending = [], []
                    tracker.reset()
                    counts["last_error"] = str(e)
            if progress is not None:
                progress(counts["selected"])
            if stop_after is not None and counts["selected"] >= stop_after:
                return {"stopped_after": counts["selected"], "written": writer.written}
            t1 = time.perf_counter()
        tracker.finish()
    finally:
        if hasattr(reader, "close"):
            reader.close()
    counts["failed"] = len(failed)
    total_s = time.perf_counter() - t_start
    fitted = tracker.stats["fitted"]
    doc = {
        "format": FORMAT,
        "video": info.to_dict(),
        "selection": {"fps": fps, "every": every, "start_s": start_s, "end_s": end_s, "own_start_s": own_start_s,
                      "own_end_s": own_end_s},
        "mode": cfg.mode,
        "frames": {
            "selected": counts["selected"],
            "written_this_run": writer.written,
            "skipped_already_done": counts["already_done"],
            "warmup_only": counts["warmup"],
            "no_face": len(writer.no_face),
            "failed": counts["failed"],
            "done_total": len(finished_frames(out_dir)),
        },
        "no_face_frames": writer.no_face,
        "no_face_times_s": writer.no_face_times,
        "failed_frames": failed,
        "tracker": dict(tracker.stats),
        "identity": {"file": "identity.npz", "reused": reused, "frame_indices": identity.frame_indices,
                     "focal_px": identity.focal_px, "focal_source": identity.focal_source,
                     "fov_deg": float(np.degrees(2 * np.arctan(0.5 * max(identity.image_size) / identity.focal_px))),
                     "fit_s": identity_s},
        "timings": {"total_s": total_s, "decode_s": t_decode, "detect_s": t_detect, "identity_s": identity_s,
                    "write_s": writer.seconds, **tracker.timings,
                    "frames_per_s": (writer.written / total_s) if total_s > 0 else None,
                    "fitted_frames_per_s_excluding_identity":
                        fitted / max(total_s - identity_s, 1e-9) if fitted else None},
        "config": {"track": cfg.to_dict(), "fit": _fit_config_dict(fitter.cfg)},
    }
    if counts.get("last_error"):
        doc["last_error"] = counts["last_error"]
    if mesh:
        doc["mesh"] = write_point_cache(out_dir, fitter, fps or info.fps or 25.0)
    if overlay:
        doc["overlay"] = render_overlay(video, out_dir, fitter, fps=fps, every=every, start_s=start_s, end_s=end_s)
    if summary:
        write_summary(out_dir, doc)
    return doc


def _fit_config_dict(cfg) -> dict:
    from flamefit.fit.config import config_to_dict

    return config_to_dict(cfg)


def render_overlay(video, out_dir, fitter, *, fps=None, every=None, start_s=None, end_s=None,
                   name: str = "overlay.mp4") -> dict:
    """A final pass: input | render | blend for every selected frame (the render is black where no frame was
    written), streamed to an mp4 (atomic)."""
    import torch

    from flamefit.fit.result import make_overlay
    from flamefit.observe.video import VideoWriter, probe_video, read_video

    info = probe_video(video)
    rate = fps or ((info.fps or 25.0) / (every or 1))
    out_dir = Path(out_dir)
    n = 0
    rendered = 0
    if fitter.vt is None:
        return {"file": None, "missing": "the model has no UV layout, so the fit cannot be rendered"}
    with VideoWriter(out_dir / name, rate) as w:
        for frame in read_video(video, fps=fps, every=every, start_s=start_s, end_s=end_s, dtype="float32"):
            img = frame.image
            H, W = img.shape[:2]
            render = np.zeros_like(img)
            alpha = np.zeros((H, W), np.float32)
            if is_frame_done(out_dir, frame.index):
                p, _ = load_frame(out_dir, frame.index)
                p = p.to(fitter.device, fitter.dtype)
                with torch.no_grad():
                    verts, _ = fitter.vertices(p)
                    lit = fitter.render(p, verts, (H, W), antialias=True)
                render = lit.rgb[0].clamp(0, 1).cpu().numpy()
                alpha = lit.alpha[0, ..., 0].cpu().numpy()
                rendered += 1
            w.write(make_overlay(img, render, alpha))
            n += 1
    return {"file": name, "frames": n, "rendered": rendered, "fps": rate}
