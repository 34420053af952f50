"""The streaming tracker: per-frame FLAME from detected landmarks (and pixels), with a shared identity.

Frames arrive one at a time (:meth:`Tracker.push`). They are fitted in windows of ``window`` new frames plus the
``tail`` last frames of the previous window, which are fitted again with the new frames as their future. The fit
of a window is the single-image machinery of :mod:`flamefit.fit` (targets, stages as data, loss terms, one
optimisation loop) with:

- the identity (shape, texture, focal) fixed: fitted once over frames spread across the clip
  (:func:`fit_identity`), never per frame;
- a warm start: the tail frames start from their previous fit, new frames from the last fitted frame,
  extrapolated at constant velocity for the rigid head motion;
- :class:`flamefit.track.terms.TemporalTerm` (velocity + acceleration), which also sees the last written frames,
  frozen, so there is no seam between windows;
- a fixed lag: a frame is final once it has been fitted with ``tail`` frames after it;
- ``smooth='zero-lag'`` (default): the windows' temporal terms are scaled down to a regulariser
  (``zero_lag_forward``) and :class:`flamefit.track.smoother.ZeroLagSmoother` smooths the final frames with
  ``smooth_lag`` frames of past and future (the output runs ``tail + smooth_lag`` frames behind the input).
  Strong causal smoothing freezes the camera depth, which the landmarks pin down least, and biases it against
  the expressions: on the synthetic clip of ``flamefit bench track`` the whole-clip aligned vertex error was 2.5x
  the per-frame one with ``smooth='window'`` (the windows' terms alone), 1.6x with the zero-lag smoother and its
  former ~110-frame depth low-pass, which held heads that move in depth at one distance (../shared/eval's clip,
  real detector: 16.7 mm whole-clip; 4.9 mm with the depth smoothed like x/y, now the default; that bench clip,
  whose head keeps its distance, then gives 2.9x).

Shot cuts and lost faces: a frame without a face flushes the window, is reported as ``no_face`` (never invented)
and clears the temporal history; a jump of the detected landmarks larger than ``cut_jump`` x the face size between
consecutive frames is a cut (flush, clear history, re-initialise); a warm-started window whose landmark residual
exceeds ``reinit_error`` x the face size, and 1.5x the level of the last window, is fitted again from a cold
start (kept only where it fits better).

Memory is constant in the length of the video: the tracker holds at most ``window + tail`` frames with their
images, the smoother ``2 x smooth_lag`` frames' parameters.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from flamefit.errors import ConfigError
from flamefit.fit.config import FitConfig, StageConfig
from flamefit.fit.crop import params_to_crop, params_to_original
from flamefit.fit.init import video_focal
from flamefit.fit.optimize import Sharing
from flamefit.fit.params import FlameParams
from flamefit.fit.stages import build_stages
from flamefit.fit.targets import FitTarget, prepare_batch
from flamefit.fit.terms import JawPriorTerm, PriorTerm, TemporalTerm
from flamefit.track.smoother import DEFAULT_LAG, DEFAULT_LAMBDA, ZeroLagSmoother
from flamefit.track.terms import DEFAULT_ACCEL, DEFAULT_VELOCITY

MODES = ("landmarks", "photometric")
SMOOTHERS = ("zero-lag", "window")
IRIS = tuple(range(468, 478))  # MediaPipe's iris points (centre + 4 per eye)
DENSE_POINTS = {"iris": IRIS, "all": None, "none": ()}
IDENTITY_FIELDS = ("shape", "tex", "tex_offset", "focal_px")


@dataclass
class TrackConfig:
    """How to track (see the module doc). Iterations are Adam iterations per window."""

    mode: str = "landmarks"
    identity_frames: int = 12  # frames spread over the clip for the identity fit
    window: int = 8  # new frames per window
    tail: int = 3  # frames of the previous window fitted again (the output's fixed lag, in frames)
    history: int = 2  # written frames the temporal term sees before a window (2: acceleration is continuous)
    solver: str = "lm"  # landmark stage: 'lm' (Levenberg-Marquardt over the window) or 'adam' (the fit loop)
    lm_iters: int = 3  # LM iterations of a warm-started window (cold: lm_cold_iters)
    lm_cold_iters: int = 8
    iters: int = 16  # Adam: landmark-stage iterations of a warm-started window
    lr: float = 0.01
    cold_rigid_iters: int = 30  # after a cut / at the start: rigid then landmark iterations
    cold_iters: int = 80
    photometric_iters: int = 8  # photometric mode: per-window photometric iterations
    photometric_lr: float = 0.01
    photometric_resolution: int = 64  # render side of the per-window photometric stage (pixels)
    identity_photometric_resolution: int = 128  # render side of the identity's photometric stage
    identity_photometric_iters: int = 60  # photometric iterations of the identity fit (all K frames at once)
    identity_photometric: bool = True  # landmark mode too: the identity's shape from landmarks + photometric
    temporal_weight: float = 1.0  # factor on all temporal weights and the smoother (0: frames independent)
    # 'zero-lag': the windows only regularise (temporal weights x zero_lag_forward) and a two-sided smoother
    # (flamefit.track.smoother) smooths the trajectories with smooth_lag frames of past and future: no phase lag,
    # and the camera depth follows the head instead of freezing (strong causal smoothing biases it: measured on
    # the synthetic clip, whole-clip/per-frame vertex error 1.6 vs 2.56). 'window': the windows' temporal terms
    # alone, output smooth_lag frames sooner (latency = tail frames).
    smooth: str = "zero-lag"
    smooth_lag: int = DEFAULT_LAG
    zero_lag_forward: float = 0.01
    smooth_lambda: dict = field(default_factory=lambda: dict(DEFAULT_LAMBDA))
    # prior weights replacing the fit config's in the window solver: landmarks barely tell a neck rotation from a
    # head rotation, and a free neck trades off against the camera (the head then wanders in the camera frame).
    # Not here: an expression prior above the stills' 1e-4. The expression is the only per-frame shape freedom and
    # soaks up the detector's noise (norm 3.0 vs the truth's 1.7 on ../shared/eval's clip); 3e-4 took that clip
    # from 1.23 to 1.06 mm per frame, but bench track's oracle clip from 3.54 to 5.07 mm whole-clip (1.5e-4:
    # 1.15 mm, 3.85 mm): MediaPipe's biased points want it, unbiased ones do not.
    priors: dict = field(default_factory=lambda: {"neck_pose": 1.0})
    # the windows' prior on the jaw's sideways turn and roll (weights.jaw_lateral_prior; the stills keep theirs):
    # with one identity for the clip the jaw's free axes soak up the detector's noise (fitted roll up to 0.12 rad on
    # ../shared/eval's clip, whose jaw has none). There 0 -> 1 (windows and identity fit) gave 1.277 -> 1.233 mm per
    # frame, 3.21 -> 3.24 mm whole clip (landmark mode); on stills (bench fit) it was mixed, so they keep 0.
    jaw_lateral_prior: float = 1.0
    accel: dict = field(default_factory=lambda: dict(DEFAULT_ACCEL))
    velocity: dict = field(default_factory=lambda: dict(DEFAULT_VELOCITY))
    # MediaPipe points the window solver uses next to the 68: 'iris' (the 10 iris points, which carry the gaze the
    # 68 cannot), 'all' 478 (several times slower per frame), or 'none'; the identity fit always uses all of them
    dense_points: str = "iris"
    cut_jump: float = 0.35  # median landmark displacement between consecutive frames / face size -> new shot
    reinit_error: float = 0.08  # rms landmark residual / face size after a warm-started window -> cold refit

    def validate(self) -> None:
        bad = []
        if self.dense_points not in DENSE_POINTS:
            bad.append(f"dense_points must be one of {tuple(DENSE_POINTS)}, got {self.dense_points!r}")
        if self.solver not in ("lm", "adam"):
            bad.append(f"solver must be 'lm' or 'adam', got {self.solver!r}")
        if self.smooth not in SMOOTHERS:
            bad.append(f"smooth must be one of {SMOOTHERS}, got {self.smooth!r}")
        if self.smooth_lag < 1:
            bad.append(f"smooth_lag must be >= 1 frame, got {self.smooth_lag}")
        if not self.zero_lag_forward >= 0:
            bad.append(f"zero_lag_forward must be >= 0, got {self.zero_lag_forward}")
        if self.mode not in MODES:
            bad.append(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("identity_frames", "window"):
            if getattr(self, name) < 1:
                bad.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("tail", "history", "iters", "cold_rigid_iters", "cold_iters", "photometric_iters", "lm_iters",
                     "lm_cold_iters"):
            if getattr(self, name) < 0:
                bad.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.jaw_lateral_prior >= 0:
            bad.append(f"jaw_lateral_prior must be >= 0, got {self.jaw_lateral_prior}")
        for name in ("lr", "photometric_lr", "cut_jump", "reinit_error"):
            if not getattr(self, name) > 0:
                bad.append(f"{name} must be > 0, got {getattr(self, name)}")
        if self.photometric_resolution < 16:
            bad.append(f"photometric_resolution must be >= 16 px, got {self.photometric_resolution}")
        if bad:
            raise ConfigError("invalid tracking settings: " + "; ".join(bad))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def forward_weight(self) -> float:
        """Factor on the windows' temporal terms."""
        return self.temporal_weight * (self.zero_lag_forward if self.smooth == "zero-lag" else 1.0)

    def smoother_lambda(self) -> dict:
        return {k: _scaled(v, self.temporal_weight) for k, v in self.smooth_lambda.items()}


