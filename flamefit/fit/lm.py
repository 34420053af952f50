"""A small batched Levenberg-Marquardt core for least-squares problems with independent items.

The problem is a residual function of a batch of parameter vectors, ``residuals(X (R,P), items (R,), ref (R,P))
-> (R,M)``: one row per parameter vector; ``items`` says which item (0..B-1) each row belongs to (its data); ``ref``
is the point the row's Jacobian is taken at (discrete choices, e.g. which contour points a yaw selects, are made
there so that finite differences never straddle a switch; ``ref`` is ``X`` itself outside Jacobians). Rows are
independent, so a Jacobian by finite differences is ONE call with all perturbed rows stacked. The loss of an item is
``0.5 * |r|^2``. Each item has its own damping, acceptance and convergence, so B items solved together give the
results of solving them one by one.

Jacobian columns: forward differences with step ``h`` (exact for parameters the residuals are affine in, e.g.
FLAME's shape/expression coefficients in the model frame), or central differences where ``central`` (rotations,
translations). Steps: ``(A + lam * diag(A)) d = -g`` with ``A = J^T J``, ``g = J^T r`` (Marquardt's scaling, so
parameters in different units need no hand-tuned step sizes), solved in float64; the damping follows Nielsen's
gain-ratio rule. A rejected step re-solves with more damping and the same Jacobian.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LMResult:
    x: torch.Tensor  # (B,P) the solution (the best iterate: steps are only taken when they lower the loss)
    loss_start: torch.Tensor  # (B,) float64
    loss_end: torch.Tensor  # (B,)
    iters_run: int  # loop iterations (Jacobians + re-solves) until every item converged or the limit
    jacobians: int  # Jacobian evaluations (summed over items)
    item_iters: list  # per item: the loop iterations it took part in


def fd_jacobian(residuals, x: torch.Tensor, items: torch.Tensor, r0: torch.Tensor, steps: torch.Tensor,
                central: torch.Tensor, max_rows: int = 0) -> torch.Tensor:
    """(b,M,P) Jacobian of ``residuals`` at ``x`` (b,P) of items ``items`` (b,) (``r0`` (b,M) its value) by finite
    differences: one batched call per chunk of items, at most ``max_rows`` rows each (0: one item per call, so an
    item's numbers do not depend on which other items share the batch)."""
    B, P = x.shape
    fwd = torch.nonzero(~central).squeeze(1)
    cen = torch.nonzero(central).squeeze(1)
    eye = torch.eye(P, dtype=x.dtype, device=x.device) * steps.to(x.dtype)
    delta = torch.cat([eye[fwd], eye[cen], -eye[cen]], 0)  # (Q,P)
    Q = delta.shape[0]
    per = max(1, max_rows // max(Q, 1))
    out = []
    for s in range(0, B, per):
        xs = x[s:s + per]
        rows = (xs.unsqueeze(1) + delta.unsqueeze(0)).reshape(-1, P)
        ref = xs.repeat_interleave(Q, 0)
        r = residuals(rows, items[s:s + per].repeat_interleave(Q), ref).view(xs.shape[0], Q, -1)  # (b,Q,M)
        J = r0.new_zeros(xs.shape[0], r.shape[-1], P)
        nf, nc = fwd.numel(), cen.numel()
        if nf:
            J[:, :, fwd] = ((r[:, :nf] - r0[s:s + per].unsqueeze(1)) / steps[fwd].view(1, -1, 1)).transpose(1, 2)
        if nc:
            J[:, :, cen] = ((r[:, nf:nf + nc] - r[:, nf + nc:]) / (2 * steps[cen].view(1, -1, 1))).transpose(1, 2)
        out.append(J)
    return torch.cat(out, 0)


def _per_item(residuals, x: torch.Tensor, items: torch.Tensor, ref: torch.Tensor, max_rows: int) -> torch.Tensor:
    """``residuals`` in calls of at most ``max_rows`` rows, or one call per item when 0."""
    if max_rows > 0:
        return torch.cat([residuals(x[s:s + max_rows], items[s:s + max_rows], ref[s:s + max_rows])
                          for s in range(0, x.shape[0], max_rows)], 0)
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        out.append(residuals(xi, items[i:i + 1], xi if ref is x else ref[i:i + 1]))
    return torch.cat(out, 0)


def levenberg_marquardt(residuals, x0: torch.Tensor, iters: int, steps: torch.Tensor, central: torch.Tensor,
                        *, lam0: float = 1e-3, rel_tol: float = 1e-6, callback=None, check=None,
                        max_rows: int = 0) -> LMResult:
    """Minimise ``0.5 |residuals(x_b)|^2`` for every item b of ``x0`` (B,P); at most ``iters`` loop iterations
    (each: a Jacobian for the items whose last step was accepted, then one trial step per active item). An item
    stops when an accepted step lowered its loss by less than ``rel_tol`` (relative), or its damping saturates.
    ``steps`` (P,) finite-difference steps, ``central`` (P,) bool. ``check(r, iteration)`` may raise on a
    non-finite start; ``callback(i, iters)`` is called every iteration. ``max_rows``: rows per residual call
    (0: every call holds one item's rows only: the float rounding of an item then never depends on the others,
    and B items give bitwise the results of B single solves; the Jacobian's rows make each call large anyway)."""
    x = x0.detach().clone()
    B, P = x.shape
    every = torch.arange(B, device=x.device)
    r = _per_item(residuals, x, every, x, max_rows).detach()
    if check is not None:
        check(r, 0)
    loss = 0.5 * r.double().pow(2).sum(-1)
    start = loss.clone()
    lam = torch.full((B,), lam0, dtype=torch.float64, device=x.device)
    nu = torch.full((B,), 2.0, dtype=torch.float64, device=x.device)
    active = torch.ones(B, dtype=torch.bool, device=x.device)
    stale = torch.ones(B, dtype=torch.bool, device=x.device)  # needs a new Jacobian
    A = torch.zeros(B, P, P, dtype=torch.float64, device=x.device)
    g = torch.zeros(B, P, dtype=torch.float64, device=x.device)
    n_jac = 0
    it = 0
    item_iters = torch.zeros(B, dtype=torch.int64)
    for it in range(1, iters + 1):
        need = torch.nonzero(active & stale).squeeze(1)
        if need.numel():
            J = fd_jacobian(residuals, x[need], need, r[need], steps, central, max_rows).double()
            A[need] = J.transpose(1, 2) @ J
            g[need] = (J.transpose(1, 2) @ r[need].double().unsqueeze(-1)).squeeze(-1)
            stale[need] = False
            n_jac += int(need.numel())
        idx = torch.nonzero(active).squeeze(1)
        item_iters[idx] += 1
        a, gg, lm = A[idx], g[idx], lam[idx]
        diag = a.diagonal(dim1=1, dim2=2)
        floor = diag.amax(-1, keepdim=True).clamp(min=1e-30) * 1e-9  # parameters the residuals ignore
        damp = torch.diag_embed(lm.unsqueeze(-1) * diag.clamp(min=0) + floor)
        step = torch.linalg.solve(a + damp, -gg.unsqueeze(-1)).squeeze(-1)  # (b,P) float64
        x_try = x[idx] + step.to(x.dtype)
        r_try = _per_item(residuals, x_try, idx, x_try, max_rows).detach()
        loss_try = 0.5 * r_try.double().pow(2).sum(-1)
        loss_try = torch.where(torch.isfinite(loss_try), loss_try, torch.full_like(loss_try, float("inf")))
        predicted = -(gg * step).sum(-1) - 0.5 * (step.unsqueeze(1) @ a @ step.unsqueeze(-1)).view(-1)
        gain = (loss[idx] - loss_try) / predicted.clamp(min=1e-300)
        ok = loss_try < loss[idx]
        acc, rej = idx[ok], idx[~ok]
        rel = (loss[acc] - loss_try[ok]) / loss[acc].clamp(min=1e-300)
        x[acc], r[acc], loss[acc] = x_try[ok], r_try[ok], loss_try[ok]
        stale[acc] = True
        # Nielsen: shrink the damping by how well the model predicted the decrease; grow it fast on rejections
        lam[acc] = lam[acc] * torch.clamp(1 - (2 * gain[ok] - 1) ** 3, min=1 / 3)
        nu[acc] = 2.0
        lam[rej] = lam[rej] * nu[rej]
        nu[rej] = nu[rej] * 2
        active[acc[rel < rel_tol]] = False
        active[rej[lam[rej] > 1e12]] = False
        if callback is not None:
            callback(it, iters)
        if not bool(active.any()):
            break
    return LMResult(x, start, loss, it, n_jac, item_iters.tolist())
