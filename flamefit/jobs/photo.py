"""The photo jobs: the workers behind ``flamefit fit`` and ``flamefit detect`` (see :mod:`flamefit.run.worker` for
the protocol) and the fit job's spec helpers (:func:`config_from_dict`, :func:`fitter_from_spec`, also used by the
track and texspace jobs). A spec names a worker by :data:`FIT_WORKER` / :data:`DETECT_WORKER`.

Both are built from the spec alone and write their outputs through :mod:`flamefit.io` as atomic sets with a
completion record. Options (``spec.options``):

- fit: none beyond the spec (assets, config, outputs, device, threads);
- detect: ``select`` ('largest' or a face index), ``mask`` (bool), ``mask_backend``, ``bisenet_weights``,
  ``overlay`` (bool), ``landmarks_in_record`` (bool: put the landmarks into the record, for ``--json``).
"""

from __future__ import annotations

import sys
import time

from flamefit.errors import ConfigError
from flamefit.run.items import Item
from flamefit.run.spec import RunSpec
from flamefit.run.worker import OK, SKIPPED, Record

# the factories a spec names (``RunSpec.worker``)
FIT_WORKER = "flamefit.jobs.photo:FitWorker"
DETECT_WORKER = "flamefit.jobs.photo:DetectWorker"


def config_from_dict(data: dict):
    """A validated FitConfig from the dict a spec carries (the defaults when empty)."""
    from flamefit.fit.config import FitConfig, apply_dict, validate_config

    if not isinstance(data, dict):
        raise ConfigError(f"run spec: config must be a mapping, got {type(data).__name__}")
    cfg = apply_dict(FitConfig(), data)
    validate_config(cfg)
    return cfg


def fitter_from_spec(spec: RunSpec, cfg=None):
    """The worker's :class:`~flamefit.fit.Fitter`, built from the spec alone: its torch threads, its resolved
    asset paths (never the worker's environment) and its config (``cfg``: an already parsed one)."""
    import torch

    from flamefit.fit.api import build_fitter

    if spec.threads is not None and torch.get_num_threads() != spec.threads:
        torch.set_num_threads(spec.threads)
    a = spec.assets
    return build_fitter(a.get("flame"), a.get("texture_space") or "none",
                        cfg if cfg is not None else config_from_dict(spec.config), device=spec.device,
                        landmarks_static=a.get("landmarks_static"), landmarks_dynamic=a.get("landmarks_dynamic"))


def _apply_threads(spec: RunSpec, only_if_imported: bool = False) -> None:
    """torch threads per the spec (``only_if_imported``: leave torch unimported when nothing needed it yet)."""
    if spec.threads is not None and (not only_if_imported or "torch" in sys.modules):
        import torch

        if torch.get_num_threads() != spec.threads:
            torch.set_num_threads(spec.threads)


def _no_face_landmarker() -> str:
    from flamefit.assets import not_found_message

    return "no face_landmarker.task was found when the run started: " + not_found_message("face_landmarker")