@dataclass
class FrameObs:
    """One frame's measurements: source ``index`` and ``time_s``, the RGB ``image`` (uint8 or float 0..1, kept only
    while the frame is in a window), landmarks in frame pixels (None or NaN: no face), optional blendshapes."""

    index: int
    time_s: float
    image: np.ndarray | None
    lmks_68: np.ndarray | None = None
    lmks_dense: np.ndarray | None = None
    blendshape_scores: np.ndarray | None = None
    blendshape_names: list | None = None
    confidence: float | None = None
    blendshape_missing: str | None = None  # why there are no blendshape scores

    @property
    def points(self) -> np.ndarray | None:
        pts = self.lmks_68 if self.lmks_68 is not None else self.lmks_dense
        if pts is None or not np.isfinite(pts).all():
            return None
        return np.asarray(pts, np.float64)

    @property
    def has_face(self) -> bool:
        return self.points is not None


@dataclass
class TrackedFrame:
    """A final frame: ``params`` (batch 1, intrinsics of the ORIGINAL frame) or None for ``status='no_face'``."""

    obs: FrameObs
    params: FlameParams | None
    status: str = "ok"
    cold: bool = False  # fitted from a cold start (first window, after a cut or a loss)
    residual: float | None = None  # rms landmark residual / face size
    shot: int = 0  # continuity segment: the tracker starts a new one after a cut or a lost face


