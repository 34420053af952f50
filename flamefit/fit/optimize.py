"""The one optimisation loop: runs a :class:`flamefit.fit.stages.Stage` on a batch.

Per item (row of the batch): the loss is checked for finiteness every iteration (a NaN/inf raises
:class:`FitDivergedError` naming the item, the stage and the iteration), the best iterate is kept
(Adam may end slightly above it) and the item stops early once converged. Items interact only through parameters
declared shared in :class:`Sharing` (a video's identity and texture), then keep-best and early stopping act on the
whole batch, or through terms that couple them (:class:`flamefit.fit.terms.TemporalTerm` in a video window).
Stages without rendering run Levenberg-Marquardt (:mod:`flamefit.fit.lm`): per item for photos, jointly over a
video window's frames when a term couples them; photos and video windows go through this one solver.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from flamefit.errors import FlamefitError
from flamefit.fit import terms as T
from flamefit.fit.params import FlameParams
from flamefit.fit.stages import Stage
from flamefit.fit.terms import FitContext


class FitDivergedError(FlamefitError):
    """The loss of an item became NaN/inf (bad input, or a diverging optimisation)."""


@dataclass(frozen=True)
class Sharing:
    """Which parameter fields have one value for the whole batch (the rest are per item).

    ``Sharing()``: independent images. ``Sharing.video()``: frames of one person (identity and texture shared)."""

    shared: frozenset = frozenset()

    @classmethod
    def video(cls) -> Sharing:
        return cls(frozenset({"shape", "tex", "tex_offset"}))

    def is_shared(self, name: str) -> bool:
        return name in self.shared


@dataclass
class StageLog:
    name: str
    iters: int
    seconds: float
    loss_start: float  # summed over the batch's items
    loss_end: float
    terms: dict = field(default_factory=dict)  # name -> value summed over items (at the kept iterate)
    iters_run: int = 0  # iterations actually run (early stopping)
    item_loss_start: list = field(default_factory=list)
    item_loss_end: list = field(default_factory=list)
    item_iters_run: list = field(default_factory=list)  # per item (early stopping, LM convergence)


def evaluate(stage: Stage, ctx: FitContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-item total (B,) and per-term (B,) losses of ``stage`` at ``ctx``."""
    terms = {t.name: t(ctx) for t in stage.terms}
    total = sum(terms.values())
    return total, terms


def _check_finite(values: torch.Tensor, batch, stage: Stage, iteration: int) -> None:
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        names = [batch.names[i] for i in torch.nonzero(bad).flatten().tolist()]
        raise FitDivergedError(
            f"fit diverged: the loss of {', '.join(names)} is not finite in stage '{stage.name.value}' at "
            f"iteration {iteration}; check the input (landmarks, image) or lower the stage's lr "
            f"(--set {stage.name.value}.lr=...)")


