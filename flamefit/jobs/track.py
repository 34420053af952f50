"""The track job: a long video tracked as overlapping segments on many workers (local pool or Ray).

The segments are planned by :func:`flamefit.track.segments.plan_segments` (each owns its frames and starts a
warm-up earlier). The identity is fitted once, by :func:`track_parallel`, and read by every segment from
``DIR/identity.npz``.

Each segment is one run item (``segment_0003``) processed by :class:`TrackWorker` (:data:`WORKER`); its completion
record goes to ``DIR/segments/`` so a rerun skips finished segments, and inside a segment finished frames are
skipped as well.
"""

from __future__ import annotations

import json
from pathlib import Path

from flamefit.errors import FlamefitError
from flamefit.run.items import Item
from flamefit.run.worker import OK, Record

WORKER = "flamefit.jobs.track:TrackWorker"


def segment_items(video, segments: list[dict]) -> list[Item]:
    return [Item(f"segment_{s['index']:04d}", str(video), dict(s)) for s in segments]


class TrackWorker:
    """Run-layer worker for one segment (see the module doc). ``spec.options``: ``track_dir``, ``track`` (the
    :class:`TrackConfig` as a dict), ``selection`` (fps/every), ``blendshapes``, ``landmarks_npy`` (given
    landmarks instead of a detector, for tests and benchmarks)."""

    def __init__(self, spec):
        self.spec = spec
        self.fitter = None

    def setup(self) -> None:
        from flamefit.jobs.photo import fitter_from_spec

        self.fitter = fitter_from_spec(self.spec)

    def _detector(self):
        import numpy as np

        from flamefit.track.video import GivenLandmarks, MediaPipeFrames

        opts = self.spec.options
        if opts.get("landmarks_npy"):
            return GivenLandmarks(np.load(opts["landmarks_npy"]))
        return MediaPipeFrames(blendshapes=bool(opts.get("blendshapes", True)))

    def process(self, item: Item) -> Record:
        from flamefit.io.outputs import OutputSet
        from flamefit.track.outputs import load_identity
        from flamefit.track.tracker import TrackConfig
        from flamefit.track.video import track_video

        opts = self.spec.options
        track_dir = Path(opts["track_dir"])
        identity = load_identity(track_dir)
        if identity is None:
            raise FlamefitError(f"{track_dir / 'identity.npz'} is missing: the identity is fitted before the "
                                "segments; rerun `flamefit track`")
        cfg = TrackConfig(**opts.get("track", {}))
        sel = opts.get("selection", {})
        m = item.meta
        detector = self._detector()
        try:
            doc = track_video(item.source, track_dir, self.fitter, detector, cfg, fps=sel.get("fps"),
                              every=sel.get("every"), start_s=m.get("start_s"), own_start_s=m.get("own_start_s"),
                              own_end_s=m.get("own_end_s"), identity=identity, summary=False)
        finally:
            detector.close()
        data = {"frames": doc["frames"], "no_face_frames": doc["no_face_frames"],
                "failed_frames": doc["failed_frames"], "tracker": doc["tracker"], "timings": doc["timings"],
                "segment": dict(m)}
        with OutputSet(self.spec.out_dir, item.name, kind="track-segment", source=item.source) as outs:
            outs.write_text(f"{item.name}.json", json.dumps(data, indent=1, default=str))
            outs.publish(outputs=["json"])
        return Record(item.name, item.source, OK, message=f"{doc['frames']['written_this_run']} frames",
                      outputs=[f"{item.name}.json"], data=data)


def track_parallel(video, out_dir, fitter, detector, cfg, spec, executor, *, fps=None, every=None, start_s=None,
                   end_s=None, segment_s: float = 20.0, warmup_s: float = 1.0, overwrite: bool = False,
                   reporter=None) -> dict:
    """Identity here (once), then the segments on ``executor`` (a :mod:`flamefit.run.executors` executor) with
    ``spec`` (a :class:`flamefit.run.spec.RunSpec` whose worker/out_dir/options this function fills in); returns the
    merged summary (also written to ``track.json``)."""
    import dataclasses
    import time

    from flamefit.observe.video import probe_video
    from flamefit.run.runner import run_items
    from flamefit.track.outputs import finished_frames, write_summary
    from flamefit.track.segments import plan_segments
    from flamefit.track.video import FORMAT, get_identity

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = probe_video(video)
    identity, reused = get_identity(video, out_dir, fitter, detector, cfg, start_s=start_s, end_s=end_s,
                                    refit=overwrite)
    identity_s = time.perf_counter() - t0
    if cfg.smooth == "zero-lag" and cfg.temporal_weight > 0:
        # the smoother carries its state (depth and its rate) for a long time: a segment that starts closer to its
        # first owned frame steps there against its neighbour (measured 0.42 px at 8 warm-up frames, 0.26 at 20)
        rate = fps or (info.fps or 25.0) / (every or 1)
        warmup_s = max(warmup_s, 1.5 * cfg.smooth_lag / rate)
    segments = plan_segments(info.duration_s or 0.0, segment_s, warmup_s, start_s, end_s)
    spec = dataclasses.replace(spec, worker=WORKER, out_dir=str(out_dir / "segments"), overwrite=overwrite,
                               options={**spec.options, "track_dir": str(out_dir), "track": cfg.to_dict(),
                                        "selection": {"fps": fps, "every": every}})
    summary = run_items(spec, segment_items(video, segments), executor=executor, reporter=reporter)
    no_face, failed, written = [], [], 0
    for rec in summary.records:
        d = rec.data or {}
        no_face += d.get("no_face_frames", [])
        failed += d.get("failed_frames", [])
        written += d.get("frames", {}).get("written_this_run", 0)
    doc = {
        "format": FORMAT, "video": info.to_dict(),
        "selection": {"fps": fps, "every": every, "start_s": start_s, "end_s": end_s},
        "mode": cfg.mode,
        "segments": {"count": len(segments), "segment_s": segment_s, "warmup_s": warmup_s,
                     "ok": summary.n_ok, "skipped": summary.n_skipped, "failed": summary.n_failed,
                     "failures": [{"segment": r.name, "message": r.message} for r in summary.failed]},
        "frames": {"written_this_run": written, "no_face": len(no_face), "failed": len(failed),
                   "done_total": len(finished_frames(out_dir))},
        "no_face_frames": sorted(no_face), "failed_frames": sorted(failed),
        "identity": {"file": "identity.npz", "reused": reused, "frame_indices": identity.frame_indices,
                     "focal_px": identity.focal_px, "fit_s": identity_s},
        "timings": {"total_s": time.perf_counter() - t0, "identity_s": identity_s},
        "config": {"track": cfg.to_dict()},
    }
    write_summary(out_dir, doc)
    return doc