@dataclass
class Identity:
    """What all frames of a clip share: ``shape`` (n_shape,), ``tex`` (n_tex,), ``tex_offset`` (R,R,3) or None,
    ``focal_px`` of the original frames, their size, and which frames it was fitted on."""

    shape: np.ndarray
    tex: np.ndarray
    focal_px: float
    image_size: tuple[int, int]
    tex_offset: np.ndarray | None = None
    frame_indices: list = field(default_factory=list)
    mode: str = "landmarks"
    light: np.ndarray | None = None  # (9,C) the identity fit's light (landmark mode: the frames'; else their start)
    focal_source: str = "unknown"  # where focal_px came from (flamefit.fit.init.video_focal)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"shape": self.shape, "tex": self.tex, "focal_px": np.array(self.focal_px),
               "image_size": np.array(self.image_size, np.int64), "frame_indices": np.array(self.frame_indices,
                                                                                         np.int64),
               "mode": np.array(self.mode), "focal_source": np.array(self.focal_source)}
        if self.tex_offset is not None:
            out["tex_offset"] = self.tex_offset
        if self.light is not None:
            out["light"] = self.light
        return out

    @classmethod
    def from_arrays(cls, d) -> Identity:
        return cls(shape=np.asarray(d["shape"], np.float32), tex=np.asarray(d["tex"], np.float32),
                   focal_px=float(d["focal_px"]), image_size=tuple(int(v) for v in d["image_size"]),
                   tex_offset=np.asarray(d["tex_offset"], np.float32) if "tex_offset" in d else None,
                   frame_indices=[int(i) for i in d["frame_indices"]], mode=str(d["mode"]),
                   light=np.asarray(d["light"], np.float32) if "light" in d else None,
                   focal_source=str(d["focal_source"]) if "focal_source" in d else "unknown")

    def apply(self, p: FlameParams) -> FlameParams:
        """Set the identity fields of ``p`` (B rows; original-image intrinsics) in place; returns ``p``."""
        B = p.batch_size
        kw = {"device": p.shape.device, "dtype": p.shape.dtype}
        p.shape = torch.as_tensor(self.shape, **kw).view(1, -1).expand(B, -1).clone()
        p.tex = torch.as_tensor(self.tex, **kw).view(1, -1).expand(B, -1).clone()
        p.tex_offset = (None if self.tex_offset is None
                        else torch.as_tensor(self.tex_offset, **kw)[None].expand(B, -1, -1, -1).clone())
        return p


