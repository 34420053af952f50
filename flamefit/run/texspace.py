"""The texture-space builder on the run layer: the unwrap stage's worker and the runner that the pipeline
(:func:`flamefit.texspace.pipeline.build`) calls for each iteration.

:class:`UnwrapWorker` (``spec.worker = "flamefit.run.texspace:UnwrapWorker"``) fits each photo with the spec's
texture space (None: free albedo) and config, unwraps it (:func:`flamefit.texspace.pipeline.fit_and_unwrap`) and
writes ``NAME.npz`` into ``spec.out_dir`` as one output set with a completion record, so a rerun skips it and a
killed run loses only the photos in flight. ``spec.options``: ``size`` (texels per side), ``detections`` (a folder
of ``NAME.npz`` landmarks/masks used instead of detecting, e.g. ``flamefit detect`` outputs).

This lives in ``run`` (not ``texspace``) because the house plan keeps ``texspace`` below the run layer.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from flamefit.run.items import Item
from flamefit.run.spec import RunSpec, fitter_from_spec
from flamefit.run.worker import FAILED, OK, SKIPPED, Record

WORKER = "flamefit.run.texspace:UnwrapWorker"


class UnwrapWorker:
    """Fit + unwrap one photo per item (see the module doc)."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.fitter = None
        self.detector = None
        self.uv = None

    def setup(self) -> None:
        from flamefit.render.bake import rasterize_uv

        self.fitter = fitter_from_spec(self.spec)
        size = int(self.spec.options.get("size", 256))
        if self.fitter.vt is not None:
            self.uv = rasterize_uv(self.fitter.vt, self.fitter.ft, size)

    def _detector(self):
        if self.detector is None:
            from flamefit.observe import LandmarkDetector

            self.detector = LandmarkDetector()  # started once per worker, on the first photo that needs it
        return self.detector

    def close(self) -> None:
        if self.detector is not None and hasattr(self.detector, "close"):
            self.detector.close()
            self.detector = None

    def process(self, item: Item) -> Record:
        import json
        from pathlib import Path

        from flamefit.io.outputs import OutputSet, is_finished
        from flamefit.texspace.pipeline import fit_and_unwrap, load_target, peak_rss_mb
        from flamefit.texspace.store import save_unwrapped

        spec = self.spec
        if not spec.overwrite and is_finished(spec.out_dir, item.name, ["npz"]):
            return Record(item.name, item.source, SKIPPED, message="already unwrapped")
        t0 = time.perf_counter()
        opts = spec.options
        det = opts.get("detections")
        needs_detector = not (det and (Path(det) / f"{item.name}.npz").is_file())
        target = load_target(item.source, item.name, det, self._detector() if needs_detector else None)
        arrays, meta = fit_and_unwrap(self.fitter, target, size=int(opts.get("size", 256)), uv=self.uv)
        meta.update({"source": item.source, "texture_space": spec.assets.get("texture_space")})
        with OutputSet(spec.out_dir, item.name, kind="texspace-unwrap", source=item.source,
                       overwrite=spec.overwrite) as outs:
            save_unwrapped(outs.path(f"{item.name}.npz"), meta=meta, **arrays)
            outs.write_text(f"{item.name}.json", json.dumps(meta, indent=1))
            published = outs.publish(outputs=["npz"])
        seconds = time.perf_counter() - t0
        if not published:
            return Record(item.name, item.source, SKIPPED, message="unwrapped by another run meanwhile",
                          seconds=seconds)
        return Record(item.name, item.source, OK, seconds=seconds,
                      message=f"{seconds:.1f} s (fit {meta['fit_s']:.1f} s); "
                              f"{100 * meta['known_fraction_of_layout']:.0f}% of the layout seen",
                      outputs=[f"{item.name}.npz", f"{item.name}.json"],
                      data={"fit_s": meta["fit_s"], "unwrap_s": meta["unwrap_s"],
                            "worker_peak_rss_mb": round(peak_rss_mb(), 1)})


def _stamp(space: str | None) -> list[int] | None:
    """(size, mtime_ns) of the space file: changes when an earlier iteration rebuilds it."""
    import os

    if not space:
        return None
    try:
        st = os.stat(space)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def unwrap_runner(items: Sequence[Item], spec: RunSpec, make_executor: Callable[[], object], *, reporter=None,
                  size: int = 256, detections: str | None = None) -> Callable:
    """The ``unwrap(iteration, space)`` callable of :func:`flamefit.texspace.pipeline.build`: runs
    :class:`UnwrapWorker` over ``items`` into the iteration's ``unwrapped/`` folder with ``space`` as the texture
    space, records the stage (ok / skipped / failed photos, seconds per photo, peak memory) and returns the
    record. ``spec``: assets, config, device, threads, retries (worker, out_dir and options are set here)."""
    from flamefit.texspace.pipeline import finished_names, read_stage, write_stage

    names = [it.name for it in items]

    def unwrap(it, space: str | None) -> dict:
        from flamefit.run.runner import run_items

        rec = read_stage(it, "unwrap")
        stamp = _stamp(space)
        # maps fitted with another version of the space (the previous iteration rebuilt): every photo is refitted
        stale = bool(rec) and rec.get("texture_space_stamp", stamp) != stamp
        if (rec and not stale and rec.get("items") == names and not rec.get("failed")
                and finished_names(it.unwrapped) == sorted(rec.get("ok", []))):
            return {**rec, "skipped": True}
        run_spec = dataclasses.replace(
            spec, worker=WORKER, out_dir=str(it.unwrapped), outputs=["npz"], overwrite=spec.overwrite or stale,
            assets={**spec.assets, "texture_space": str(space) if space else None},
            options={**spec.options, "size": int(size), "detections": detections})
        summary = run_items(run_spec, list(items), executor=make_executor(), reporter=reporter)
        done = [r for r in summary.records if r.status in (OK, SKIPPED)]
        fitted = [r for r in summary.records if r.status == OK]
        failed = [{"name": r.name, "source": r.source, "message": r.message, "exit_code": r.exit_code}
                  for r in summary.records if r.status == FAILED]
        return write_stage(it, "unwrap", {
            "items": names, "ok": sorted(r.name for r in done), "n_ok": len(done),
            "n_fitted_this_run": len(fitted), "n_skipped": summary.n_skipped, "n_failed": len(failed),
            "failed": failed, "texture_space": str(space) if space else None, "texture_space_stamp": stamp,
            "seconds": round(summary.seconds, 3),
            "seconds_per_photo": (round(sum(r.seconds for r in fitted) / len(fitted), 3) if fitted else None),
            "worker_peak_rss_mb": max((r.data.get("worker_peak_rss_mb", 0.0) for r in fitted), default=None),
            "fit_seconds_per_photo": (round(sum(r.data.get("fit_s", 0.0) for r in fitted) / len(fitted), 3)
                                      if fitted else None)})

    return unwrap
