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
                central: torch.Tensor, max_rows: int = 0, columns: torch.Tensor | None = None) -> torch.Tensor:
    """(b,M,P) Jacobian of ``residuals`` at ``x`` (b,P) of items ``items`` (b,) (``r0`` (b,M) its value) by finite
    differences: one batched call per chunk of items, at most ``max_rows`` rows each (0: one item per call, so an
    item's numbers do not depend on which other items share the batch). ``columns`` (P,) bool: only these
    (the others are left 0 for the caller to fill)."""
    B, P = x.shape
    cols = torch.ones(P, dtype=torch.bool) if columns is None else columns.cpu()
    fwd = torch.nonzero(~central.cpu() & cols).squeeze(1)
    cen = torch.nonzero(central.cpu() & cols).squeeze(1)
    eye = torch.eye(P, dtype=x.dtype, device=x.device) * steps.to(x.dtype)
    delta = torch.cat([eye[fwd], eye[cen], -eye[cen]], 0)  # (Q,P)
    Q = delta.shape[0]
    if Q == 0:
        return r0.new_zeros(B, r0.shape[1], P)
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


def _fd(residuals, steps: torch.Tensor, central: torch.Tensor, max_rows: int):
    """The default Jacobian: :func:`fd_jacobian` of ``residuals``."""
    return lambda x, items, r0: fd_jacobian(residuals, x, items, r0, steps, central, max_rows)


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
                        max_rows: int = 0, jacobian=None) -> LMResult:
    """Minimise ``0.5 |residuals(x_b)|^2`` for every item b of ``x0`` (B,P); at most ``iters`` loop iterations
    (each: a Jacobian for the items whose last step was accepted, then one trial step per active item). An item
    stops when an accepted step lowered its loss by less than ``rel_tol`` (relative), or its damping saturates.
    ``steps`` (P,) finite-difference steps, ``central`` (P,) bool. ``check(r, iteration)`` may raise on a
    non-finite start; ``callback(i, iters)`` is called every iteration. ``max_rows``: rows per residual call
    (0: every call holds one item's rows only: the float rounding of an item then never depends on the others,
    and B items give bitwise the results of B single solves; the Jacobian's rows make each call large anyway).
    ``jacobian(x, items, r0) -> (b,M,P)``: replaces :func:`fd_jacobian` (e.g. exact columns for some fields)."""
    jacobian = jacobian or _fd(residuals, steps, central, max_rows)
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
            J = jacobian(x[need], need, r[need]).double()
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


def _gram_of_sparse_rows(J: torch.Tensor) -> torch.Tensor:
    """``J^T J`` for a (R,N) matrix whose rows have few non-zeros (a temporal residual reads one component of a
    few frames): the rows' outer products scattered, instead of a dense (N,R) x (R,N) product."""
    rows, cols = torch.nonzero(J, as_tuple=True)
    N = J.shape[1]
    out = J.new_zeros(N, N)
    if rows.numel() == 0:
        return out
    counts = torch.bincount(rows, minlength=J.shape[0])
    k = int(counts.max())
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(rows.numel(), device=J.device) - start[rows]  # position of each non-zero in its row
    idx = torch.zeros(J.shape[0], k, dtype=torch.int64, device=J.device)
    val = J.new_zeros(J.shape[0], k)
    idx[rows, slot] = cols
    val[rows, slot] = J[rows, cols]
    pair = (val.unsqueeze(2) * val.unsqueeze(1)).reshape(-1)  # padding has value 0
    out.index_put_((idx.unsqueeze(2).expand(-1, k, k).reshape(-1), idx.unsqueeze(1).expand(-1, k, k).reshape(-1)),
                   pair, accumulate=True)
    return out