def _scaled(w, s: float):
    return tuple(float(v) * s for v in w) if isinstance(w, (tuple, list)) else float(w) * s


def face_size_px(points: np.ndarray) -> float:
    lo, hi = points.min(0), points.max(0)
    return float(np.sqrt(max(hi[0] - lo[0], 1.0) * max(hi[1] - lo[1], 1.0)))


def _float_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) * (1.0 / 255.0)
    return image.astype(np.float32, copy=False)


def frame_target(obs: FrameObs, focal_px: float | None, image_size: tuple[int, int] | None = None) -> FitTarget:
    """The frame as a fit target; with ``image_size`` a landmark-only target (the image is not converted)."""
    image = None if image_size is not None else _float_image(obs.image)
    return FitTarget(image=image, lmks_68=obs.lmks_68, lmks_dense=obs.lmks_dense, focal_px=focal_px,
                     name=f"frame {obs.index}", image_size=image_size)


def _cat(rows: list[FlameParams]) -> FlameParams:
    out = rows[0].detach()
    for name, value in out.tensors().items():
        if value is not None:
            setattr(out, name, torch.cat([getattr(r, name) for r in rows], 0))
    return out


def _row(p: FlameParams, b: int) -> FlameParams:
    return p._map(lambda t: t[b:b + 1].detach().clone())


# -- identity ---------------------------------------------------------------------------------------------------------

def fit_identity(fitter, frames: list[FrameObs], cfg: TrackConfig) -> Identity:
    """Shape (and in photometric mode texture) from a joint fit over ``frames`` (those with a face), shared by all
    of them (:meth:`flamefit.fit.Sharing.video`). The focal length is fixed for the clip: ``camera.focal_px``, else
    the ``camera.video_fov_deg`` prior (:func:`flamefit.fit.init.video_focal`)."""
    frames = [f for f in frames if f.has_face]
    if not frames:
        from flamefit.errors import FaceNotFound

        raise FaceNotFound("no face was found in any of the frames sampled for the identity fit; check the video "
                           "(or --start/--end) shows a face")
    H, W = np.asarray(frames[0].image).shape[:2]
    focal, focal_source = video_focal(H, W, fitter.cfg.camera)
    targets = [frame_target(f, focal) for f in frames]
    photometric = cfg.mode == "photometric" or cfg.identity_photometric
    # the windows' jaw prior here too: on bench track's clips it was better than the stills' (0) in all four
    # columns (e.g. oracle photometric whole clip 2.70 -> 2.54 mm)
    fcfg = dataclasses.replace(fitter.cfg, weights=dataclasses.replace(fitter.cfg.weights,
                                                                       jaw_lateral_prior=cfg.jaw_lateral_prior))
    if photometric:
        fcfg = dataclasses.replace(
            fcfg, photometric=dataclasses.replace(fcfg.photometric, iters=cfg.identity_photometric_iters,
                                                  resolution=cfg.identity_photometric_resolution))
        names = ("rigid", "landmarks", "appearance", "photometric")
    else:
        names = ("rigid", "landmarks")
    raws = _with_config(fitter, fcfg).fit_batch(targets, stages=names, sharing=Sharing.video())
    p = raws[0].params
    return Identity(shape=p.shape[0].cpu().numpy(), tex=p.tex[0].cpu().numpy(), focal_px=float(focal),
                    image_size=(int(H), int(W)),
                    tex_offset=None if p.tex_offset is None else p.tex_offset[0].cpu().numpy(),
                    frame_indices=[f.index for f in frames], mode=cfg.mode,
                    light=p.light[0].cpu().numpy() if photometric else None,
                    focal_source=focal_source)