def run_stage(fitter, stage: Stage, params: FlameParams, batch, sharing: Sharing | None = None,
              callback=None) -> tuple[FlameParams, StageLog]:
    """Run ``stage`` from ``params`` (B rows); returns the kept parameters and a log. ``stage.solver == 'lm'``
    runs Levenberg-Marquardt where it applies (:func:`lm_applies`), else Adam."""
    sharing = sharing or Sharing()
    if stage.solver == "lm" and lm_applies(stage, params, sharing):
        return _run_lm(fitter, stage, params, batch, callback)
    t0 = time.perf_counter()
    params = params.detach()
    B = params.batch_size
    names = [n for n in stage.free if getattr(params, n) is not None]
    # one value for the batch: keep-best and early stopping act on the whole batch. A term coupling the items (a
    # window's temporal term) leaves them per frame, as before: window-wide gave the same bench track numbers
    any_shared = any(sharing.is_shared(n) for n in names)
    # leaves: shared fields hold one row, expanded to B in the loss
    leaves = {}
    for n in names:
        v = getattr(params, n)
        leaves[n] = (v[:1] if sharing.is_shared(n) else v).detach().clone().requires_grad_(True)
    groups = [{"params": [leaves[n]], "lr": stage.lr * stage.lr_scale.get(n, 1.0)} for n in names]
    opt = torch.optim.Adam(groups, betas=(fitter.cfg.optim.adam_beta1, fitter.cfg.adam_beta2))
    base_lr = [g["lr"] for g in groups]

    def current() -> FlameParams:
        p = params._map(lambda t: t)
        for n, leaf in leaves.items():
            setattr(p, n, leaf.expand(B, *leaf.shape[1:]) if leaf.shape[0] != B else leaf)
        return p

    # keep-best per item (or for the whole batch when something is shared)
    best = torch.full((B,), float("inf"), dtype=params.shape.dtype)
    best_vals = {n: leaf.detach().clone() for n, leaf in leaves.items()}
    best_terms: dict[str, torch.Tensor] = {}
    active = torch.ones(B, dtype=torch.bool)
    history: list[torch.Tensor] = []
    first = None
    iters_run = 0
    item_iters = torch.zeros(B, dtype=torch.int64)
    pixels = None  # fixed geometry: the render's pixels, once for the stage
    if stage.frozen_render:
        from flamefit.fit.frozen import FrozenRender

        pixels = FrozenRender(fitter, params, batch.level(stage.resolution or batch.resolution))
    for i in range(stage.iters):
        f = stage.lr_factor(i)
        for g, lr0 in zip(opt.param_groups, base_lr, strict=True):
            g["lr"] = lr0 * f
        opt.zero_grad(set_to_none=True)
        ctx = FitContext(fitter, batch, current(), stage.resolution or None, pixels)
        total, terms = evaluate(stage, ctx)
        values = total.detach().cpu()
        _check_finite(values, batch, stage, i)
        if first is None:
            first = values.clone()
        _keep_best(values, best, best_vals, best_terms, leaves, terms, any_shared, active)
        history.append(values)
        total.sum().backward()
        frozen = {n: leaf.detach()[~active].clone() for n, leaf in leaves.items()
                  if not any_shared and not bool(active.all())}
        opt.step()
        if frozen:  # converged items keep their values (Adam's momentum would move them on)
            with torch.no_grad():
                for n, v in frozen.items():
                    leaves[n][~active] = v
        iters_run = i + 1
        item_iters += active.to(item_iters.dtype) if not any_shared else 1
        if callback is not None:
            callback(stage.name.value, i + 1, stage.iters)
        if stage.early_stop_patience > 0:
            _update_active(active, history, stage, any_shared)
            if not bool(active.any()):
                break
    with torch.no_grad():
        ctx = FitContext(fitter, batch, current(), stage.resolution or None, pixels)
        total, terms = evaluate(stage, ctx)
        values = total.detach().cpu()
        _check_finite(values, batch, stage, iters_run)
        _keep_best(values, best, best_vals, best_terms, leaves, terms, any_shared, torch.ones(B, dtype=torch.bool))
    out = params.detach()
    for n in names:
        v = best_vals[n]
        setattr(out, n, (v.expand(B, *v.shape[1:]) if v.shape[0] != B else v).clone())
    if first is None:
        first = best.clone()
    log = StageLog(stage.name.value, stage.iters, time.perf_counter() - t0, float(first.sum()), float(best.sum()),
                   {k: float(v.sum()) for k, v in best_terms.items()}, iters_run,
                   first.tolist(), best.tolist(), item_iters.tolist())
    return out, log


@torch.no_grad()
def _keep_best(values, best, best_vals, best_terms, leaves, terms, any_shared: bool, active) -> None:
    if any_shared:
        better = torch.full_like(active, bool(values.sum() < best.sum()))
    else:
        better = (values < best) & active
    if not bool(better.any()):
        return
    best[better] = values[better]
    for n, leaf in leaves.items():
        if leaf.shape[0] == better.shape[0]:
            best_vals[n][better] = leaf.detach()[better]
        else:  # shared (one row): only whole-batch improvements reach here
            best_vals[n].copy_(leaf.detach())
    for k, v in terms.items():
        v = v.detach().cpu().expand(better.shape[0]) if v.dim() else v.detach().cpu().expand(better.shape[0])
        if k not in best_terms:
            best_terms[k] = v.clone()
        else:
            best_terms[k][better] = v[better]


def _update_active(active: torch.Tensor, history: list[torch.Tensor], stage: Stage, any_shared: bool) -> None:
    """An item is converged when its best loss over the last ``patience`` iterations improved on the best before
    by less than ``early_stop_rel`` (relative)."""
    k = stage.early_stop_patience
    if len(history) <= k:
        return
    h = torch.stack(history)  # (T,B)
    if any_shared:
        h = h.sum(1, keepdim=True)
    before = h[:-k].min(0).values
    recent = h[-k:].min(0).values
    gain = (before - recent) / before.abs().clamp(min=1e-12)
    conv = gain < stage.early_stop_rel
    if any_shared:
        if bool(conv[0]):
            active[:] = False
    else:
        active &= ~conv


# -- Levenberg-Marquardt for the stages without rendering -------------------------------------------------------