def levenberg_marquardt_coupled(residuals, coupled, x0: torch.Tensor, iters: int, steps: torch.Tensor,
                                central: torch.Tensor, *, lam0: float = 1e-3, rel_tol: float = 1e-6,
                                callback=None, check=None, max_rows: int = 8192, jacobian=None,
                                coupled_linear: bool = False) -> LMResult:
    """:func:`levenberg_marquardt` for items that are ONE problem: the frames of a video window, tied by
    ``coupled(X (B,P)) -> (B,Mc)`` residuals (temporal terms; row b belongs to item b but may read any row of X)
    beside the per-item ``residuals(X, items, ref)`` as above. The loss is the window's total
    ``0.5 |r|^2 + 0.5 |r_c|^2``, so there is one damping, one acceptance and one convergence test for all items,
    and each step solves the normal equations of all B x P unknowns together: the per-item Jacobians are block
    diagonal (finite differences, all items' perturbed rows stacked into calls of at most ``max_rows``), the
    coupled residuals' Jacobian is exact (autograd) and spans items. Same damping rule (Marquardt's scaling,
    Nielsen's update) as the independent mode. Per-item losses in the result are each item's rows of the total.
    ``jacobian``: as in :func:`levenberg_marquardt`; ``coupled_linear``: the coupled residuals are affine in X
    (temporal terms), so their Jacobian and its normal-equation block are computed once."""
    jacobian = jacobian or _fd(residuals, steps, central, max_rows)
    x = x0.detach().clone()
    B, P = x.shape
    every = torch.arange(B, device=x.device)

    def evaluate(xv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = _per_item(residuals, xv, every, xv, max_rows).detach()
        return r, coupled(xv).detach()

    def coupled_jacobian(xv: torch.Tensor) -> torch.Tensor:
        J = torch.autograd.functional.jacobian(lambda z: coupled(z).reshape(-1), xv, vectorize=True)
        return J.reshape(-1, B * P).double()  # (B*Mc, B*P)

    def item_loss(r: torch.Tensor, rc: torch.Tensor) -> torch.Tensor:
        return 0.5 * (r.double().pow(2).sum(-1) + rc.double().pow(2).sum(-1))

    r, rc = evaluate(x)
    if check is not None:
        check(torch.cat([r, rc], 1), 0)
    per_item = item_loss(r, rc)
    start = per_item.clone()
    loss = float(per_item.sum())
    lam, nu = lam0, 2.0
    stale = True
    A = g = Jc = Ac = None
    n_jac = 0
    it = 0
    for it in range(1, iters + 1):
        if stale:
            J = jacobian(x, every, r).double()  # (B,M,P)
            if Jc is None or not coupled_linear:
                Jc = coupled_jacobian(x)
                Ac = _gram_of_sparse_rows(Jc)
            A = torch.block_diag(*(J.transpose(1, 2) @ J)) + Ac
            g = (J.transpose(1, 2) @ r.double().unsqueeze(-1)).reshape(-1) + Jc.t() @ rc.double().reshape(-1)
            stale = False
            n_jac += B
        diag = A.diagonal()
        floor = float(diag.max().clamp(min=1e-30)) * 1e-9  # parameters the residuals ignore
        damped = A + torch.diag(lam * diag.clamp(min=0) + floor)
        L, info = torch.linalg.cholesky_ex(damped)  # symmetric positive definite: half the cost of LU
        step = (torch.cholesky_solve(-g.unsqueeze(-1), L).squeeze(-1) if int(info) == 0
                else torch.linalg.solve(damped, -g))  # (B*P,) float64
        x_try = x + step.view(B, P).to(x.dtype)
        r_try, rc_try = evaluate(x_try)
        per_try = item_loss(r_try, rc_try)
        loss_try = float(per_try.sum())
        if not torch.isfinite(torch.tensor(loss_try)):
            loss_try = float("inf")
        if loss_try < loss:
            predicted = float(-(g * step).sum() - 0.5 * step @ A @ step)
            gain = (loss - loss_try) / max(predicted, 1e-300)
            rel = (loss - loss_try) / max(loss, 1e-300)
            x, r, rc, per_item, loss = x_try, r_try, rc_try, per_try, loss_try
            stale = True
            lam *= max(1 / 3, 1 - (2 * gain - 1) ** 3)
            nu = 2.0
            done = rel < rel_tol
        else:
            lam *= nu
            nu *= 2
            done = lam > 1e12
        if callback is not None:
            callback(it, iters)
        if done:
            break
    return LMResult(x, start, per_item, it, n_jac, [it] * B)