def _with_config(fitter, cfg: FitConfig):
    import copy

    f = copy.copy(fitter)
    f.cfg = cfg
    return f


# -- the tracker ------------------------------------------------------------------------------------------------------

class Tracker:
    """Streaming tracker (see the module doc). ``sink(frames: list[TrackedFrame])`` receives final frames in order.

    ``push(obs)`` for each frame in time order, ``push_known(obs, params)`` for a frame already written by an
    earlier run (resume: it becomes history without being fitted), ``finish()`` at the end."""

    def __init__(self, fitter, identity: Identity, cfg: TrackConfig, sink: Callable[[list[TrackedFrame]], None]):
        cfg.validate()
        self.fitter = fitter
        self.identity = identity
        self.cfg = cfg
        self.smoother = None
        if cfg.smooth == "zero-lag" and cfg.temporal_weight > 0:
            self.smoother = ZeroLagSmoother(sink, cfg.smooth_lag, cfg.smoother_lambda())
            sink = self.smoother
        self.sink = sink
        self.new: list[FrameObs] = []
        self.pending: list[tuple[FrameObs, FlameParams]] = []  # fitted, not final (the tail)
        self.history: list[FlameParams] = []  # last final frames (original intrinsics), oldest first
        self.shot = 0  # counts resets (cuts, lost faces): frames of one shot are continuous
        self._last_residual: float | None = None  # median landmark residual of the last window
        self.last_points: np.ndarray | None = None
        self.stats = {"windows": 0, "cold_windows": 0, "reinit": 0, "reinit_kept_warm": 0, "cuts": 0, "no_face": 0,
                      "fitted": 0, "known": 0}
        self.timings = {"fit_s": 0.0, "prepare_s": 0.0, "landmarks_s": 0.0, "photometric_s": 0.0}
        self._fcfg = self._stage_config()
        self._views: dict = {}  # dense point set -> the fitter with the identity folded in (_view)

    # -- stream --------------------------------------------------------------------------------------------------
    def push(self, obs: FrameObs) -> None:
        pts = obs.points
        if pts is None:
            self.flush()
            self.reset()
            self.stats["no_face"] += 1
            self.sink([TrackedFrame(obs, None, "no_face")])
            return
        if self.last_points is not None and pts.shape == self.last_points.shape:
            jump = float(np.median(np.linalg.norm(pts - self.last_points, axis=1))) / face_size_px(pts)
            if jump > self.cfg.cut_jump:
                self.flush()
                self.reset()
                self.stats["cuts"] += 1
        self.last_points = pts
        self.new.append(obs)
        if len(self.new) >= self.cfg.window:
            self._fit_window(final=False)

    def push_known(self, obs: FrameObs, params: FlameParams) -> None:
        """A frame written before (resume): history for the next window, not fitted or written again."""
        self.flush()
        if self.smoother is not None:
            self.smoother.known(params, self.shot)
        self.history = (self.history + [params])[-max(self.cfg.history, 1):]
        self.last_points = obs.points
        self.stats["known"] += 1

    def flush(self) -> None:
        """Fit and hand out everything pending (end of stream, before a gap)."""
        if self.new or self.pending:
            self._fit_window(final=True)

    def reset(self) -> None:
        """Forget the past (after a cut or a lost face): the next window starts cold."""
        self.history = []
        self.pending = []
        self.last_points = None
        self._last_residual = None
        self.shot += 1

    def finish(self) -> None:
        self.flush()
        if self.smoother is not None:
            self.smoother.finish()

    # -- one window ----------------------------------------------------------------------------------------------
    def _batch(self, frames: list[FrameObs]):
        """The window's targets in crop pixels (:func:`flamefit.fit.targets.prepare_batch`): images only in
        photometric mode, the landmark stages read none."""
        f = self.fitter
        if self.cfg.mode == "photometric":
            return prepare_batch([frame_target(o, self.identity.focal_px) for o in frames], self._fcfg,
                                 f.landmarks68 is not None, f.dense is not None, (self.cfg.photometric_resolution,),
                                 device=f.device, dtype=f.dtype)
        return prepare_batch([frame_target(o, self.identity.focal_px, self.identity.image_size) for o in frames],
                             self._fcfg, f.landmarks68 is not None, f.dense is not None, device=f.device,
                             dtype=f.dtype, landmarks_only=True)

    def _stage_config(self) -> FitConfig:
        c = self.cfg
        base = self.fitter.cfg
        return dataclasses.replace(
            base,
            rigid=StageConfig(iters=c.cold_rigid_iters, lr=base.rigid.lr),
            landmarks=StageConfig(iters=c.iters, lr=c.lr),
            photometric=StageConfig(iters=c.photometric_iters, lr=c.photometric_lr,
                                    resolution=c.photometric_resolution),
        )

    def _temporal(self, history: list[FlameParams]) -> TemporalTerm | None:
        """The windows' temporal term, seeing the last written frames (None when the temporal weight is 0)."""
        c = self.cfg
        s = c.forward_weight
        if s <= 0:
            return None
        hist = {}
        if history:
            hp = _cat(history)
            hist = {n: getattr(hp, n) for n in set(c.accel) | set(c.velocity)}
        return TemporalTerm("temporal", 1.0, {k: _scaled(v, s) for k, v in c.accel.items()},
                            {k: _scaled(v, s) for k, v in c.velocity.items()}, hist)

    def _stages(self, fitter, batch, cold: bool, history: list[FlameParams], names: tuple[str, ...]):
        """The fit's stages ``names`` for a window: identity fields held, the temporal term added; in the LM
        landmark stage the tracker's priors and iteration counts."""
        c = self.cfg
        fcfg = self._fcfg
        if cold:
            fcfg = dataclasses.replace(fcfg, landmarks=StageConfig(iters=c.cold_iters, lr=self.fitter.cfg.landmarks.lr))
        if c.solver == "lm":
            fcfg = dataclasses.replace(fcfg, landmarks=dataclasses.replace(
                fcfg.landmarks, solver="lm", lm_iters=c.lm_cold_iters if cold else c.lm_iters, lm_rel_tol=1e-4))
        stages = build_stages(fcfg, has68=fitter.landmarks68 is not None and batch.lmk68 is not None,
                              has_dense=fitter.dense is not None and batch.dense is not None,
                              n_tex=fitter.texture_space.n_components, free_albedo=fitter.free_albedo, names=names)
        temporal = self._temporal(history)
        out = []
        for st in stages:
            free = tuple(n for n in st.free if n not in IDENTITY_FIELDS)
            terms = [t for t in st.terms if not (isinstance(t, PriorTerm) and t.field in IDENTITY_FIELDS)]
            terms = [dataclasses.replace(t, lateral=c.jaw_lateral_prior) if isinstance(t, JawPriorTerm) else t
                     for t in terms]
            if st.solver == "lm":  # the window solver's priors (see TrackConfig.priors)
                terms = [dataclasses.replace(t, weight=float(c.priors[t.field]))
                         if isinstance(t, PriorTerm) and t.field in c.priors else t for t in terms]
            # forward differences, as the former window solver had: a warm window starts within a frame's motion
            # of the answer, and central ones would double the model evaluations of the pose columns
            out.append(dataclasses.replace(st, free=free, terms=tuple(terms) + ((temporal,) if temporal else ()),
                                           lm_central=False))
        return out

    def _initial(self, frames: list[FrameObs], batch, cold: bool) -> FlameParams:
        if cold and self.cfg.solver == "lm":
            # PnP of the identity's neutral head per frame: the window solver fits expressions from there in a few
            # iterations (the single-image init's per-frame shape/expression solve costs ~10x more, and the
            # identity is known already)
            p = self._zero_params(batch)
            self.identity.apply(p)
            self._pnp_rigid(p, batch, list(range(batch.size)))
            ident = p
            if self.identity.light is not None:  # landmark mode too: the K frames' light
                ident.light = torch.as_tensor(self.identity.light, dtype=p.light.dtype).expand_as(p.light).clone()
            return ident
        if cold:
            p = self.fitter.initial_params(batch)  # PnP + linear solve per frame (crop intrinsics)
            ident = self.identity.apply(p.detach())
            if self.identity.light is not None:  # landmark mode too: the K frames' light
                ident.light = torch.as_tensor(self.identity.light, dtype=p.light.dtype).expand_as(p.light).clone()
            return ident
        rows = [pp for _, pp in self.pending]
        n_old = len(rows)
        last = (self.history + rows)[-1]
        rows += [last.detach() for _ in range(len(frames) - n_old)]
        p = self.identity.apply(_cat([params_to_crop(r, crop) for r, crop in zip(rows, batch.crops, strict=True)]))
        if len(frames) > n_old:
            self._pnp_rigid(p, batch, list(range(n_old, len(frames))))
        return p

    def _zero_params(self, batch) -> FlameParams:
        """Zero parameters for ``batch`` with its (crop) intrinsics, as :meth:`Fitter.initial_params` starts."""
        f = self.fitter
        p = FlameParams.zeros(batch.size, f.n_shape, f.n_expr, n_tex=f.texture_space.n_components,
                              light_channels=3 if f.cfg.texture.light == "sh9x3" else 1, device=f.device,
                              dtype=f.dtype)
        p.focal_px = batch.focal_px.view(batch.size, 1).clone()
        p.principal_px = batch.principal_px.clone()
        return p

    @torch.no_grad()
    def _pnp_rigid(self, p: FlameParams, batch, rows: list[int]) -> None:
        """Head pose and camera translation of the new frames by PnP of the last frame's (non-rigid) head against
        their detected points: the window then starts within the detector's noise of the answer, however fast
        the head moves (a warm start from the previous frame alone can be many Adam steps away)."""
        from flamefit.fit.init import pose_to_camera, solve_pnp

        idx = torch.as_tensor(rows)
        sub = p._map(lambda t: t[idx])
        zero = dataclasses.replace(sub, global_pose=torch.zeros_like(sub.global_pose))
        f = self.fitter
        if batch.lmk68 is not None and f.landmarks68 is not None:  # the 68 points, identity folded in: cheapest
            from flamefit import ibug68

            model = self._view(batch).lmk_model
            rest = model(expression=sub.expression, neck_pose=sub.neck_pose, jaw_pose=sub.jaw_pose,
                         eye_pose=sub.eye_pose)
            pts = f.model_points(zero, rest.vertices, ("68",), model.faces)["68"].double().cpu().numpy()
            targets, weights = batch.lmk68, batch.lmk68_weights
            pnp = torch.ones(68, dtype=torch.bool)
            pnp[list(ibug68.JAW)] = False
        else:
            targets, weights, pnp = batch.landmark_problem_inputs()
            model = f.model if getattr(f, "lmk_model", None) is None else f.lmk_model  # _points_fn's vertex set
            rest = model(shape=sub.shape, expression=sub.expression, neck_pose=sub.neck_pose,
                         jaw_pose=sub.jaw_pose, eye_pose=sub.eye_pose)
            pts = f._points_fn(batch)(rest.vertices, zero).double().cpu().numpy()
        K = sub.intrinsics().double().cpu().numpy()
        roots = rest.joints[:, 0].double().cpu().numpy()
        tg = targets.double().cpu().numpy()
        w = weights.cpu().numpy()
        for j, b in enumerate(rows):
            m = pnp.cpu().numpy() & (w[b] > 0)
            R, t = solve_pnp(pts[j][m], tg[b][m], K[j])
            g, tc = pose_to_camera(R, t, roots[j])
            p.global_pose[b] = torch.as_tensor(g, dtype=p.global_pose.dtype)
            p.cam_translation[b] = torch.as_tensor(tc, dtype=p.cam_translation.dtype)

    def _fit_window(self, final: bool) -> None:
        t0 = time.perf_counter()
        frames = [o for o, _ in self.pending] + self.new
        cold = not self.history and not self.pending
        res = self._fit(frames, cold)
        # a cold refit where the warm start got lost: the residual is above reinit_error AND well above what the
        # last frames reached (some faces fit no better than ~0.09 from any start; refitting those costs 2x)
        level = 1.5 * self._last_residual if self._last_residual is not None else 0.0
        if not cold and float(np.max(res[1])) > max(self.cfg.reinit_error, level):
            self.stats["reinit"] += 1
            history = self.history
            self.history = []
            again = self._fit(frames, True)
            self.history = history
            if float(np.max(again[1])) < float(np.max(res[1])):  # keep the cold refit only where it fits better
                res, cold = again, True
            else:
                self.stats["reinit_kept_warm"] += 1
        params, residuals = res
        self.stats["windows"] += 1
        self.stats["cold_windows"] += int(cold)
        n_final = len(frames) if final else max(len(frames) - self.cfg.tail, 0)
        out = [TrackedFrame(frames[i], params[i], "ok", cold, float(residuals[i]), self.shot) for i in range(n_final)]
        self.stats["fitted"] += n_final
        self.history = (self.history + params[:n_final])[-max(self.cfg.history, 1):]
        self._last_residual = float(np.median(residuals))
        self.pending = list(zip(frames[n_final:], params[n_final:], strict=True))
        self.new = []
        self.timings["fit_s"] += time.perf_counter() - t0
        if out:
            self.sink(out)

    def _fit(self, frames: list[FrameObs], cold: bool) -> tuple[list[FlameParams], np.ndarray]:
        t0 = time.perf_counter()
        f = self.fitter
        batch = self._batch(frames)
        params = self._initial(frames, batch, cold)
        history = [] if cold else self.history
        self.timings["prepare_s"] += time.perf_counter() - t0
        photometric = ("photometric",) if self.cfg.mode == "photometric" else ()
        video = Sharing.video()  # the identity is shared; the window's stages hold it (IDENTITY_FIELDS)
        if self.cfg.solver == "lm":
            # the landmark stage on the identity's landmark model (fit's Levenberg-Marquardt, coupled over the
            # window by the temporal term); a cold window starts from PnP (_initial), so no rigid stage
            view = self._view(batch)
            vbatch = batch.select_dense(self._dense_idx(batch))
            params, logs = view.run_stages(self._stages(view, vbatch, cold, history, ("landmarks",)), params, vbatch,
                                           video)
            names = photometric
        else:
            logs = []
            names = (("rigid",) if cold else ()) + ("landmarks",) + photometric
        params, more = f.run_stages(self._stages(f, batch, cold, history, names), params, batch, video,
                                    light_done=not cold)
        for log in logs + more:
            key = "photometric_s" if log.name.startswith("photometric") else "landmarks_s"
            self.timings[key] += log.seconds
        residuals = self._residuals(params, batch)
        rows = [params_to_original(_row(params, b), batch.crops[b]) for b in range(batch.size)]
        return rows, residuals

    def _dense_idx(self, batch):
        """The MediaPipe points the window solver uses (TrackConfig.dense_points); None: all."""
        sel = DENSE_POINTS[self.cfg.dense_points]
        if sel is None or batch.dense is None:
            return None
        return tuple(i for i in sel if i < batch.dense.shape[1])

    def _view(self, batch):
        """The fitter with the identity folded into its landmark model and the window solver's MediaPipe points
        (:meth:`flamefit.fit.fitter.Fitter.with_identity`), one per point set."""
        key = self._dense_idx(batch)
        if key not in self._views:
            f = self.fitter
            shape = torch.as_tensor(self.identity.shape, dtype=f.dtype, device=f.device)
            self._views[key] = f.with_identity(shape, key)
        return self._views[key]

    @torch.no_grad()
    def _residuals(self, params: FlameParams, batch) -> np.ndarray:
        """Per frame: rms landmark residual / face size (both in crop pixels)."""
        from flamefit.render.camera import project_points

        f = self.fitter
        which = "68" if batch.lmk68 is not None else "dense"
        verts, faces = f.landmark_vertices(params)
        pts = f.model_points(params, verts, (which,), faces)[which]
        proj = project_points(f.to_camera(params, pts), params.intrinsics())
        target = batch.lmk68 if which == "68" else batch.dense
        rms = (proj - target).pow(2).sum(-1).mean(-1).sqrt().cpu().numpy()
        size = np.array([face_size_px(t) for t in target.cpu().numpy()])
        return rms / size