# finite-difference step and central differences per field: the landmarks are affine in the coefficients in the
# model frame (forward differences with a large step are exact there but for the projection), nonlinear in poses
_FD_SPEC = {"shape": (0.1, False), "expression": (0.1, False), "global_pose": (1e-3, True),
            "neck_pose": (1e-3, True), "jaw_pose": (1e-3, True), "eye_pose": (1e-3, True),
            "translation": (1e-4, True), "cam_translation": (1e-4, True),
            "focal_px": (0.5, True)}  # pixels of the crop (focal lengths of hundreds to thousands): one step for all


def _lm_fields(stage: Stage, params: FlameParams) -> list[str]:
    """The free fields LM solves for: those present, not in ``stage.lm_freeze``, with a non-zero lr scale (0
    freezes a field, as in Adam)."""
    return [n for n in stage.free if getattr(params, n) is not None and getattr(params, n).numel()
            and stage.lr_scale.get(n, 1.0) != 0 and n not in stage.lm_freeze]


def lm_applies(stage: Stage, params: FlameParams, sharing: Sharing) -> bool:
    """LM needs a stage without rendering, every term with a least-squares form, no shared free parameter, and
    finite-difference steps for its fields."""
    if stage.photometric or any(sharing.is_shared(n) for n in stage.free):
        return False
    if any(type(t).residuals is T.LossTerm.residuals for t in stage.terms):
        return False
    return all(n in _FD_SPEC for n in _lm_fields(stage, params))


