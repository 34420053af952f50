"""Levenberg-Marquardt for a window of frames: the landmark objective of the single-image landmark stage (68 and
dense landmark Huber terms, eyelid and lip gaps, priors) plus the temporal terms, solved jointly for all frames.

Why not Adam: a window is a small least-squares problem (about 70 unknowns per frame), and Adam's fixed step sizes
need many iterations to cross the frame-to-frame motion and then leave optimisation noise in every frame, which the
next window does not repeat: jitter. Gauss-Newton converges in a few iterations to the same minimum every time.

Structure: the data residuals of a frame depend only on that frame's parameters, so their Jacobian is block
diagonal; the projected points are differentiated by forward differences in ONE batched evaluation of the
(landmark-vertex) model for all frames x unknowns, and the residuals are linear in those points.
The temporal terms are quadratic in the parameters: their Hessian is exact and banded across frames (including
the frozen history rows, which only enter the right-hand side). The normal equations of the whole window
(frames x unknowns, a few hundred) are solved densely.
"""

from __future__ import annotations

import torch

from flamefit import ibug68
from flamefit.fit.params import FlameParams
from flamefit.render.camera import project_points

FREE = ("global_pose", "neck_pose", "jaw_pose", "eye_pose", "cam_translation", "expression")
PRIORS = {"expression": "expr_prior", "jaw_pose": "jaw_prior", "neck_pose": "neck_prior", "eye_pose": "eye_pose_prior"}


def _layout(p: FlameParams) -> list[tuple[str, int, int]]:
    out, o = [], 0
    for n in FREE:
        d = getattr(p, n).shape[1]
        out.append((n, o, d))
        o += d
    return out


def _pack(p: FlameParams, layout) -> torch.Tensor:
    return torch.cat([getattr(p, n) for n, _, _ in layout], 1)


def _unpack(p: FlameParams, x: torch.Tensor, layout) -> FlameParams:
    q = p._map(lambda t: t)
    for n, o, d in layout:
        setattr(q, n, x[:, o:o + d])
    return q


def dense_subset(fitter, dense_idx):
    """The MediaPipe-478 embedding restricted to ``dense_idx`` (None: all of it)."""
    from flamefit.model.landmarks import MeshLandmarks

    if fitter.dense is None or dense_idx is None:
        return fitter.dense
    idx = torch.as_tensor(dense_idx, dtype=torch.int64)
    return MeshLandmarks(fitter.dense.face_idx[idx], fitter.dense.bary[idx])


def identity_model(fitter, shape: torch.Tensor, which: tuple[str, ...], dense_idx=None):
    """FLAME on the vertices of the landmark sets ``which`` ('68', 'dense') with the identity ``shape`` (n_shape,)
    folded into the template: exact there, and the tracker's model evaluations skip the identity blend shapes.
    Call it with ``shape=None``; its ``faces`` index its own vertices."""
    from flamefit.fit.sparse_flame import SubsetFlame

    faces = []
    if "68" in which and fitter.landmarks68 is not None:
        faces.append(fitter.landmarks68.face_indices())
    if "dense" in which and fitter.dense is not None:
        faces.append(dense_subset(fitter, dense_idx).face_idx.reshape(-1))
    sub = SubsetFlame(fitter.model, torch.unique(torch.cat(faces)))
    ns = sub.n_shape
    s = shape.reshape(1, -1).to(sub.v_template)
    sub.v_template = sub.v_template + (s @ sub.shapedirs[:ns]).view(-1, 3)
    sub.j_template = sub.j_template + (s @ sub.j_dirs[:ns]).view(-1, 3)
    sub.shapedirs = sub.shapedirs[ns:].contiguous()
    sub.j_dirs = sub.j_dirs[ns:].contiguous()
    sub.n_shape = 0
    return sub