class FitWorker:
    """Detect, fit, write ``NAME.npz``/``.json`` (+ meshes/overlay/render as ``spec.outputs`` asks)."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.fitter = None
        self.detector = None
        self.cfg = None
        self.stage_callback = None  # optional (name, stage, i, n) -> None, set by an in-process runner

    def setup(self) -> None:
        self.cfg = config_from_dict(self.spec.config)
        self.fitter = fitter_from_spec(self.spec, self.cfg)
        for why in self.fitter.degraded.values():  # one line per worker; each result's `missing` has it too
            print(f"warning: {self.spec.assets.get('flame')}: {why}", file=sys.stderr, flush=True)
        a = self.spec.assets
        try:
            from flamefit.observe import LandmarkDetector

            # one detector per worker (starting MediaPipe costs ~1 s), with the face_landmarker.task the parent
            # resolved: a worker never searches its own environment for it
            fl = a.get("face_landmarker")
            self.detector = LandmarkDetector(face_landmarker=fl or False,
                                             face_landmarker_missing="" if fl else _no_face_landmarker())
        except Exception:  # noqa: BLE001 - observe() starts its own when this fails
            self.detector = None

    def close(self) -> None:
        if self.detector is not None and hasattr(self.detector, "close"):
            self.detector.close()
            self.detector = None

    def _mesh_arrays(self):
        f = self.fitter
        faces = getattr(f, "faces", None)
        if faces is None:
            faces = f.model.faces
        vt, ft = getattr(f, "vt", None), getattr(f, "ft", None)

        def _np(t):
            return None if t is None else t.detach().cpu().numpy()

        return _np(faces), _np(vt), _np(ft)

    def process(self, item: Item) -> Record:
        from flamefit.fit.api import target_from_input
        from flamefit.fit.result import make_result
        from flamefit.io.results import is_finished, save_result
        from flamefit.observe import observe

        spec = self.spec
        if not spec.overwrite and is_finished(spec.out_dir, item.name, spec.outputs, spec.verify_hashes):
            return Record(item.name, item.source, SKIPPED, message="already finished")
        t0 = time.perf_counter()
        kwargs = {"detector": self.detector} if self.detector is not None else {}
        obs = observe(item.source, source=item.source, **kwargs)
        t_obs = time.perf_counter()
        cb = None
        if self.stage_callback is not None:
            def cb(stage, i, n, _name=item.name):
                self.stage_callback(_name, stage, i, n)
        raw = self.fitter.fit(target_from_input(obs), callback=cb)
        t_fit = time.perf_counter()
        result = make_result(self.fitter, raw)
        result.name = item.name
        t_result = time.perf_counter()
        # the phases of the whole pipeline (the fit's own stages are in result.timings); they go into the json
        # too, except save_s (the json is written during the save)
        stage_s = {k: v for k, v in (getattr(result, "timings", None) or {}).items() if isinstance(v, (int, float))}
        result.timings = {**stage_s, "observe_s": t_obs - t0, "fit_s": t_fit - t_obs, "result_s": t_result - t_fit}
        faces, vt, ft = self._mesh_arrays()
        paths = save_result(result, spec.out_dir, faces, vt, ft, config=spec.config, name=item.name,
                            outputs=spec.outputs, overwrite=spec.overwrite, source=item.source)
        t_end = time.perf_counter()
        seconds = t_end - t0
        if paths is None:
            return Record(item.name, item.source, SKIPPED, message="finished by another run meanwhile",
                          seconds=seconds)
        timings = {**result.timings, "save_s": t_end - t_result, "total_s": seconds}
        message = f"{seconds:.1f} s; fit {t_fit - t_obs:.1f} s"
        if obs.faces_found > 1:  # never one of several faces without saying so
            message += (f"; {obs.faces_found} faces found, fitted the largest (#{obs.face_index} counted from the "
                        "left, 0-based)")
        return Record(item.name, item.source, OK, message=message,
                      seconds=seconds, outputs=sorted(str(p) for p in paths.values()), data={"timings_s": timings})


class DetectWorker:
    """Detect 478 + 68 landmarks and the skin mask; write ``NAME.npz`` (+ ``NAME_overlay.png``)."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.detector = None

    def setup(self) -> None:
        from flamefit.observe import LandmarkDetector

        _apply_threads(self.spec, only_if_imported=True)  # detection does not need torch (BiSeNet masks do)
        o = self.spec.options
        fl = o.get("face_landmarker")
        self.detector = LandmarkDetector(face_landmarker=fl or False,
                                         face_landmarker_missing=o.get("face_landmarker_missing")
                                         or ("" if fl else _no_face_landmarker()))

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()
            self.detector = None

    def process(self, item: Item) -> Record:
        import numpy as np

        from flamefit.io.detections import save_detection
        from flamefit.observe import observe

        o = self.spec.options
        t0 = time.perf_counter()
        obs = observe(item.source, select=o.get("select", "largest"), mask=o.get("mask", True),
                      mask_backend=o.get("mask_backend", "landmarks"), bisenet_weights=o.get("bisenet_weights"),
                      source=item.source, detector=self.detector)
        data = {"confidence": round(float(obs.confidence), 4), "image_size": [int(v) for v in obs.image_size],
                "bbox": [round(float(v), 2) for v in obs.bbox]}
        if getattr(obs, "missing", None):  # fields left out of the npz, and why
            data["missing"] = dict(obs.missing)
        if o.get("landmarks_in_record"):
            data["lmks_dense"] = np.round(obs.lmks_dense.astype(np.float64), 3).tolist()
            data["lmks_68"] = np.round(obs.lmks_68.astype(np.float64), 3).tolist()
        outputs: list[str] = []
        if self.spec.out_dir is not None:
            paths = save_detection(obs, self.spec.out_dir, item.name, overlay=o.get("overlay", True),
                                   mask=o.get("mask", True), overwrite=self.spec.overwrite, source=item.source)
            outputs = sorted(str(p) for p in (paths or {}).values())
            for key, suffix in (("npz", ".npz"), ("overlay", "_overlay.png")):
                hit = [p for p in outputs if p.endswith(item.name + suffix)]
                if hit:
                    data[key] = hit[0]
        where = f" -> {data['npz']}" if "npz" in data else ""
        return Record(item.name, item.source, OK, message=f"478 points, confidence {obs.confidence:.2f}{where}",
                      seconds=time.perf_counter() - t0, outputs=outputs, data=data)
