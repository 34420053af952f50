"""The texture-space building pipeline (issue 11): fit -> unwrap -> train the inpainter -> inpaint -> PCA, with
resumable stages in a work folder, repeated ``iterations`` times (each refits with the space the previous one built).

Work folder (every file written atomically; a stage whose record exists for the same inputs is skipped on rerun,
an interrupted stage redoes only what is missing)::

    WORK/build.json                 the build settings (map size, fill, components, start space, layout source)
    WORK/layout.npz                 the UV layout of every map (vt, ft): the start space's, else the model's
    WORK/iterK/unwrapped/NAME.npz   one per photo (+ NAME.done.json, the run layer's completion record):
                                    albedo, weight, visible, uv_mask, meta (see flamefit.texspace.store)
    WORK/iterK/inpaint.pt           the inpainting network checkpoint (resumed when interrupted)
    WORK/iterK/completed/NAME.npz   albedo after filling the unknown texels (+ uv_mask)
    WORK/iterK/space.npz            the PCA space (FLAME_texture.npz layout) + space.json + preview.png
    WORK/iterK/stages/STAGE.json    what each finished stage did: inputs, seconds, peak memory, failures

Iteration K fits with ``WORK/iter{K-1}/space.npz`` (iteration 0 with the start space, or a free albedo).

The per-photo part (:func:`fit_and_unwrap`) runs in run-layer workers (the texspace job,
:mod:`flamefit.jobs.texspace`); the stages after it (:func:`train_stage`, :func:`inpaint_stage`, :func:`pca_stage`)
run here on the whole set. The job's ``build`` strings them together (this module does not depend on the run
layer).

Completion default, from the measured comparison (``flamefit bench texspace`` (b): PSNR on held-out strokes in the
unwrapped maps of 4 fitted renders that the network never saw; network trained on 16 other photos' maps, 2026-11-29,
1 thread, load 3-5): OpenCV Telea 25.23 dB, membrane (push-pull + Jacobi) 24.42, the gated-conv network 23.92 after
100 steps and 23.87 after 250, mirror-then-fills 20.2-20.8, the mean 20.77. On view-shaped holes in the same maps
(texels another photo did not see) OpenCV also leads: 20.13 dB vs network 19.63, membrane 19.59, mirror-then-membrane
17.63 (and 24.82 / 22.85 / 22.50 / 20.56 in the default bench's 256 px renders). H's measurement on ideal maps
(true geometry and light, no fit: ``flamefit.texspace.measure``) favours mirror-then-membrane; on maps unwrapped
from fits, whose two halves carry different de-lighting errors, mirroring loses 2-4 dB. So the default is
``opencv_telea``; ``fill='network'`` trains and uses the network (the method as published) and stays available.

What limits the recovery of a known space (``flamefit bench texspace`` (a), 16 rendered photos, stand-in start, RMS
0..255 of 30 held-out albedos on the face-skin texels after least squares onto mean + 10 components; 2026-11-29,
1 thread, load 7-11): the fit, not the PCA. Unwrapped with the TRUE geometry and light the seen texels are off by
13 RMS; with the true geometry but the fitted light by 22; with the fit by 24: the fitted SH light (its band-2
terms about twice the true ones) absorbs low-frequency albedo, and no later stage can undo that (re-estimating each
light against the set's space, or projecting the SH patterns out of the maps, both measured worse: a smooth albedo
pattern and an SH shading pattern look alike in every pose). Each fit also picks its own albedo-vs-light scale
(0.85..1.23 of the truth). Hence the defaults: ``min_weight`` 0.3 (grazing texels carry the largest errors: 18.1
-> 14.1), the ``light_dc`` gauge (14.1 -> 13.5), ``pca='completed'`` (EM-PCA over the seen texels, ``'missing'``,
scored 13.8 here: the fills are not what hurts), and a second iteration helps a little (13.5 -> 12.7; real photos,
12-photo build, 3 held-out: median skin PSNR 26.86 -> 26.89 dB, i.e. none). The true space scores 0.13, the
stand-in 21.2 (12.9 with all its 50 components); true albedos with the fits' holes, filled and PCA'd, 3.5.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from flamefit._files import atomic_path
from flamefit.errors import ConfigError, InputImageError, ModelFileError

STAGES = ("unwrap", "train-inpaint", "inpaint", "pca")
FILLS = ("opencv_telea", "network", "membrane", "mirror_then_membrane", "mirror_then_opencv",
         "mirror_then_start_space")
DEFAULT_FILL = "opencv_telea"  # the best on held-out strokes (see the module doc)
GAUGES = ("light_dc", "none")
PCA_METHODS = ("missing", "completed")
BUILD_FORMAT = "flamefit-texspace-build/1"


@dataclass
class BuildConfig:
    """Settings of a build (saved in ``WORK/build.json``; the map size and layout cannot change in one folder).

    components: PCA components kept (at most maps - 1); iterations: fit -> ... -> PCA rounds; size: texels per map
    side (multiple of 4); fill: how unknown texels are completed (:data:`FILLS`); min_weight: texels with a lower
    unwrap weight (visibility x view-angle cosine x skin mask) count as unknown (0.3: grazing texels carry the
    largest registration and shading errors; recovery bench, 16 photos, EM-PCA + gauge, k = 10: RMS 13.8 with 0.3
    vs 15.5 with 0.05; real photos, 139-photo build, PCA-only fits of 4 held-out ones: within 0.3 dB either way);
    inpaint_*: the network's training (steps, batch, crop, width); min_coverage: the
    PCA region is the layout's texels that at least this fraction of the photos saw (elsewhere the space is the
    region's mean colour, no variation; default 0 = the whole layout: on 30 real photos, 4 held-out ones, the median
    skin PSNR of PCA-only fits was 28.75 dB with 0, 28.71 with 0.1, 28.39 with 0.3); gauge: the albedo-vs-light
    gauge of the maps (:func:`gauge_gains`); pca: 'missing' = EM-PCA over the texels each photo saw (the completed
    maps only start it, :func:`flamefit.texspace.pca.fit_pca_missing`, ``em_iters`` rounds) or 'completed' = plain
    PCA of the completed maps; seed: strokes and network init."""

    components: int = 50
    iterations: int = 1
    size: int = 256
    fill: str = DEFAULT_FILL
    min_weight: float = 0.3
    inpaint_steps: int = 600
    inpaint_batch: int = 4
    inpaint_crop: int | None = 128
    inpaint_channels: int = 16
    min_coverage: float = 0.0
    gauge: str = "light_dc"
    pca: str = "completed"
    em_iters: int = 10
    seed: int = 0

    def validate(self) -> None:
        bad = []
        if self.components < 1:
            bad.append(f"components {self.components} (need >= 1)")
        if not 1 <= self.iterations <= 100:
            bad.append(f"iterations {self.iterations} (need 1..100)")
        if self.size < 16 or self.size % 4:
            bad.append(f"size {self.size} (need a multiple of 4, >= 16)")
        if self.fill not in FILLS:
            bad.append(f"fill {self.fill!r} (one of {', '.join(FILLS)})")
        if self.gauge not in GAUGES:
            bad.append(f"gauge {self.gauge!r} (one of {', '.join(GAUGES)})")
        if self.pca not in PCA_METHODS:
            bad.append(f"pca {self.pca!r} (one of {', '.join(PCA_METHODS)})")
        if not 0 <= self.em_iters <= 1000:
            bad.append(f"em_iters {self.em_iters} (need 0..1000)")
        if not 0.0 <= self.min_coverage <= 1.0:
            bad.append(f"min_coverage {self.min_coverage} (need 0..1)")
        if not 0.0 <= self.min_weight < 1.0:
            bad.append(f"min_weight {self.min_weight} (need 0 <= w < 1)")
        if self.inpaint_steps < 0 or self.inpaint_batch < 1 or self.inpaint_channels < 1:
            bad.append("inpaint steps/batch/channels (need >= 0 / >= 1 / >= 1)")
        if self.inpaint_crop is not None and (self.inpaint_crop < 8 or self.inpaint_crop % 4):
            bad.append(f"inpaint_crop {self.inpaint_crop} (a multiple of 4, >= 8, or none)")
        if bad:
            raise ConfigError("texture-space build: invalid " + "; ".join(bad))


# ------------------------------------------------------------------------------------------- the work folder


@dataclass
class Iteration:
    """Paths of one iteration's stages in the work folder."""

    work: Path
    index: int

    @property
    def root(self) -> Path:
        return self.work / f"iter{self.index}"

    @property
    def unwrapped(self) -> Path:
        return self.root / "unwrapped"

    @property
    def completed(self) -> Path:
        return self.root / "completed"

    @property
    def checkpoint(self) -> Path:
        return self.root / "inpaint.pt"

    @property
    def space(self) -> Path:
        return self.root / "space.npz"

    @property
    def space_json(self) -> Path:
        return self.root / "space.json"

    @property
    def preview(self) -> Path:
        return self.root / "preview.png"

    def stage_path(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def previous_space(self) -> Path | None:
        """The space this iteration fits with when it is not the first."""
        return None if self.index == 0 else Iteration(self.work, self.index - 1).space


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _atomic_npz(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB: ``VmHWM`` from /proc (resettable, see
    :func:`flamefit.bench.track_metrics.reset_peak_rss`) where available, else ``resource.getrusage`` (the peak
    over the process lifetime)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def read_stage(it: Iteration, stage: str) -> dict | None:
    try:
        return json.loads(it.stage_path(stage).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_stage(it: Iteration, stage: str, doc: dict) -> dict:
    doc = {"stage": stage, "iteration": it.index, "peak_rss_mb": round(peak_rss_mb(), 1),
           "threads": torch.get_num_threads(), **doc}
    _atomic_text(it.stage_path(stage), json.dumps(doc, indent=1))
    return doc


def open_work(work: str | Path, cfg: BuildConfig | None = None, start_space: str | None = None,
              layout: tuple[np.ndarray, np.ndarray, str] | None = None, *, check_start: bool = False
              ) -> tuple[BuildConfig, dict]:
    """Create or reopen a work folder. A new folder needs ``cfg`` and ``layout`` (vt, ft, source); an existing one
    keeps its map size and layout (a different ``cfg.size``, or with ``check_start`` a different start space, is an
    error: use a new folder), and
    takes the other settings from ``cfg`` when given. Returns (the config in force, build.json as a dict)."""
    work = Path(work)
    path = work / "build.json"
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            saved = BuildConfig(**doc["config"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{path} is damaged ({exc}); delete the work folder {work} or use another") from exc
        if cfg is not None:
            if cfg.size != saved.size:
                raise ConfigError(f"work folder {work} holds {saved.size}^2 maps, this build asks for {cfg.size}^2; "
                                  "use another --work folder")
            if check_start and doc.get("start_space") != start_space:
                raise ConfigError(f"work folder {work} was started from {doc.get('start_space') or 'a free albedo'},"
                                  f" this build from {start_space or 'a free albedo'}; use another --work folder")
            saved = cfg
            doc["config"] = asdict(cfg)
            _atomic_text(path, json.dumps(doc, indent=1))
        if not (work / "layout.npz").is_file():
            raise ModelFileError(f"{work / 'layout.npz'} is missing; delete the work folder {work} or use another")
        return saved, doc
    if cfg is None or layout is None:
        raise ConfigError(f"{work} is not a texture-space work folder (no build.json); run `flamefit texspace build` "
                          "or `flamefit texspace unwrap` with this --work first")
    cfg.validate()
    vt, ft, source = layout
    _atomic_npz(work / "layout.npz", {"vt": np.asarray(vt, np.float64), "ft": np.asarray(ft, np.int64)})
    doc = {"format": BUILD_FORMAT, "config": asdict(cfg), "start_space": start_space, "layout_source": source}
    _atomic_text(path, json.dumps(doc, indent=1))
    return cfg, doc


def read_layout(work: str | Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(work) / "layout.npz") as d:
        return d["vt"], d["ft"]


def resolve_layout(flame: str | None, start_space: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The UV layout of the maps: the start space's ``vt``/``ft`` if it has them, else the model's (its own UVs,
    a UV file, or the atlas flamefit generates for the mesh)."""
    if start_space:
        from flamefit.model.texture_space import load_texture_space

        ts = load_texture_space(start_space, n_components=0)
        if ts.vt is not None:
            return ts.vt.double().numpy(), ts.ft.numpy(), f"texture space {start_space}"
    from flamefit.assets import resolve_asset
    from flamefit.model.flame import load_flame

    model = load_flame(resolve_asset("flame", flame))
    uv = model.uv
    return uv.vt.double().numpy(), uv.ft.numpy(), f"model ({getattr(uv, 'source', 'uv')})"


# ------------------------------------------------------------------------------------------ per photo: unwrap


def fit_and_unwrap(fitter, target, *, size: int, uv=None) -> tuple[dict[str, np.ndarray], dict]:
    """Fit one photo (``fitter``: texture-space code + shared SH light + texel offset, as configured) and unwrap
    it: the photo baked into the fitter's UV layout, divided by the fitted shading. -> (arrays for
    :func:`flamefit.texspace.store.save_unwrapped`, meta). ``uv``: a precomputed
    :func:`flamefit.render.bake.rasterize_uv` of the layout at ``size``."""
    from flamefit.fit.crop import params_to_original
    from flamefit.texspace.unwrap import unwrap_albedo

    if fitter.vt is None:
        raise ConfigError("the fitter has no UV layout: unwrapping needs one (a texture space with vt/ft, or the "
                          "model's)")
    t0 = time.perf_counter()
    raw = fitter.fit(target)
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    with torch.no_grad():
        p = params_to_original(raw.params, raw.crop)
        verts, _ = fitter.vertices(p)
        from flamefit.model.lbs import axis_angle_to_matrix

        R = axis_angle_to_matrix(p.cam_rotation)
        res = unwrap_albedo(verts, fitter.faces, fitter.vt, fitter.ft, p.intrinsics(), R, p.cam_translation,
                            fitter.light_sh(p), target.image, skin_mask=target.mask, size=size, uv=uv,
                            dtype=fitter.dtype, device=fitter.device)
    arrays = res.numpy(0)
    known = float((arrays["weight"] > 0.05).sum() / max(1, arrays["uv_mask"].sum()))
    if known == 0.0:
        raise InputImageError(f"{target.name}: no texel of the fitted face is visible and lit in the photo "
                              "(nothing to unwrap)")
    meta = {"fit_s": round(fit_s, 3), "unwrap_s": round(time.perf_counter() - t1, 3),
            "known_fraction_of_layout": round(known, 4),
            # the fitted light (camera-frame SH, (9,) shared or (9,3)): the PCA stage's gauge reads its DC term
            "light_sh": fitter.light_sh(p)[0].detach().cpu().double().numpy().round(6).tolist(),
            "stages": {s.name: {"iters": int(s.iters_run or s.iters), "seconds": round(float(s.seconds), 3),
                                "loss_end": _first(s.item_loss_end)} for s in raw.stages},
            "image_size": [int(v) for v in np.asarray(target.image).shape[:2]]}
    return arrays, meta


def _first(x) -> float | None:
    """A stage log's per-item loss (a list at B = 1, or a number) as a float."""
    if isinstance(x, (list, tuple)):
        x = x[0] if x else None
    return None if x is None else round(float(x), 6)


def load_target(source: str, name: str, detections: str | None = None, detector=None):
    """The fit target of one photo: landmarks and skin mask from ``detections/NAME.npz`` when that exists (a
    ``flamefit detect`` output, or any npz with ``lmks_68`` and/or ``lmks_dense`` in pixels, optional ``mask``
    (H,W) and ``focal_px``), else detected now (MediaPipe)."""
    from flamefit.fit.targets import FitTarget

    if detections:
        path = Path(detections) / f"{name}.npz"
        if path.is_file():
            from flamefit.observe import load_image

            try:
                with np.load(path, allow_pickle=False) as d:
                    lm68 = d["lmks_68"].astype(np.float64) if "lmks_68" in d.files else None
                    dense = d["lmks_dense"].astype(np.float64) if "lmks_dense" in d.files else None
                    mask = d["mask"].astype(np.float32) if "mask" in d.files else None
                    focal = float(d["focal_px"]) if "focal_px" in d.files else None
            except (OSError, ValueError, KeyError) as exc:
                raise InputImageError(f"cannot read detections {path}: {exc}; delete it or run `flamefit detect` "
                                      "again") from exc
            if lm68 is None and dense is None:
                raise InputImageError(f"{path} holds no landmarks (lmks_68 or lmks_dense)")
            return FitTarget(image=load_image(source), lmks_68=lm68, lmks_dense=dense, mask=mask, focal_px=focal,
                             name=name)
    from flamefit.observe import observe

    kwargs = {"detector": detector} if detector is not None else {}
    obs = observe(source, source=source, **kwargs)
    return FitTarget.from_observation(obs, name=name)


def finished_names(folder: Path) -> list[str]:
    """Names with a complete output set (completion record + files) in ``folder``, sorted."""
    from flamefit.io.outputs import DONE_SUFFIX, is_finished

    if not folder.is_dir():
        return []
    names = sorted(p.name[:-len(DONE_SUFFIX)] for p in folder.glob(f"*{DONE_SUFFIX}"))
    return [n for n in names if is_finished(folder, n)]


# ------------------------------------------------------------------------------------------ whole-set stages


def _maps(it: Iteration, names: Sequence[str], gauge: str = "none"):
    """The unwrapped maps of ``names``, with ``gauge`` applied (see :func:`gauge_gains`); the gauge record is in
    the returned MapSet's ``gauge`` attribute."""
    from flamefit.texspace.store import load_maps

    if not names:
        raise InputImageError(f"no unwrapped maps in {it.unwrapped}: the unwrap stage has not produced any (see "
                              f"{it.stage_path('unwrap')} for failures)")
    paths = [it.unwrapped / f"{n}.npz" for n in names]
    maps = load_maps(paths)
    gains, info = gauge_gains(paths, gauge)
    if gains is not None:
        maps.albedo = (maps.albedo * gains.to(maps.albedo).view(-1, 1, 1, 3)).clamp(0.0, 1.0)
    maps.gauge = info
    return maps


def gauge_gains(paths: Sequence[Path], gauge: str) -> tuple[torch.Tensor | None, dict]:
    """Per-map colour gains (N,3) that fix the albedo-vs-light gauge of a set of unwrapped maps, or None.

    A photo fixes only the product albedo x shading: scaling a map's albedo by s and its SH light by 1/s renders the
    same image, so each fit picks its own brightness (and, with 'sh9x3', its own tint). 'light_dc' rescales every
    map as if its photo had been lit with the set's median ambient (SH DC) light: gain = DC_i / median DC, per
    channel ('sh9': one DC for all three). Measured on 16 rendered photos of the recovery bench (stand-in start,
    OpenCV fill, plain PCA; RMS 0..255 of held-out albedos in the face region, 10 components): 18.4 without, 16.1
    with (an oracle gain from the true albedos: 15.5); the fitted scale was off by 0.85..1.22 per photo.
    'none' keeps each fit's own gauge. Maps unwrapped before the fitted light was recorded (no ``light_sh`` in
    their meta) get no gain, and the record says so."""
    from flamefit.texspace.store import read_meta

    if gauge == "none":
        return None, {"gauge": "none"}
    if gauge != "light_dc":
        raise ConfigError(f"unknown gauge {gauge!r}; one of {', '.join(GAUGES)}")
    dcs = []
    for p in paths:
        sh = read_meta(p).get("light_sh")
        if sh is None:
            return None, {"gauge": "none", "gauge_note": f"{Path(p).name} carries no fitted light (unwrapped by an "
                                                          "older flamefit); unwrap again to normalise the gauge"}
        sh = np.asarray(sh, dtype=np.float64)
        dc = np.broadcast_to(sh[0] if sh.ndim == 2 else np.float64(sh[0]), (3,))
        dcs.append(dc)
    dc = np.stack(dcs)
    if (dc <= 0).any():
        bad = [Path(p).name for p, d in zip(paths, dc, strict=True) if (d <= 0).any()]
        raise InputImageError(f"fitted ambient light <= 0 in {', '.join(bad[:5])}: those fits are broken; delete "
                              "their unwrapped maps (the unwrap stage redoes them) or remove the photos")
    gains = dc / np.median(dc, axis=0, keepdims=True)
    return torch.from_numpy(gains), {"gauge": "light_dc", "gain_min": round(float(gains.min()), 4),
                                     "gain_max": round(float(gains.max()), 4),
                                     "median_dc": [round(float(x), 5) for x in np.median(dc, axis=0)]}


def train_stage(it: Iteration, cfg: BuildConfig, *, device: str | torch.device = "cpu", force: bool = False,
                progress: Callable[[int, float], None] | None = None) -> dict:
    """Train the inpainting network on the unwrapped maps (random strokes inside each map's known texels),
    checkpointed in ``it.checkpoint`` and resumed from it. Skipped when finished for the same maps."""
    from flamefit.texspace.inpaint import InpaintConfig, train_inpainter

    names = finished_names(it.unwrapped)
    rec = read_stage(it, "train-inpaint")
    if (not force and rec and rec.get("maps") == names and rec.get("steps") == cfg.inpaint_steps
            and rec.get("gauge") == cfg.gauge and rec.get("min_weight") == cfg.min_weight
            and it.checkpoint.is_file()):
        return {**rec, "skipped": True}
    t0 = time.perf_counter()
    maps = _maps(it, names, cfg.gauge)
    known = maps.known(cfg.min_weight)
    if len(names) < 1 or not known.any():
        raise InputImageError(f"no known texels in the maps of {it.unwrapped}: nothing to train on")
    dev = torch.device(device)
    icfg = InpaintConfig(steps=cfg.inpaint_steps, batch_size=cfg.inpaint_batch, crop=cfg.inpaint_crop,
                         base_channels=cfg.inpaint_channels, seed=cfg.seed,
                         checkpoint_every=max(1, min(200, cfg.inpaint_steps // 4 or 1)))
    res = train_inpainter((maps.albedo * known.unsqueeze(-1)).to(dev), known.to(dev), icfg,
                          layout=maps.uv_mask.to(dev), checkpoint=it.checkpoint, resume=True, progress=progress)
    if not it.checkpoint.is_file():  # 0 steps: still leave the (untrained = classical average) network
        from flamefit.texspace.inpaint import save_checkpoint

        save_checkpoint(it.checkpoint, res.net, None, res.step, icfg)
    hist = res.history
    return write_stage(it, "train-inpaint", {
        "maps": names, "n_maps": len(names), "steps": cfg.inpaint_steps, "step": res.step, "gauge": cfg.gauge,
        "min_weight": cfg.min_weight,
        "seconds": round(time.perf_counter() - t0, 3), "train_seconds_this_run": round(res.seconds, 3),
        "loss_first_10": float(np.mean(hist[:10])) if hist else None,
        "loss_last_10": float(np.mean(hist[-10:])) if hist else None})


def make_fill(name: str, it: Iteration, *, start_space: str | None = None, size: int | None = None,
              layout: torch.Tensor | None = None, device: str | torch.device = "cpu") -> Callable:
    """The completion function ``fill(maps (N,H,W,3), known (N,H,W)) -> (N,H,W,3)`` named ``name``."""
    from flamefit.texspace import fills

    if name == "network":
        from flamefit.texspace.inpaint import inpaint_maps, load_inpainter

        net = load_inpainter(it.checkpoint, device=device)
        return lambda m, k: inpaint_maps(net, m.to(device), k.to(device), layout).cpu()
    if name == "mirror_then_membrane":
        return lambda m, k: fills.fill_mirror_then_pushpull(m, k, smooth_iters=20)
    if name == "membrane":
        return lambda m, k: fills.fill_pushpull(m, k, smooth_iters=20)
    if name == "mirror_then_opencv":
        return fills.fill_mirror_then_opencv
    if name == "opencv_telea":
        return fills.fill_opencv
    if name == "mirror_then_start_space":
        space = it.previous_space() or (Path(start_space) if start_space else None)
        if space is None:
            raise ConfigError("fill 'mirror_then_start_space' needs a start texture space (--texture-space FILE)")
        mean, basis = space_maps(space, size)
        return lambda m, k: fills.fill_mirror_then_pca(m, k, mean, basis)
    raise ConfigError(f"unknown fill {name!r}; one of {', '.join(FILLS)}")


def space_maps(path: str | Path, size: int | None = None, n_components: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (H,W,3), basis (K,H,W,3)) RGB 0..1 of a texture-space file, resampled to ``size`` texels."""
    from flamefit.model.texture_space import load_texture_space, resize_map

    ts = load_texture_space(path, n_components=n_components)
    mean, basis = ts.mean, ts.basis
    if size is not None and tuple(mean.shape[:2]) != (size, size):
        mean = resize_map(mean[None], (size, size))[0]
        basis = resize_map(basis, (size, size)) if basis.shape[0] else basis.new_zeros(0, size, size, 3)
    return mean, basis


def inpaint_stage(it: Iteration, cfg: BuildConfig, *, start_space: str | None = None,
                  device: str | torch.device = "cpu", batch: int = 16) -> dict:
    """Fill every unwrapped map's unknown texels with ``cfg.fill`` -> ``it.completed/NAME.npz``. Maps already
    completed with the same fill (and network) are skipped, so an interrupted stage finishes the rest."""
    from flamefit.texspace.store import complete_maps

    names = finished_names(it.unwrapped)
    rec = read_stage(it, "inpaint")
    ckpt_mtime = it.checkpoint.stat().st_mtime if (cfg.fill == "network" and it.checkpoint.is_file()) else None
    same = (bool(rec) and rec.get("fill") == cfg.fill and rec.get("checkpoint_mtime") == ckpt_mtime
            and rec.get("gauge") == cfg.gauge and rec.get("min_weight") == cfg.min_weight)
    def stale(n: str) -> bool:  # no completed map, or one older than its (refitted) unwrapped map
        c = it.completed / f"{n}.npz"
        return not c.is_file() or c.stat().st_mtime_ns < (it.unwrapped / f"{n}.npz").stat().st_mtime_ns

    if same and rec.get("maps") == names and not any(stale(n) for n in names):
        return {**rec, "skipped": True}
    if not same:  # another fill or a retrained network: every map is redone
        for p in it.completed.glob("*.npz") if it.completed.is_dir() else []:
            p.unlink()
    if cfg.fill == "network" and not it.checkpoint.is_file():
        raise ModelFileError(f"no inpainting network in {it.checkpoint}: run the train-inpaint stage first "
                             "(`flamefit texspace train-inpaint`)")
    t0 = time.perf_counter()
    todo = [n for n in names if stale(n)]
    fill = None
    gains, gauge_info = gauge_gains([it.unwrapped / f"{n}.npz" for n in names], cfg.gauge)  # over the whole set
    for i in range(0, len(todo), batch):
        chunk = todo[i:i + batch]
        maps = _maps(it, chunk)
        if gains is not None:
            g = gains[[names.index(n) for n in chunk]].to(maps.albedo)
            maps.albedo = (maps.albedo * g.view(-1, 1, 1, 3)).clamp(0.0, 1.0)
        if fill is None:
            fill = make_fill(cfg.fill, it, start_space=start_space, size=cfg.size, layout=maps.uv_mask,
                             device=device)
        done = complete_maps(maps, fill, min_weight=cfg.min_weight, batch=batch)
        for j, n in enumerate(chunk):
            _atomic_npz(it.completed / f"{n}.npz", {"albedo": done[j].numpy().astype(np.float16),
                                                    "uv_mask": maps.uv_mask.numpy()})
    return write_stage(it, "inpaint", {"maps": names, "n_maps": len(names), "filled_this_run": len(todo),
                                       "fill": cfg.fill, "checkpoint_mtime": ckpt_mtime, **gauge_info,
                                       "min_weight": cfg.min_weight,
                                       "seconds": round(time.perf_counter() - t0, 3)})


def preview_mesh(flame: str | None, vt, ft, image_px: int = 256):
    """(vertices, faces, vt, ft, camera) of the model's mean head seen from the front, for preview grids."""
    from flamefit.assets import resolve_asset
    from flamefit.model.flame import load_flame
    from flamefit.render import camera_from_fov, look_at

    model = load_flame(resolve_asset("flame", flame))
    verts = model().vertices[0].detach()
    centre = verts.mean(0, keepdim=True)
    R, t = look_at((centre + torch.tensor([[0.0, 0.0, 0.55]], dtype=verts.dtype)), centre)
    cam = camera_from_fov(0.45, image_px, image_px, R=R, t=t)
    return verts, model.faces, torch.as_tensor(vt, dtype=verts.dtype), torch.as_tensor(np.asarray(ft, np.int64)), cam


def pca_stage(it: Iteration, cfg: BuildConfig, *, flame: str | None = None, force: bool = False) -> dict:
    """PCA over the completed maps (inside the layout) -> ``it.space`` (FLAME_texture.npz layout, 1 unit = 1 sd,
    BGR 0..255) + ``space.json`` (variance explained) + ``preview.png`` (first 5 components at +-2 sd, on the
    model's mean head when the model is available, else as UV maps)."""
    from flamefit.texspace.store import build_space, load_maps

    names = finished_names(it.unwrapped)
    names = [n for n in names if (it.completed / f"{n}.npz").is_file()]
    rec = read_stage(it, "pca")
    if (not force and rec and rec.get("maps") == names and rec.get("components_requested") == cfg.components
            and rec.get("min_coverage") == cfg.min_coverage and rec.get("pca") == cfg.pca
            and rec.get("gauge") == cfg.gauge and rec.get("min_weight") == cfg.min_weight
            and rec.get("em_iters") == cfg.em_iters and it.space.is_file()):
        return {**rec, "skipped": True}
    if len(names) < 2:
        raise InputImageError(f"PCA needs at least 2 completed maps, {it.completed} has {len(names)} (see "
                              f"{it.stage_path('unwrap')} for photos that failed)")
    t0 = time.perf_counter()
    comp = load_maps([it.completed / f"{n}.npz" for n in names], keys=("albedo",))
    unwrapped = _maps(it, names, cfg.gauge)
    known = unwrapped.known(cfg.min_weight)
    seen = known.float().mean(0)  # (H,W) fraction of photos that saw each texel
    region = comp.uv_mask & (seen >= cfg.min_coverage) if cfg.min_coverage > 0 else comp.uv_mask
    if int(region.sum()) < 3:
        raise InputImageError(f"no texel was seen by {100 * cfg.min_coverage:.0f}% of the {len(names)} photos; "
                              "lower min_coverage")
    vt, ft = read_layout(it.work)
    mesh = None
    try:
        mesh = preview_mesh(flame, vt, ft)
    except Exception:  # noqa: BLE001 - no model: the preview shows UV maps instead
        mesh = None
    k = min(cfg.components, len(names) - 1)
    em = {}
    if cfg.pca == "missing":
        _, info = build_space(comp.albedo, region, vt, ft, it.space, n_components=k, preview=it.preview, mesh=mesh,
                              observed=unwrapped.albedo, known=known, em_iters=cfg.em_iters)
        em = {"em_iterations": info.iterations, "em_last_change": round(info.last_change, 6),
              "em_outlier_fraction": round(info.outlier_fraction, 5), "em_noise_sd": round(info.noise_sd, 5)}
    else:
        build_space(comp.albedo, region, vt, ft, it.space, n_components=k, preview=it.preview, mesh=mesh)
    with np.load(it.space) as d:
        evr = [float(x) for x in d["explained_variance_ratio"]]
    doc = {"maps": names, "n_maps": len(names), "components_requested": cfg.components, "components": k,
           "min_coverage": cfg.min_coverage, "region_texels": int(region.sum()), "pca": cfg.pca,
           "em_iters": cfg.em_iters, **em, **unwrapped.gauge, "min_weight": cfg.min_weight,
           "layout_texels": int(comp.uv_mask.sum()),
           "explained_variance_ratio": [round(x, 5) for x in evr],
           "cumulative_explained_variance": [round(float(x), 5) for x in np.cumsum(evr)],
           "preview": str(it.preview), "preview_kind": "mesh" if mesh is not None else "uv",
           "seconds": round(time.perf_counter() - t0, 3)}
    _atomic_text(it.space_json, json.dumps(doc, indent=1))
    return write_stage(it, "pca", doc)


def preview(space: str | Path, out: str | Path, *, flame: str | None = None, n: int = 5, sd: float = 2.0) -> Path:
    """Preview grid PNG of a texture-space file: the first ``n`` components at -sd, 0, +sd (rendered on the model's
    mean head when ``flame`` resolves, else as UV maps)."""
    from flamefit.model.texture_space import load_texture_space
    from flamefit.texspace.pca import preview_grid, save_preview

    ts = load_texture_space(space, n_components=n)
    mesh = None
    if ts.vt is not None:
        try:
            mesh = preview_mesh(flame, ts.vt, ts.ft)
        except Exception:  # noqa: BLE001 - no model: UV maps
            mesh = None
    grid = preview_grid(ts.mean, ts.basis, n=n, sd=sd, mesh=mesh, tile=None if mesh is not None else 256)
    return save_preview(out, grid)


# -------------------------------------------------------------------------------------------------- the build


@dataclass
class BuildReport:
    """What a build did: per iteration, each stage's record (seconds, peak memory, skipped or not), the photos
    that failed, and the final space."""

    out: str
    work: str
    iterations: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def with_defaults(cfg: BuildConfig | None = None, **changes) -> BuildConfig:
    """A :class:`BuildConfig` with ``changes`` (None values ignored), validated."""
    cfg = replace(cfg or BuildConfig(), **{k: v for k, v in changes.items() if v is not None})
    cfg.validate()
    return cfg
