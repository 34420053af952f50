"""Stages as data: which parameters are free, which loss terms apply, how many iterations, which learning rates
and schedule, at which image resolution. :func:`build_stages` turns the config into stages, in one place; the one
optimisation loop (:mod:`flamefit.fit.optimize`) runs any of them.

Default order: rigid (camera only, landmarks) -> landmarks (geometry) -> appearance (texture + light, geometry
frozen, so shading does not bend the shape early) -> photometric_coarse (everything, at a lower resolution: cheaper
iterations to get close; off by default: on a CPU the per-iteration cost is mostly resolution-independent) ->
photometric (everything) -> offset (per-texel offset, geometry frozen). ``texture`` (for ``fit-texture``) refits
texture and light of a saved fit.

Solvers: Adam by default; the stages without rendering (rigid, landmarks) run Levenberg-Marquardt by default
(``solver = "lm"``, :mod:`flamefit.fit.lm`), the stages that free no geometry render once (``frozen_render``,
:mod:`flamefit.fit.frozen`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from flamefit.errors import ConfigError
from flamefit.fit import terms as T
from flamefit.fit.config import FitConfig, StageConfig
from flamefit.fit.frozen import GEOMETRY_FIELDS


class StageName(str, Enum):
    RIGID = "rigid"
    LANDMARKS = "landmarks"
    APPEARANCE = "appearance"
    PHOTOMETRIC_COARSE = "photometric_coarse"
    PHOTOMETRIC = "photometric"
    OFFSET = "offset"
    TEXTURE = "texture"


DEFAULT_ORDER = (StageName.RIGID, StageName.LANDMARKS, StageName.APPEARANCE, StageName.PHOTOMETRIC_COARSE,
                 StageName.PHOTOMETRIC, StageName.OFFSET)
# the config section of each stage (fit-texture's stage is configured as `texture_only`)
CONFIG_SECTION = {s: ("texture_only" if s is StageName.TEXTURE else s.value) for s in StageName}


@dataclass
class Stage:
    """One optimisation stage (see module doc). ``resolution``: render size in pixels (0: no render);
    ``lr_scale``: per-field multipliers of ``lr``; the lr follows a cosine from ``lr`` to ``lr * lr_final``;
    an item stops early when its loss improved by less than ``early_stop_rel`` over ``early_stop_patience``
    iterations (0: never); ``frozen_render``: the stage frees no geometry or camera parameter, so its render's
    pixels are computed once (:mod:`flamefit.fit.frozen`)."""

    name: StageName
    free: tuple[str, ...]
    terms: tuple[T.LossTerm, ...]
    iters: int
    lr: float
    lr_scale: dict[str, float] = field(default_factory=dict)
    lr_final: float = 0.1
    resolution: int = 0
    early_stop_patience: int = 0
    early_stop_rel: float = 1e-3
    # geometry and camera fixed: render once per stage (flamefit.fit.frozen), per iteration only shade and compare
    frozen_render: bool = False
    solver: str = "adam"  # or 'lm' (flamefit.fit.lm): at most lm_iters iterations, per-item tolerance lm_rel_tol
    lm_iters: int = 30
    lm_rel_tol: float = 1e-3
    lm_freeze: tuple[str, ...] = ()  # fields LM holds fixed
    # central differences for the fields the residuals are nonlinear in (poses, translations); False: forward
    # differences, half the model evaluations (video windows, which start within a frame's motion of the answer)
    lm_central: bool = True

    @property
    def photometric(self) -> bool:
        return self.resolution > 0

    def lr_factor(self, i: int) -> float:
        """Cosine schedule from 1 at iteration 0 to ``lr_final`` at the last."""
        frac = i / max(1, self.iters - 1)
        return self.lr_final + (1 - self.lr_final) * 0.5 * (1 + math.cos(math.pi * frac))


def stage_config(cfg: FitConfig, name: StageName) -> StageConfig:
    return getattr(cfg, CONFIG_SECTION[name])


def parse_stage_names(names) -> tuple[StageName, ...]:
    out = []
    for n in names:
        try:
            out.append(StageName(n))
        except ValueError:
            raise ConfigError(f"unknown stage {n!r}; stages are {[s.value for s in StageName]}") from None
    return tuple(out)


def build_stages(cfg: FitConfig, *, has68: bool, has_dense: bool, n_tex: int, free_albedo: bool,
                 names=DEFAULT_ORDER) -> list[Stage]:
    """The stages to run, in order, from the config (stages with 0 iterations, and the offset stage when
    ``texture.offset`` is off, are left out). ``has68``/``has_dense``: which landmark sets the batch has."""
    w = cfg.weights
    optim = cfg.optim
    scale = {k: float(getattr(optim.lr_scale, k)) for k in optim.lr_scale.__dataclass_fields__}
    cam = ("global_pose", "cam_translation") + (("focal_px",) if cfg.camera.optimize_focal else ())
    geo = cam + ("shape", "expression", "jaw_pose", "neck_pose", "eye_pose")
    app = ("light",) + (("tex",) if n_tex else ())

    def landmark_terms(factor: float, with_shape_terms: bool) -> list[T.LossTerm]:
        out: list[T.LossTerm] = []
        if has68:
            out.append(T.Landmark68Term("lmk68", factor))
            if with_shape_terms:
                out += [T.EyeClosureTerm("eye_closure", factor * w.eye_closure),
                        T.LipDistanceTerm("lip_distance", factor * w.lip_distance)]
        if has_dense:
            out.append(T.DenseLandmarkTerm("lmk_dense", factor))
        return out

    def priors() -> list[T.LossTerm]:
        return [T.PriorTerm("shape_prior", w.shape_prior, "shape"), T.PriorTerm("expr_prior", w.expr_prior,
                "expression"),
                T.JawPriorTerm("jaw_prior", w.jaw_prior, lateral=w.jaw_lateral_prior, closed=w.jaw_closed),
                T.PriorTerm("neck_prior", w.neck_prior, "neck_pose"),
                T.PriorTerm("eye_pose_prior", w.eye_pose_prior, "eye_pose")]

    def appearance_terms(offset_free: bool) -> list[T.LossTerm]:
        out: list[T.LossTerm] = [T.PhotometricTerm("photo", w.photo, cfg.robust_scale),
                                 T.LightPriorTerm("light_prior", w.light_prior)]
        if n_tex:
            out.append(T.PriorTerm("tex_prior", w.tex_prior, "tex"))
        if offset_free:
            l2 = w.tex_offset_l2 * (cfg.texture.free_offset_l2_factor if free_albedo else 1.0)
            out += [T.TexOffsetL2Term("tex_offset", l2),
                    T.TexOffsetSmoothTerm("tex_offset_smooth", w.tex_offset_smooth,
                                          cfg.texture.smooth_reference_side),
                    T.TexOffsetSymmetryTerm("tex_offset_symmetry", w.tex_offset_symmetry)]
        return out

    free_off = ("tex_offset",) if free_albedo else ()
    spec = {
        StageName.RIGID: (cam, landmark_terms(1.0, False), False),
        StageName.LANDMARKS: (geo, landmark_terms(1.0, True) + priors(), False),
        StageName.APPEARANCE: (app + free_off, appearance_terms(free_albedo), True),
        StageName.PHOTOMETRIC: (geo + app + free_off, landmark_terms(cfg.photometric_landmark_scale, True)
                                + priors() + appearance_terms(free_albedo), True),
        StageName.PHOTOMETRIC_COARSE: (geo + app + free_off, landmark_terms(cfg.photometric_landmark_scale, True)
                                       + priors() + appearance_terms(free_albedo), True),
        StageName.OFFSET: (("light", "tex_offset") + app[1:], appearance_terms(True), True),
        StageName.TEXTURE: (("light", "tex_offset") + app[1:], appearance_terms(True), True),
    }
    stages = []
    for name in parse_stage_names(names):
        sc = stage_config(cfg, name)
        if sc.iters <= 0 or (name is StageName.OFFSET and not cfg.texture.offset):
            continue
        free, terms, photometric = spec[name]
        res = (sc.resolution or cfg.resolution) if photometric else 0
        stages.append(Stage(name=name, free=tuple(free), terms=tuple(terms), iters=sc.iters, lr=sc.lr,
                            lr_scale=scale, lr_final=optim.lr_final_fraction, resolution=min(res, cfg.resolution),
                            early_stop_patience=sc.early_stop_patience, early_stop_rel=sc.early_stop_rel,
                            frozen_render=photometric and not (set(free) & GEOMETRY_FIELDS),
                            solver=sc.solver, lm_iters=sc.lm_iters, lm_rel_tol=sc.lm_rel_tol,
                            lm_freeze=tuple(sc.lm_freeze)))
    return stages
