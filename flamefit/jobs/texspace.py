"""The texspace job: the build's unwrap stage on the run layer, and the build itself (its driver).

:class:`UnwrapWorker` (``spec.worker =`` :data:`WORKER`) fits each photo with the spec's texture space (None: free
albedo) and config, unwraps it (:func:`flamefit.texspace.pipeline.fit_and_unwrap`) and writes ``NAME.npz`` into
``spec.out_dir`` as one output set with a completion record, so a rerun skips it and a killed run loses only the
photos in flight. ``spec.options``: ``size`` (texels per side), ``detections`` (a folder of ``NAME.npz``
landmarks/masks used instead of detecting, e.g. ``flamefit detect`` outputs).

:class:`UnwrapJob` (the photos, the spec, the executor) runs that worker over the photos for one iteration
(:meth:`UnwrapJob.run`), and :func:`build` drives the whole pipeline: per iteration the unwrap stage here, then the
whole-set stages of :mod:`flamefit.texspace.pipeline` (train, inpaint, PCA). The pipeline module knows nothing of
the run layer, and nothing is injected into it: this module calls both.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flamefit.run.items import Item
from flamefit.run.spec import RunSpec
from flamefit.run.worker import FAILED, OK, SKIPPED, Record
from flamefit.texspace.pipeline import BuildConfig, BuildReport, Iteration

WORKER = "flamefit.jobs.texspace:UnwrapWorker"


class UnwrapWorker:
    """Fit + unwrap one photo per item (see the module doc)."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.fitter = None
        self.detector = None
        self.uv = None

    def setup(self) -> None:
        from flamefit.jobs.photo import fitter_from_spec
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


@dataclasses.dataclass
class UnwrapJob:
    """The unwrap stage of a build: :class:`UnwrapWorker` over ``items`` on the executors ``make_executor()``
    returns (one per iteration). ``spec``: assets, config, device, threads, retries (worker, out_dir and options
    are set per iteration); ``size``: texels per side; ``detections``: see the module doc."""

    items: Sequence[Item]
    spec: RunSpec
    make_executor: Callable[[], object]
    reporter: object = None
    size: int = 256
    detections: str | None = None

    def run(self, it: Iteration, space: str | None) -> dict:
        """Unwrap every photo into the iteration's ``unwrapped/`` folder, fitted with ``space`` as the texture
        space; records the stage (ok / skipped / failed photos, seconds per photo, peak memory) and returns the
        record (the stage is skipped when its record holds for the same photos and the same space)."""
        from flamefit.run.runner import run_items
        from flamefit.texspace.pipeline import finished_names, read_stage, write_stage

        names = [x.name for x in self.items]
        spec = self.spec
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
            options={**spec.options, "size": int(self.size), "detections": self.detections})
        summary = run_items(run_spec, list(self.items), executor=self.make_executor(), reporter=self.reporter)
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


# -------------------------------------------------------------------------------------------------- the build


def run_stages(it: Iteration, cfg: BuildConfig, unwrap: UnwrapJob, space: str | None, *, start_space: str | None,
               flame: str | None, device="cpu", log: Callable[[str], None] | None = None
               ) -> dict:
    """One iteration: unwrap (``unwrap.run(it, space)``: on the run layer), train, inpaint, PCA."""
    from flamefit.texspace.pipeline import inpaint_stage, pca_stage, train_stage

    log = log or (lambda _m: None)
    out = {"iteration": it.index, "fitted_with": space or "free albedo"}

    def note(stage: str, doc: dict) -> dict:
        how = "already finished, skipped" if doc.get("skipped") else f"{doc.get('seconds', 0.0):.1f} s"
        log(f"iteration {it.index}: {stage}: {how}")
        return doc

    log(f"iteration {it.index}: unwrap (fit with {space or 'a free albedo'}) ...")
    out["unwrap"] = note("unwrap", unwrap.run(it, space))
    failed = out["unwrap"].get("failed")
    if failed and not out["unwrap"].get("n_ok"):  # nothing to build from: stop here, with the photos' own code
        from flamefit.errors import items_failed

        raise items_failed([(f["source"], f["message"], f.get("exit_code")) for f in failed],
                           len(out["unwrap"].get("items") or failed), "photos", tail=" (listed above)")
    if cfg.fill == "network":
        out["train-inpaint"] = note(f"train-inpaint ({cfg.inpaint_steps} steps)", train_stage(it, cfg, device=device))
    out["inpaint"] = note(f"inpaint ({cfg.fill})", inpaint_stage(it, cfg, start_space=start_space, device=device))
    out["pca"] = note(f"pca ({cfg.components} components)", pca_stage(it, cfg, flame=flame))
    return out


def build(work: str | Path, out: str | Path, cfg: BuildConfig, unwrap: UnwrapJob, *, start_space: str | None,
          flame: str | None, device="cpu", log: Callable[[str], None] | None = None
          ) -> BuildReport:
    """The whole pipeline, ``cfg.iterations`` times, resumable (see the module doc); the last iteration's space is
    copied to ``out`` (+ ``OUT_preview.png`` and ``OUT.json``: variance explained, failures, stage times).
    ``unwrap``: the photos and how to run them (:class:`UnwrapJob`)."""
    import shutil

    from flamefit._files import atomic_path
    from flamefit.texspace.pipeline import open_work, read_stage, resolve_layout

    work, out = Path(work), Path(out)
    cfg.validate()
    layout = None if (work / "build.json").is_file() else resolve_layout(flame, start_space)
    cfg, _ = open_work(work, cfg, start_space, layout, check_start=True)
    report = BuildReport(out=str(out), work=str(work))
    space = start_space
    for k in range(cfg.iterations):
        it = Iteration(work, k)
        doc = run_stages(it, cfg, unwrap, space, start_space=start_space, flame=flame, device=device, log=log)
        report.iterations.append(_brief(doc))
        space = str(it.space)
    last = Iteration(work, cfg.iterations - 1)
    report.failed = list(read_stage(last, "unwrap").get("failed", [])) if read_stage(last, "unwrap") else []
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".npz") as tmp:
        shutil.copyfile(last.space, tmp)
    prev = out.with_name(out.stem + "_preview.png")
    if last.preview.is_file():
        shutil.copyfile(last.preview, prev)
    space_doc = json.loads(last.space_json.read_text(encoding="utf-8"))
    summary = {"space": str(out), "preview": str(prev), "work": str(work), "config": dataclasses.asdict(cfg),
               "start_space": start_space, **{k: space_doc[k] for k in ("n_maps", "components",
                                                                       "explained_variance_ratio",
                                                                       "cumulative_explained_variance")},
               "failed": report.failed, "iterations": report.iterations}
    _atomic_text(out.with_suffix(".json"), json.dumps(summary, indent=1))
    return report


def _brief(doc: dict) -> dict:
    """A stage record without the long name lists (for reports)."""
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out[k] = {kk: vv for kk, vv in v.items() if kk not in ("maps", "ok", "items")}
        else:
            out[k] = v
    return out


def _atomic_text(path: Path, text: str) -> None:
    from flamefit._files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