@torch.no_grad()
def _run_lm(fitter, stage: Stage, params: FlameParams, batch, callback=None) -> tuple[FlameParams, StageLog]:
    from flamefit.fit.lm import fd_jacobian, levenberg_marquardt, levenberg_marquardt_coupled
    from flamefit.model.landmarks import head_yaw_rad

    t0 = time.perf_counter()
    params = params.detach()
    base = dataclasses.replace(params, tex_offset=None)  # no least-squares term reads the offset map: not per row
    B = params.batch_size
    names = _lm_fields(stage, params)
    sizes = [getattr(params, n)[0].numel() for n in names]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    shapes = [getattr(params, n).shape[1:] for n in names]
    x0 = torch.cat([getattr(params, n).reshape(B, -1) for n in names], 1)
    steps = torch.cat([torch.full((k,), _FD_SPEC[n][0]) for n, k in zip(names, sizes, strict=True)])
    central = torch.cat([torch.full((k,), _FD_SPEC[n][1] and stage.lm_central)
                         for n, k in zip(names, sizes, strict=True)])
    steps = steps.to(x0)

    def unpack(x: torch.Tensor, rows: torch.Tensor) -> FlameParams:
        p = base._map(lambda t: t.index_select(0, rows))
        off = 0
        for n, k, shp in zip(names, sizes, shapes, strict=True):
            setattr(p, n, x[:, off:off + k].reshape(x.shape[0], *shp))
            off += k
        return p

    per_item = [t for t in stage.terms if not getattr(t, "couples_items", False)]
    coupling = [t for t in stage.terms if getattr(t, "couples_items", False)]

    def residuals(x: torch.Tensor, rows: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        yaw = None
        if fitter.landmarks68 is not None and ref is not x:  # the contour of the linearisation point
            p_ref = unpack(ref, rows)
            yaw = head_yaw_rad(p_ref.global_pose, p_ref.neck_pose)
        ctx = FitContext(fitter, _select_batch(batch, rows), unpack(x, rows), None, contour_yaw_rad=yaw)
        return torch.cat([t.residuals(ctx) for t in per_item], 1)

    def coupled(x: torch.Tensor) -> torch.Tensor:  # the whole window at once
        ctx = FitContext(fitter, batch, unpack(x, every), None)
        return torch.cat([t.residuals(ctx) for t in coupling], 1)

    def check(r: torch.Tensor, iteration: int) -> None:
        _check_finite(0.5 * r.double().pow(2).sum(-1), batch, stage, iteration)

    # the columns of the coefficients the landmark model is affine in come from its exact vertex derivative
    # (one model evaluation instead of one per coefficient); the rest by finite differences
    model = fitter.lmk_model
    exact = [(n, off, k) for n, k, off in zip(names, sizes, offsets, strict=True)
             if n in ("shape", "expression") and hasattr(model, "coefficient_jacobian")
             and not (n == "shape" and fitter.identity_folded)]
    fd_cols = torch.ones(x0.shape[1], dtype=torch.bool)
    for _, off, k in exact:
        fd_cols[off:off + k] = False
    max_rows = 8192 if coupling else 0  # independent items: one per call (results independent of the batch)

    def jacobian(x: torch.Tensor, rows: torch.Tensor, r0: torch.Tensor) -> torch.Tensor:
        J = fd_jacobian(residuals, x, rows, r0, steps, central, max_rows, columns=fd_cols)
        if not exact:
            return J
        per = x.shape[0] if max_rows else 1
        for s in range(0, x.shape[0], per):
            xs, it = x[s:s + per], rows[s:s + per]
            J[s:s + per] = _exact_columns(fitter, batch, per_item, unpack, xs, it, exact, steps, J[s:s + per],
                                          r0[s:s + per])
        return J

    cb = None if callback is None else (lambda i, n: callback(stage.name.value, i, n))
    every = torch.arange(B)
    if coupling:  # a video window: one least-squares problem over all frames
        res = levenberg_marquardt_coupled(residuals, coupled, x0, stage.lm_iters, steps, central,
                                          rel_tol=stage.lm_rel_tol, callback=cb, check=check, max_rows=max_rows,
                                          jacobian=jacobian,
                                          coupled_linear=all(getattr(t, "linear", False) for t in coupling))
    else:
        res = levenberg_marquardt(residuals, x0, stage.lm_iters, steps, central, rel_tol=stage.lm_rel_tol,
                                  callback=cb, check=check, jacobian=jacobian)
    out = unpack(res.x, every)._map(lambda t: t.detach().clone())
    out.tex_offset = params.tex_offset
    total, terms = evaluate(stage, FitContext(fitter, batch, out, None))
    values = total.detach().cpu()
    _check_finite(values, batch, stage, res.iters_run)
    log = StageLog(stage.name.value, stage.lm_iters, time.perf_counter() - t0, float(res.loss_start.sum()),
                   float(values.sum()), {k: float(v.detach().sum()) for k, v in terms.items()}, res.iters_run,
                   res.loss_start.float().tolist(), values.tolist(), res.item_iters)
    return out, log


def _exact_columns(fitter, batch, terms, unpack, x: torch.Tensor, rows: torch.Tensor, exact, steps: torch.Tensor,
                   J: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``J`` (b,M,P) with the columns of ``exact`` ((field, offset, width) of coefficients the landmark model is
    affine in) filled: the residuals at the vertices moved by ``step x`` their exact derivative
    (:meth:`flamefit.model.subset.SubsetFlame.coefficient_jacobian`), the same differences as finite differences
    of the model would take, without evaluating it per coefficient. ``base`` (b,M): the residuals at ``x``."""
    from flamefit.model.landmarks import head_yaw_rad

    b = x.shape[0]
    p = unpack(x, rows)
    yaw = head_yaw_rad(p.global_pose, p.neck_pose) if fitter.landmarks68 is not None else None
    kw = p.flame_kwargs()
    if fitter.identity_folded:
        kw.pop("shape")
    faces = fitter.lmk_model.faces
    for name, off, k in exact:
        verts0, dv = fitter.lmk_model.coefficient_jacobian(name, **kw)
        h = steps[off:off + k]
        xk = x.repeat_interleave(k, 0)
        cols = torch.arange(k, device=x.device).repeat(b)
        xk[torch.arange(b * k, device=x.device), off + cols] += h[cols]
        rk_rows = rows.repeat_interleave(k)
        verts = (verts0.unsqueeze(1) + h.view(1, k, 1, 1).to(dv) * dv).reshape(b * k, *verts0.shape[1:])
        ctx = FitContext(fitter, _select_batch(batch, rk_rows), unpack(xk, rk_rows), None,
                         contour_yaw_rad=None if yaw is None else yaw.repeat_interleave(k),
                         landmark_mesh=(verts, faces))
        rk = torch.cat([t.residuals(ctx) for t in terms], 1).view(b, k, -1)
        J[:, :, off:off + k] = ((rk - base.unsqueeze(1)) / h.view(1, k, 1)).transpose(1, 2)
    return J


def _select_batch(batch, items: torch.Tensor):
    """Rows ``items`` (item indices, repeats allowed) of ``batch``: targets and landmark tensors, no image
    levels (the rows of a finite-difference Jacobian)."""
    if items.shape[0] == batch.size and bool((items == torch.arange(batch.size)).all()):
        return batch
    idx = items.tolist()

    def sel(t):
        return None if t is None else t[items.to(t.device)]

    return dataclasses.replace(batch, targets=[batch.targets[i] for i in idx], crops=[batch.crops[i] for i in idx],
                               lmk68=sel(batch.lmk68), lmk68_weights=sel(batch.lmk68_weights), has68=sel(batch.has68),
                               dense=sel(batch.dense), dense_weights=sel(batch.dense_weights),
                               has_dense=sel(batch.has_dense), focal_px=sel(batch.focal_px),
                               principal_px=sel(batch.principal_px), levels={})