class WindowProblem:
    """Residuals of the landmark objective for a batch of frames (see the module doc). ``model``: an
    :func:`identity_model` for the batch's landmark sets (else the fitter's own landmark model is used)."""

    def __init__(self, fitter, batch, delta: float = 0.02, model=None, dense_idx=None, priors: dict | None = None):
        self.priors = priors or {}  # field -> prior weight replacing the fit config's
        self.exact_expression = True  # expression columns of the Jacobian from the vertices' exact derivative
        self.fitter = fitter
        self.batch = batch
        self.model = model
        self.delta = delta
        self.R = float(batch.resolution)
        self.w = fitter.cfg.weights
        self.which = tuple(k for k, v in (("68", batch.lmk68), ("dense", batch.dense)) if v is not None
                           and (fitter.landmarks68 is not None if k == "68" else fitter.dense is not None))
        if dense_idx is not None and len(dense_idx) == 0:
            self.which = tuple(k for k in self.which if k != "dense")
        self.dense = dense_subset(fitter, dense_idx)
        self.dense_target = self.dense_weights = None
        if "dense" in self.which:
            sel = slice(None) if dense_idx is None else torch.as_tensor(dense_idx, dtype=torch.int64)
            self.dense_target = batch.dense[:, sel]
            self.dense_weights = batch.dense_weights[:, sel]

    def points(self, p: FlameParams, vertices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Projected landmark points of ``p``; ``vertices``: the model's vertices for ``p`` when already known
        (identity model only)."""
        f = self.fitter
        if self.model is not None:
            if vertices is None:
                vertices = self.model(expression=p.expression, global_pose=p.global_pose, neck_pose=p.neck_pose,
                                      jaw_pose=p.jaw_pose, eye_pose=p.eye_pose).vertices
            pts = f.model_points(p, vertices, tuple(k for k in self.which if k == "68"), self.model.faces)
            if "dense" in self.which:
                pts["dense"] = self.dense.project(vertices, self.model.faces)
        elif hasattr(f, "landmark_vertices"):
            verts, faces = f.landmark_vertices(p)
            pts = f.model_points(p, verts, self.which, faces)
        else:
            pts = f.model_points(p, f.vertices(p)[0], self.which)
        K = p.intrinsics()
        return {k: project_points(f.to_camera(p, v), K) for k, v in pts.items()}

    def scales(self, proj: dict, irls: dict | None = None) -> tuple[dict, dict]:
        """Per-point factors s with 0.5 |s * diff|^2 = the weighted Huber (IRLS: recomputed when ``irls`` is None)."""
        b = self.batch
        out, new_irls = {}, {}
        for k, target, weight in (("68", b.lmk68, b.lmk68_weights), ("dense", self.dense_target, self.dense_weights)):
            if k not in proj:
                continue
            if irls is None or k not in irls:
                d = ((proj[k].detach() - target) / self.R).norm(dim=-1)
                new_irls[k] = torch.where(d < self.delta, torch.ones_like(d), self.delta / d.clamp(min=1e-12))
            else:
                new_irls[k] = irls[k]
            out[k] = (weight * new_irls[k] / target.shape[1]).clamp(min=0).sqrt()
        return out, new_irls

    def combine(self, proj: dict, fields: dict, scales: dict, has68: torch.Tensor, targets: dict | None
                ) -> torch.Tensor:
        """(M, n_res) residuals; with ``targets`` None the linear part only (for Jacobian columns)."""
        res = []
        for k, pr in proj.items():
            diff = (pr - targets[k]) if targets is not None else pr
            res.append((diff / self.R * scales[k][..., None]).flatten(1))
        if "68" in proj:
            pred = proj["68"]

            def gap(pts, up, lo):
                return pts[:, list(up)] - pts[:, list(lo)]

            for up, lo, c in ((ibug68.RIGHT_EYE_UPPER, ibug68.RIGHT_EYE_LOWER, self.w.eye_closure * 0.5),
                              (ibug68.LEFT_EYE_UPPER, ibug68.LEFT_EYE_LOWER, self.w.eye_closure * 0.5),
                              (ibug68.INNER_LIP_UPPER, ibug68.INNER_LIP_LOWER, self.w.lip_distance)):
                g = gap(pred, up, lo)
                if targets is not None:
                    g = g - gap(targets["68"], up, lo)
                res.append((g / self.R).flatten(1) * (2 * c / len(up)) ** 0.5 * has68)
        for n, key in PRIORS.items():
            w = self.priors.get(n, float(getattr(self.w, key)))
            res.append(fields[n] * (2 * float(w)) ** 0.5)
        return torch.cat(res, 1)

    def targets(self) -> dict:
        b = self.batch
        return {k: v for k, v in (("68", b.lmk68), ("dense", self.dense_target)) if k in self.which}

    def has68(self) -> torch.Tensor:
        return self.batch.has68.to(self.fitter.dtype)[:, None]

    @torch.no_grad()
    def residuals(self, p: FlameParams, irls: dict | None = None) -> tuple[torch.Tensor, dict]:
        """(B, n_res) residuals r with 0.5 |r|^2 = the per-frame objective, and the IRLS factors used."""
        proj = self.points(p)
        sc, irls = self.scales(proj, irls)
        return self.combine(proj, {n: getattr(p, n) for n in PRIORS}, sc, self.has68(), self.targets()), irls

    def _expression_vertex_jacobian(self, q: FlameParams) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertices (B,n,3), d vertices / d expression (B,K,n,3)) of the identity model, exactly: expressions
        enter linearly before skinning (``R_v E_k``), and through the joints, which move the skinning transforms'
        translations linearly (``sum_j w_vj T_j(Jdir_k)``). No model evaluation per expression component."""
        from flamefit.model.lbs import axis_angle_to_matrix, rigid_transforms

        m = self.model
        B, K = q.expression.shape
        n = m.v_template.shape[0]
        E = m.shapedirs[:K].view(K, n, 3)
        Jd = m.j_dirs[:K].view(K, -1, 3)
        pose = torch.cat([q.global_pose, q.neck_pose, q.jaw_pose, q.eye_pose], 1).view(B, -1, 3).to(E)
        rot = axis_angle_to_matrix(pose)
        coeffs = q.expression.to(E)
        v_shaped = m.v_template[None] + (coeffs @ m.shapedirs[:K]).view(B, n, 3)
        joints = m.j_template[None] + (coeffs @ m.j_dirs[:K]).view(B, -1, 3)
        eye3 = torch.eye(3, dtype=E.dtype, device=E.device)
        v_posed = v_shaped + ((rot[:, 1:] - eye3).reshape(B, -1) @ m.posedirs).view(B, n, 3)
        _, T = rigid_transforms(rot, joints, m.parents)
        nJ = T.shape[1]
        per_vertex = (m.lbs_weights @ T[:, :, :3, :].reshape(B, nJ, 12)).view(B, n, 3, 4)
        Rv, tv = per_vertex[..., :3], per_vertex[..., 3]
        verts = (Rv @ v_posed[..., None])[..., 0] + tv
        _, Tk = rigid_transforms(rot.repeat_interleave(K, 0), Jd.repeat(B, 1, 1), m.parents)  # linear in joints
        dT = Tk[:, :, :3, 3].view(B, K, nJ, 3)
        dv = torch.einsum("bvcd,kvd->bkvc", Rv, E) + torch.einsum("vj,bkjc->bkvc", m.lbs_weights, dT)
        return verts, dv

    @torch.no_grad()
    def jacobian(self, p: FlameParams, x: torch.Tensor, layout, eps: float = 1e-3
                 ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(residuals (B,n_res), Jacobian (B,n_res,P), irls): the projected points by forward differences in ONE
        batched model evaluation of B x P perturbed frames (the model is the expensive part), the residuals'
        linear dependence on them exactly. With an identity model and the expression last in ``layout``, the
        expression columns perturb the vertices by their exact derivative instead (no model evaluation)."""
        B, P = x.shape
        q0 = _unpack(p, x, layout)
        fast = (self.exact_expression and self.model is not None and getattr(self.model, "n_shape", None) == 0
                and layout[-1][0] == "expression" and hasattr(self.model, "lbs_weights"))
        if fast:
            verts0, dv = self._expression_vertex_jacobian(q0)
            proj0 = self.points(q0, verts0)
        else:
            proj0 = self.points(q0)
        sc, irls = self.scales(proj0, None)
        r0 = self.combine(proj0, {n: getattr(q0, n) for n in PRIORS}, sc, self.has68(), self.targets())
        eye = torch.eye(P, dtype=x.dtype, device=x.device)
        if fast:
            K = layout[-1][2]
            P1 = P - K
            xp = (x[:, None, :] + eps * eye[None, :P1]).reshape(B * P1, P)
            projp = self.points(_unpack(p._map(lambda t: t.repeat_interleave(P1, 0)), xp, layout))
            vk = (verts0[:, None] + eps * dv.to(verts0)).reshape(B * K, *verts0.shape[1:])
            projk = self.points(_unpack(p._map(lambda t: t.repeat_interleave(K, 0)), x.repeat_interleave(K, 0),
                                        layout), vk)
            dproj = {}
            for k in proj0:
                a = (projp[k] - proj0[k].repeat_interleave(P1, 0)).view(B, P1, *proj0[k].shape[1:])
                b = (projk[k] - proj0[k].repeat_interleave(K, 0)).view(B, K, *proj0[k].shape[1:])
                dproj[k] = torch.cat([a, b], 1).reshape(B * P, *proj0[k].shape[1:]) / eps
        else:
            xp = (x[:, None, :] + eps * eye[None]).reshape(B * P, P)
            rep = p._map(lambda t: t.repeat_interleave(P, 0))
            projp = self.points(_unpack(rep, xp, layout))
            dproj = {k: (projp[k] - proj0[k].repeat_interleave(P, 0)) / eps for k in proj0}
        dx = eye.repeat(B, 1)  # (B*P, P): d fields / d x_k
        q = _unpack(p._map(lambda t: t.repeat_interleave(P, 0)), dx, layout)
        J = self.combine(dproj, {n: getattr(q, n) for n in PRIORS},
                         {k: v.repeat_interleave(P, 0) for k, v in sc.items()},
                         self.has68().repeat_interleave(P, 0), None)
        return r0, J.view(B, P, -1).transpose(1, 2), irls


def dim_weights(w, d: int, like: torch.Tensor) -> torch.Tensor:
    """A field's temporal weight as (d,): a number for all its components, or one per component (e.g. the camera
    translation's depth, which landmarks pin down far less well than x and y, smoothed more)."""
    t = torch.as_tensor(w, dtype=like.dtype, device=like.device).reshape(-1)
    return t.expand(d) if t.numel() == 1 else t


def _temporal_system(B: int, layout, accel: dict, velocity: dict, history: dict, x: torch.Tensor):
    """Hessian (B*P, B*P) and gradient (B*P,) of the temporal energy at ``x`` (B,P), with energy value."""
    P = x.shape[1]
    H = x.new_zeros(B * P, B * P)
    g = x.new_zeros(B, P)
    energy = x.new_zeros(())
    for n, o, d in layout:
        wa, wv = dim_weights(accel.get(n, 0.0), d, x), dim_weights(velocity.get(n, 0.0), d, x)
        if not (bool(wa.any()) or bool(wv.any())):
            continue
        h = history.get(n)
        h = x.new_zeros(0, d) if h is None else h.to(x).reshape(-1, d)
        Hn = h.shape[0]
        N = Hn + B
        ops = []
        if bool(wv.any()) and N >= 2:
            A = x.new_zeros(N - 1, N)
            idx = torch.arange(N - 1)
            A[idx, idx], A[idx, idx + 1] = -1.0, 1.0
            ops.append((wv, A))
        if bool(wa.any()) and N >= 3:
            A = x.new_zeros(N - 2, N)
            idx = torch.arange(N - 2)
            A[idx, idx], A[idx, idx + 1], A[idx, idx + 2] = 1.0, -2.0, 1.0
            ops.append((wa, A))
        full = torch.cat([h, x[:, o:o + d]], 0)  # (N,d)
        H4 = H.view(B, P, B, P)
        for w, A in ops:
            Aw = A[:, Hn:]  # (M,B): the window's columns
            r = A @ full  # (M,d)
            energy = energy + (w * r.pow(2)).sum()
            g[:, o:o + d] += 2 * w * (Aw.t() @ r)
            M = 2 * (Aw.t() @ Aw)  # (B,B)
            # block (frame a, frame b) of this field: M[a,b] * diag(w), written into the field's diagonal
            idx = torch.arange(o, o + d)
            H4[:, idx, :, idx] += M[None] * w.view(d, 1, 1)  # advanced indices first: (d,B,B)
    return H, g.reshape(-1), energy


@torch.no_grad()
def solve_window(fitter, batch, params: FlameParams, *, iters: int = 4, accel: dict | None = None,
                 velocity: dict | None = None, history: dict | None = None, damping: float = 1e-3,
                 tol: float = 1e-4, model=None, dense_idx=None, priors: dict | None = None
                 ) -> tuple[FlameParams, dict]:
    """Levenberg-Marquardt on ``params`` (B frames, crop intrinsics); the fields in :data:`FREE` move, the rest
    (identity, camera rotation, intrinsics, light) stay. Returns the parameters and a log."""
    accel, velocity, history = accel or {}, velocity or {}, history or {}
    prob = WindowProblem(fitter, batch, model=model, dense_idx=dense_idx, priors=priors)
    layout = _layout(params)
    x = _pack(params, layout).detach()
    B, P = x.shape
    lam = damping
    log = {"iters": 0, "energy": []}

    def energy_at(xv, irls):
        r, _ = prob.residuals(_unpack(params, xv, layout), irls)
        _, _, et = _temporal_system(B, layout, accel, velocity, history, xv)
        return float(0.5 * r.pow(2).sum() + et)

    for it in range(iters):
        r, J, irls = prob.jacobian(params, x, layout)
        Ht, gt, et = _temporal_system(B, layout, accel, velocity, history, x)
        H = Ht.clone()
        Hd = torch.einsum("brp,brq->bpq", J, J)
        for b_ in range(B):
            H[b_ * P:(b_ + 1) * P, b_ * P:(b_ + 1) * P] += Hd[b_]
        g = gt + torch.einsum("brp,br->bp", J, r).reshape(-1)
        e0 = float(0.5 * r.pow(2).sum() + et)
        if it == 0:
            log["energy"].append(e0)
        diag = H.diagonal().clamp(min=1e-9)
        accepted = False
        for _ in range(6):
            A = H + torch.diag(lam * diag + 1e-9)
            step = torch.linalg.solve(A, -g).view(B, P)
            e1 = energy_at(x + step, irls)
            if e1 <= e0:
                x = x + step
                lam = max(lam / 3, 1e-7)
                accepted = True
                break
            lam *= 10
        log["iters"] = it + 1
        if not accepted:
            break
        log["energy"].append(e1)
        if (e0 - e1) <= tol * max(e0, 1e-12):
            break
    return _unpack(params, x, layout).detach(), log
