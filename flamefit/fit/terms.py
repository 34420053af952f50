"""Loss terms as objects: a term is a name, a weight and a function of a :class:`FitContext` that returns one loss
per item, shape (B,). The fit minimises the SUM over items, so independent items never couple (Adam is
per-element) and B images fitted together give the same result as one by one.

Adding a term (a texture prior, temporal smoothness for video) is one small class here plus one line where the
stages are built (:mod:`flamefit.fit.stages`); nothing else changes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from flamefit.fit import losses as L
from flamefit.fit.params import FlameParams
from flamefit.render.camera import project_points


class FitContext:
    """Everything a term may read at one iteration: the batch's targets, the current (B-row) parameters, and
    derived quantities computed at most once per iteration (vertices, projected landmarks, the render)."""

    def __init__(self, fitter, batch, params: FlameParams, render_size: int | None = None):
        self.fitter = fitter
        self.batch = batch
        self.params = params
        self.render_size = render_size  # None: a stage without rendering (landmark vertices suffice)

    @functools.cached_property
    def vertices(self) -> torch.Tensor:
        return self.fitter.vertices(self.params)[0]

    @functools.cached_property
    def _landmark_mesh(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.render_size is None:
            return self.fitter.landmark_vertices(self.params)
        return self.vertices, self.fitter.faces

    @functools.cached_property
    def K(self) -> torch.Tensor:
        return self.params.intrinsics()

    def _project(self, which: str) -> torch.Tensor:
        verts, faces = self._landmark_mesh
        pts = self.fitter.model_points(self.params, verts, which=(which,), faces=faces)[which]
        return project_points(self.fitter.to_camera(self.params, pts), self.K)

    @functools.cached_property
    def lmk68_px(self) -> torch.Tensor:
        """(B,68,2) the model's 68 landmarks in crop pixels (contour chosen by the current yaw)."""
        return self._project("68")

    @functools.cached_property
    def dense_px(self) -> torch.Tensor:
        return self._project("dense")

    @functools.cached_property
    def level(self):
        return self.batch.level(self.render_size or self.batch.resolution)

    @functools.cached_property
    def render(self):
        """The shaded, textured render at this stage's resolution (intrinsics scaled to it)."""
        size = self.level.size
        return self.fitter.render(self.params, self.vertices, (size, size), K_scale=self.level.scale)


@dataclass
class LossTerm:
    """Base: ``weight * value(ctx)`` per item (B,). Subclasses implement :meth:`value`."""

    name: str
    weight: float = 1.0

    def __call__(self, ctx: FitContext) -> torch.Tensor:
        return self.weight * self.value(ctx)

    def value(self, ctx: FitContext) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class Landmark68Term(LossTerm):
    """Huber on the 68 points (units of the crop side); per-point weights come with the batch."""

    delta: float = 0.02

    def value(self, ctx):
        b = ctx.batch
        return L.landmark_loss(ctx.lmk68_px, b.lmk68, float(b.resolution), b.lmk68_weights, self.delta)


@dataclass
class DenseLandmarkTerm(LossTerm):
    """Huber on MediaPipe's 478 points."""

    delta: float = 0.02

    def value(self, ctx):
        b = ctx.batch
        return L.landmark_loss(ctx.dense_px, b.dense, float(b.resolution), b.dense_weights, self.delta)


@dataclass
class EyeClosureTerm(LossTerm):
    """Upper-minus-lower eyelid vectors of the fit match the detected ones (both eyes)."""

    def value(self, ctx):
        b = ctx.batch
        v = L.eye_closure_loss(ctx.lmk68_px, b.lmk68, float(b.resolution))
        return v * b.has68.to(v)


@dataclass
class LipDistanceTerm(LossTerm):
    """Inner upper-minus-lower lip vectors match the detected ones (mouth opening)."""

    def value(self, ctx):
        b = ctx.batch
        v = L.lip_distance_loss(ctx.lmk68_px, b.lmk68, float(b.resolution))
        return v * b.has68.to(v)


@dataclass
class PriorTerm(LossTerm):
    """Sum of squares of one parameter field per item (coefficients in sd units, poses in radians)."""

    field: str = "shape"

    def value(self, ctx):
        return L.l2_prior(getattr(ctx.params, self.field))


@dataclass
class LightPriorTerm(LossTerm):
    """Non-ambient SH bands small, channels' ambient terms close to each other."""

    def value(self, ctx):
        return L.light_prior(ctx.params.light)


@dataclass
class PhotometricTerm(LossTerm):
    """Robust colour difference on the skin mask x rendered coverage, normalised per item by its mask mass.
    A camera clips at white: the render is clipped too (saturated pixels then carry no gradient)."""

    robust_scale: float = 0.1

    def value(self, ctx):
        out, lv = ctx.render, ctx.level
        return L.photometric_loss_clipped(out.rgb, lv.image, lv.mask, out.alpha, self.robust_scale)


@dataclass
class TexOffsetL2Term(LossTerm):
    def value(self, ctx):
        return L.map_l2(ctx.params.tex_offset)


@dataclass
class TexOffsetSmoothTerm(LossTerm):
    """Smoothness of the offset map, scaled by (side / reference)^2 so the weight means the same for any map
    resolution."""

    reference_side: int = 100

    def value(self, ctx):
        off = ctx.params.tex_offset
        return L.map_smoothness(off) * (off.shape[1] / self.reference_side) ** 2


@dataclass
class TexOffsetSymmetryTerm(LossTerm):
    """Left-right symmetry of the offset (FLAME's UV layout mirrors the face about u = 0.5)."""

    def value(self, ctx):
        return L.map_symmetry(ctx.params.tex_offset)


@dataclass
class TemporalSmoothnessTerm(LossTerm):
    """For video batches (items = consecutive frames): squared change of ``fields`` between neighbouring frames,
    each pair's cost split between its two frames. Couples items on purpose; not used for independent photos."""

    fields: tuple[str, ...] = ("expression", "jaw_pose", "global_pose")

    def value(self, ctx):
        p = ctx.params
        out = p.shape.new_zeros(p.batch_size)
        if p.batch_size < 2:
            return out
        for f in self.fields:
            x = getattr(p, f).flatten(1)
            d = (x[1:] - x[:-1]).pow(2).sum(-1) / 2
            out = out + torch.cat([d, d.new_zeros(1)]) + torch.cat([d.new_zeros(1), d])
        return out
