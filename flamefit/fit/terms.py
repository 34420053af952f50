"""Loss terms as objects: a term is a name, a weight and a function of a :class:`FitContext` that returns one loss
per item, shape (B,). The fit minimises the SUM over items, so independent items never couple (Adam is
per-element) and B images fitted together give the same result as one by one.

Adding a term (a texture prior, another temporal term for video) is one small class here plus one line where the
stages are built (:mod:`flamefit.fit.stages`); nothing else changes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from flamefit import ibug68
from flamefit.fit import losses as L
from flamefit.fit.params import FlameParams
from flamefit.render.camera import project_points


class FitContext:
    """Everything a term may read at one iteration: the batch's targets, the current (B-row) parameters, and
    derived quantities computed at most once per iteration (vertices, projected landmarks, the render)."""

    def __init__(self, fitter, batch, params: FlameParams, render_size: int | None = None, frozen=None,
                 contour_yaw_rad: torch.Tensor | None = None, landmark_mesh=None):
        self.fitter = fitter
        self.batch = batch
        self.params = params
        self.render_size = render_size  # None: a stage without rendering (landmark vertices suffice)
        self.frozen = frozen  # a FrozenRender: geometry fixed for the stage, its pixels computed once
        # (B,) yaw that picks the 68-point contour instead of the params' own (finite-difference Jacobians)
        self.contour_yaw_rad = contour_yaw_rad
        # (vertices, faces) of the landmark model for ``params`` when already known (exact Jacobian columns)
        self._given_mesh = landmark_mesh

    @functools.cached_property
    def vertices(self) -> torch.Tensor:
        return self.fitter.vertices(self.params)[0]

    @functools.cached_property
    def _landmark_mesh(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._given_mesh is not None:
            return self._given_mesh
        if self.render_size is None:
            return self.fitter.landmark_vertices(self.params)
        return self.vertices, self.fitter.faces

    @functools.cached_property
    def K(self) -> torch.Tensor:
        return self.params.intrinsics()

    def _project(self, which: str) -> torch.Tensor:
        verts, faces = self._landmark_mesh
        if which == "68" and self.contour_yaw_rad is not None:
            pts = self.fitter.landmarks68.project(verts, faces, self.contour_yaw_rad)
        else:
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
    def offset_regularizers(self) -> torch.Tensor:
        """(B,3) :func:`flamefit.fit.losses.map_l2`, ``map_smoothness`` and ``map_symmetry`` of the texel offset,
        in one autograd node (the offset stage's iterations are a few milliseconds)."""
        return _OffsetRegularizers.apply(self.params.tex_offset)

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

    def residuals(self, ctx: FitContext) -> torch.Tensor | None:
        """(B,M) residuals with ``self(ctx) == 0.5 * |r|^2`` per item, for least-squares solvers
        (:mod:`flamefit.fit.lm`); None: this term has no such form (its stage then runs Adam)."""
        return None


def _robust_residuals(pred_px, target_px, image_size: float, weights, delta: float, scale: float) -> torch.Tensor:
    """Residual vectors of :func:`flamefit.fit.losses.landmark_loss` x ``scale``: each point's error vector,
    rescaled so that half its squared length is the point's Huber loss (exact, not IRLS)."""
    e = (pred_px - target_px) / image_size  # (B,N,2)
    d = e.norm(dim=-1)
    robust = torch.sqrt(2 * delta * (d - 0.5 * delta).clamp(min=0)) / d.clamp(min=1e-12)
    s = torch.where(d < delta, torch.ones_like(d), robust)
    w = weights.to(e.dtype).expand(d.shape) if weights is not None else torch.ones_like(d)
    s = s * torch.sqrt(w.clamp(min=0) * scale / d.shape[1])
    return (e * s.unsqueeze(-1)).flatten(1)


def _gap_residuals(pred68, target68, groups, image_size: float, scale: float) -> torch.Tensor:
    """Residuals of sums of ``_gap_loss`` terms: ``scale * mean_k |gap_k|^2`` per (upper, lower) group."""
    out = []
    for upper, lower in groups:
        g = (pred68[:, list(upper)] - pred68[:, list(lower)]) - (target68[:, list(upper)] - target68[:, list(lower)])
        out.append((g / image_size).flatten(1) * (2 * scale / len(upper)) ** 0.5)
    return torch.cat(out, 1)


@dataclass
class _HuberLandmarkTerm(LossTerm):
    """Huber on model points vs detected points (units of the crop side), with per-point weights from the batch;
    subclasses say which points (:meth:`points`)."""

    delta: float = 0.02

    def points(self, ctx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """(predicted px (B,N,2), detected px (B,N,2), weights)."""
        raise NotImplementedError

    def value(self, ctx):
        pred, target, w = self.points(ctx)
        return L.landmark_loss(pred, target, float(ctx.batch.resolution), w, self.delta)

    def residuals(self, ctx):
        pred, target, w = self.points(ctx)
        return _robust_residuals(pred, target, float(ctx.batch.resolution), w, self.delta, self.weight)


@dataclass
class Landmark68Term(_HuberLandmarkTerm):
    """The 68 iBUG points (contour chosen by the current yaw)."""

    def points(self, ctx):
        return ctx.lmk68_px, ctx.batch.lmk68, ctx.batch.lmk68_weights


@dataclass
class DenseLandmarkTerm(_HuberLandmarkTerm):
    """MediaPipe's 478 points."""

    def points(self, ctx):
        return ctx.dense_px, ctx.batch.dense, ctx.batch.dense_weights


@dataclass
class EyeClosureTerm(LossTerm):
    """Upper-minus-lower eyelid vectors of the fit match the detected ones (both eyes)."""

    def value(self, ctx):
        b = ctx.batch
        v = L.eye_closure_loss(ctx.lmk68_px, b.lmk68, float(b.resolution))
        return v * b.has68.to(v)

    def residuals(self, ctx):
        b = ctx.batch
        groups = ((ibug68.RIGHT_EYE_UPPER, ibug68.RIGHT_EYE_LOWER), (ibug68.LEFT_EYE_UPPER, ibug68.LEFT_EYE_LOWER))
        r = _gap_residuals(ctx.lmk68_px, b.lmk68, groups, float(b.resolution), self.weight / 2)
        return r * b.has68.to(r).unsqueeze(1)


@dataclass
class LipDistanceTerm(LossTerm):
    """Inner upper-minus-lower lip vectors match the detected ones (mouth opening)."""

    def value(self, ctx):
        b = ctx.batch
        v = L.lip_distance_loss(ctx.lmk68_px, b.lmk68, float(b.resolution))
        return v * b.has68.to(v)

    def residuals(self, ctx):
        b = ctx.batch
        groups = ((ibug68.INNER_LIP_UPPER, ibug68.INNER_LIP_LOWER),)
        r = _gap_residuals(ctx.lmk68_px, b.lmk68, groups, float(b.resolution), self.weight)
        return r * b.has68.to(r).unsqueeze(1)


@dataclass
class PriorTerm(LossTerm):
    """Sum of squares of one parameter field per item (coefficients in sd units, poses in radians)."""

    field: str = "shape"

    def value(self, ctx):
        return L.l2_prior(getattr(ctx.params, self.field))

    def residuals(self, ctx):
        x = getattr(ctx.params, self.field)
        return x.flatten(1) * (2 * self.weight) ** 0.5


@dataclass
class JawPriorTerm(PriorTerm):
    """The jaw's axis-angle: its opening (x) under ``weight`` like any pose; turning sideways or rolling (y, z)
    under ``lateral`` and closing past closed (x < 0: the teeth through each other) under ``closed``, both absolute
    weights. A jaw barely turns sideways, and landmarks alone let both trade against the expression: on
    ../shared/eval's clip (landmark mode) the fitted opening was 0.74x the truth - 0.024 rad, negative on 37 % of
    the frames, with up to 0.12 rad of roll where the truth has none."""

    field: str = "jaw_pose"
    lateral: float = 0.0
    closed: float = 0.0

    def _scaled(self, ctx) -> torch.Tensor:
        x = ctx.params.jaw_pose
        return torch.stack([x[:, 0] * self.weight ** 0.5, x[:, 1] * self.lateral ** 0.5,
                            x[:, 2] * self.lateral ** 0.5, x[:, 0].clamp(max=0.0) * self.closed ** 0.5], 1)

    def __call__(self, ctx):  # each of the three weights is absolute
        return self._scaled(ctx).pow(2).sum(-1)

    def value(self, ctx):  # the loss in units of the opening's weight (the plain squares when that weight is 0)
        return self(ctx) / self.weight if self.weight > 0 else ctx.params.jaw_pose.pow(2).sum(-1)

    def residuals(self, ctx):
        return self._scaled(ctx) * 2 ** 0.5


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
        if ctx.frozen is not None:  # same loss and gradients, from the stage's precomputed pixels
            return ctx.frozen.photometric_loss(ctx.params, self.robust_scale)
        out, lv = ctx.render, ctx.level
        return L.photometric_loss_clipped(out.rgb, lv.image, lv.mask, out.alpha, self.robust_scale)


class _OffsetRegularizers(torch.autograd.Function):
    """x (B,H,W,C) -> (B,3): mean square, mean squared finite differences along rows plus along columns, mean
    squared left-right asymmetry; the gradient in closed form."""

    @staticmethod
    def forward(ctx, x):
        B, H, W, C = x.shape
        dx = x[:, :, 1:] - x[:, :, :-1]
        dy = x[:, 1:] - x[:, :-1]
        e = x - x.flip(2)
        ctx.save_for_backward(x, dx, dy, e)
        n, n_dx, n_dy = H * W * C, H * max(W - 1, 1) * C, max(H - 1, 1) * W * C
        ctx.n = (n, n_dx, n_dy)
        return torch.stack([x.pow(2).flatten(1).sum(-1) / n,
                            dx.pow(2).flatten(1).sum(-1) / n_dx + dy.pow(2).flatten(1).sum(-1) / n_dy,
                            e.pow(2).flatten(1).sum(-1) / n], 1)

    @staticmethod
    def backward(ctx, g):
        x, dx, dy, e = ctx.saved_tensors
        n, n_dx, n_dy = ctx.n
        g = g.view(-1, 3, 1, 1, 1)
        out = x * (2 * g[:, 0] / n) + e * (4 * g[:, 2] / n)  # d/dx mean (x - flip x)^2 = 4 (x - flip x) / n
        gx = dx * (2 * g[:, 1] / n_dx)
        out[:, :, 1:] += gx
        out[:, :, :-1] -= gx
        gy = dy * (2 * g[:, 1] / n_dy)
        out[:, 1:] += gy
        out[:, :-1] -= gy
        return out


@dataclass
class TexOffsetL2Term(LossTerm):
    def value(self, ctx):
        return ctx.offset_regularizers[:, 0]


@dataclass
class TexOffsetSmoothTerm(LossTerm):
    """Smoothness of the offset map, scaled by (side / reference)^2 so the weight means the same for any map
    resolution."""

    reference_side: int = 100

    def value(self, ctx):
        off = ctx.params.tex_offset
        return ctx.offset_regularizers[:, 1] * (off.shape[1] / self.reference_side) ** 2


@dataclass
class TexOffsetSymmetryTerm(LossTerm):
    """Left-right symmetry of the offset (FLAME's UV layout mirrors the face about u = 0.5)."""

    def value(self, ctx):
        return ctx.offset_regularizers[:, 2]


@dataclass
class TemporalTerm(LossTerm):
    """For video windows (items = consecutive frames, in time order):
    ``sum_f accel[f] |x[t+1] - 2 x[t] + x[t-1]|^2 + velocity[f] |x[t] - x[t-1]|^2`` over per-frame fields (a weight is
    a number, or one per component, e.g. the camera depth apart from x/y), with the frozen ``history`` rows (field ->
    (H, D) tensor, oldest first: the last frames already written before the window, so there is no seam at window
    boundaries) in front of the window's frames. Each pair's and triple's cost is put on its last frame (the sum is
    what is minimised). It couples the items on purpose (``couples_items``): Levenberg-Marquardt then solves the
    window's frames jointly
    (:func:`flamefit.fit.lm.levenberg_marquardt_coupled`). Weights in per-frame^2 units of the field (radians, sd,
    metres); the tracker's defaults are in :mod:`flamefit.track.terms`."""

    accel: dict = field(default_factory=dict)
    velocity: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    couples_items: bool = True
    linear: bool = True  # its residuals are affine in the parameters (exact Gauss-Newton, a constant Jacobian)

    def _rows(self, p):
        """Per field and kind: (D,) weights and the (B, D) differences assigned to the window's frames (zeros for
        frames without enough predecessors)."""
        B = p.batch_size
        for name in sorted(set(self.accel) | set(self.velocity)):
            x = getattr(p, name)
            if x is None:
                continue
            x = x.flatten(1)
            h = self.history.get(name)
            if h is not None and len(h):
                x = torch.cat([h.to(x).flatten(1), x], 0)
            for w, order in ((self.velocity.get(name, 0.0), 1), (self.accel.get(name, 0.0), 2)):
                wd = _dim_weights(w, x)
                if wd is None:
                    continue
                if x.shape[0] > order:
                    d = x[1:] - x[:-1] if order == 1 else x[2:] - 2 * x[1:-1] + x[:-2]  # ends at frame k + order
                    d = d[-B:]
                    if d.shape[0] < B:  # the first frames have no predecessors (no history)
                        d = torch.cat([d.new_zeros(B - d.shape[0], d.shape[1]), d])
                else:
                    d = x.new_zeros(B, x.shape[1])
                yield wd, d

    def value(self, ctx):
        p = ctx.params
        out = p.shape.new_zeros(p.batch_size)
        for wd, d in self._rows(p):
            out = out + (d.pow(2) * wd).sum(-1)
        return out

    def residuals(self, ctx):
        """(B, M): row b depends on frame b and its predecessors (the coupled solver's Jacobian spans frames)."""
        p = ctx.params
        rows = [d * (2 * self.weight * wd).sqrt() for wd, d in self._rows(p)]
        return torch.cat(rows, 1) if rows else p.shape.new_zeros(p.batch_size, 0)


def _dim_weights(w, x: torch.Tensor) -> torch.Tensor | None:
    """(D,) weights for the flattened field ``x`` (T,D) from a number or one value per component; None if all 0."""
    t = torch.as_tensor(w, dtype=x.dtype, device=x.device).reshape(-1)
    if not bool((t != 0).any()):
        return None
    return t.expand(x.shape[1]) if t.numel() == 1 else t
