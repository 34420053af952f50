"""Initialisation without a neural network: deterministic and fast (a few ms).

1. Camera: PnP (``cv2.solvePnP``, EPnP then Levenberg-Marquardt) of the mean head's inner landmarks against the
   detected ones, with the intrinsics fixed.
2. Shape and expression: damped (Tikhonov) Gauss-Newton on all landmarks. For a fixed pose FLAME's landmarks are
   *affine* in the shape/expression coefficients, so their Jacobian is exact and is built from one batched
   forward pass with unit coefficients; only the perspective division is linearised.
3. Steps 1-2 alternate a few times (PnP with the updated shape, contour chosen by the new yaw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from flamefit.fit.config import CameraConfig, InitConfig
from flamefit.fit.params import FLIP_YZ_AXIS_ANGLE, FlameParams


def focal_from_fov(height: int, width: int, fov_deg: float) -> float:
    """Focal length (px) that gives the image's longest side a field of view of ``fov_deg``."""
    return 0.5 * max(height, width) / math.tan(math.radians(fov_deg) / 2)


def default_intrinsics(height: int, width: int, cfg: CameraConfig) -> tuple[float, tuple[float, float]]:
    """(focal_px, (cx, cy)) of an original image: explicit focal, else from the field of view of the longest side."""
    focal = float(cfg.focal_px) if cfg.focal_px is not None else focal_from_fov(height, width, cfg.fov_deg)
    return focal, (width / 2.0, height / 2.0)


def video_focal(height: int, width: int, cfg: CameraConfig) -> tuple[float, str]:
    """(focal_px, source) of a video's frames: ``camera.focal_px`` ('config'), else the ``camera.video_fov_deg``
    prior (videos carry no EXIF focal)."""
    if cfg.focal_px is not None:
        return float(cfg.focal_px), "config"
    return focal_from_fov(height, width, cfg.video_fov_deg), f"video_fov_deg prior ({cfg.video_fov_deg:g} deg)"


def target_focal(target, height: int, width: int, cfg: CameraConfig) -> tuple[float, str]:
    """(focal_px, source) of a target's ORIGINAL image, in this order: the target's own ``focal_px`` ('given':
    a caller or the tracker's identity fixed it), ``camera.focal_px`` ('config'), the file's EXIF when
    ``camera.use_exif`` ('exif'), else the ``camera.fov_deg`` prior ('fov_deg prior')."""
    if getattr(target, "focal_px", None) is not None:
        return float(target.focal_px), "given"
    if cfg.focal_px is not None:
        return float(cfg.focal_px), "config"
    exif = getattr(target, "exif_focal_px", None)
    if cfg.use_exif and exif is not None:
        return float(exif), "exif"
    return default_intrinsics(height, width, cfg)[0], f"fov_deg prior ({cfg.fov_deg:g} deg)"


def _matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    import cv2

    rvec, _ = cv2.Rodrigues(np.asarray(R, dtype=np.float64))
    return rvec.reshape(3)


def solve_pnp(points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray,
              guess: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """World->camera (R (3,3), t (3,)) from 3D-2D pairs. ``K`` in flamefit's pixel convention (centres at +0.5)."""
    import cv2

    K_cv = np.asarray(K, dtype=np.float64).copy()
    K_cv[0, 2] -= 0.5  # OpenCV puts pixel centres at integers
    K_cv[1, 2] -= 0.5
    obj = np.ascontiguousarray(points3d, dtype=np.float64).reshape(-1, 1, 3)
    img = np.ascontiguousarray(points2d, dtype=np.float64).reshape(-1, 1, 2) - 0.5
    if guess is None:
        ok, rvec, tvec = cv2.solvePnP(obj, img, K_cv, None, flags=cv2.SOLVEPNP_EPNP)
        if not ok or tvec[2, 0] <= 0:
            rvec = np.array(FLIP_YZ_AXIS_ANGLE, dtype=np.float64).reshape(3, 1)
            tvec = np.array([0.0, 0.0, 1.0]).reshape(3, 1)
    else:
        rvec = _matrix_to_axis_angle(guess[0]).reshape(3, 1)
        tvec = np.asarray(guess[1], dtype=np.float64).reshape(3, 1)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K_cv, None, rvec=rvec, tvec=tvec, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    R, _ = cv2.Rodrigues(rvec)
    return R, tvec.reshape(3)


@dataclass
class LandmarkProblem:
    """What the landmark terms need: a function from model vertices (+ params) to (B,N,3) model-frame points, the
    targets (B,N,2) in pixels of the fitted image, per-point weights (N,) or per item (B,N), and which points
    suit PnP."""

    points_fn: object  # callable(vertices (B,V,3), params: FlameParams) -> (B,N,3)
    targets: torch.Tensor
    weights: torch.Tensor
    pnp_mask: torch.Tensor  # (N,) bool


def pose_to_camera(R_pnp: np.ndarray, t_pnp: np.ndarray, root_joint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a PnP pose of the rest-pose head into FLAME's global_pose (about the root joint) and the camera
    translation, with the camera rotation fixed to the FLAME->OpenCV flip."""
    import cv2

    R_c, _ = cv2.Rodrigues(np.array(FLIP_YZ_AXIS_ANGLE, dtype=np.float64))
    R_g = R_c.T @ R_pnp
    t_c = t_pnp + R_pnp @ root_joint - R_c @ root_joint
    return _matrix_to_axis_angle(R_g), t_c


def initialize(model, problem: LandmarkProblem, params: FlameParams, image_size: float,
               cfg: InitConfig) -> FlameParams:
    """Fill ``global_pose``, ``cam_translation``, and the leading shape/expression coefficients of ``params``
    (batch size 1 per solve; batches are solved one by one). Returns new parameters."""
    params = params.detach()
    out = []
    for b in range(params.batch_size):
        out.append(_initialize_one(model, problem, params, b, image_size, cfg))
    for name in ("global_pose", "cam_translation", "shape", "expression"):
        setattr(params, name, torch.cat([getattr(p, name) for p in out], 0))
    return params


def _slice(params: FlameParams, b: int) -> FlameParams:
    return params._map(lambda t: t[b:b + 1])


@torch.no_grad()
def _initialize_one(model, problem: LandmarkProblem, params: FlameParams, b: int, image_size: float,
                    cfg: InitConfig) -> FlameParams:
    p = _slice(params, b)
    dev, dt = p.shape.device, p.shape.dtype
    targets = problem.targets[b:b + 1]
    w = problem.weights.to(dev, dt)
    w = w[b] if w.ndim == 2 else w  # (B,N) per-item weights or (N,) shared
    pnp_mask = problem.pnp_mask.cpu().numpy() & (w.cpu().numpy() > 0)
    K = p.intrinsics()[0].double().cpu().numpy()
    R_c = torch.as_tensor(np.eye(3) * np.array([1.0, -1.0, -1.0]), dtype=dt, device=dev)
    n_s = min(cfg.n_shape, p.shape.shape[1])
    n_e = min(cfg.n_expr, p.expression.shape[1])
    n = n_s + n_e
    guess = None
    for _ in range(max(1, cfg.gauss_newton_iters)):
        # 1. camera by PnP against the current shape (rest pose).
        rest = model(shape=p.shape, expression=p.expression, jaw_pose=p.jaw_pose)
        zero_pose = dataclass_copy(p, global_pose=torch.zeros_like(p.global_pose))
        pts = problem.points_fn(rest.vertices, zero_pose)[0].double().cpu().numpy()
        R_pnp, t_pnp = solve_pnp(pts[pnp_mask], targets[0].double().cpu().numpy()[pnp_mask], K, guess)
        guess = (R_pnp, t_pnp)
        root = rest.joints[0, 0].double().cpu().numpy()
        g, t_c = pose_to_camera(R_pnp, t_pnp, root)
        p.global_pose = torch.as_tensor(g, dtype=dt, device=dev).view(1, 3)
        p.cam_translation = torch.as_tensor(t_c, dtype=dt, device=dev).view(1, 3)
        if n == 0:
            continue
        # 2. exact affine landmark model in (shape, expression) for this pose: one batched forward pass.
        eye = torch.eye(n, dtype=dt, device=dev)
        coeff = torch.cat([torch.zeros(1, n, dtype=dt, device=dev), eye], 0)  # (1+n, n)
        shape = torch.zeros(n + 1, p.shape.shape[1], dtype=dt, device=dev)
        expr = torch.zeros(n + 1, p.expression.shape[1], dtype=dt, device=dev)
        shape[:, :n_s] = coeff[:, :n_s]
        expr[:, :n_e] = coeff[:, n_s:]
        rep = dataclass_copy(p, global_pose=p.global_pose.expand(n + 1, 3), neck_pose=p.neck_pose.expand(n + 1, 3))
        o = model(shape=shape, expression=expr, global_pose=rep.global_pose, neck_pose=rep.neck_pose,
                  jaw_pose=p.jaw_pose.expand(n + 1, 3))
        P = problem.points_fn(o.vertices, rep)  # (1+n, N, 3)
        base = P[0]
        A = (P[1:] - base).permute(1, 2, 0)  # (N,3,n) d point / d coeff
        # offset of coefficients beyond the solved ones (kept fixed)
        beta = torch.cat([p.shape[0, :n_s], p.expression[0, :n_e]])
        damping = torch.cat([torch.full((n_s,), cfg.damping_shape, dtype=dt, device=dev),
                             torch.full((n_e,), cfg.damping_expr, dtype=dt, device=dev)])
        tail = torch.zeros_like(base)
        if p.shape.shape[1] > n_s or p.expression.shape[1] > n_e:
            # contribution of coefficients outside the solved block (zero after a fresh start)
            full = model(shape=p.shape, expression=p.expression, global_pose=p.global_pose,
                         neck_pose=p.neck_pose, jaw_pose=p.jaw_pose)
            tail = problem.points_fn(full.vertices, p)[0] - base - (A @ beta)
        for _ in range(2):  # Gauss-Newton on the perspective division
            X = base + A @ beta + tail  # (N,3) model frame (posed)
            Xc = X @ R_c.T + p.cam_translation[0]
            z = Xc[:, 2:3].clamp(min=1e-6)
            f = torch.tensor([K[0, 0], K[1, 1]], dtype=dt, device=dev)
            c = torch.tensor([K[0, 2], K[1, 2]], dtype=dt, device=dev)
            uv = Xc[:, :2] / z * f + c
            r = (uv - targets[0]) / image_size  # (N,2)
            # d uv / d Xc  (N,2,3)
            J_proj = torch.zeros(Xc.shape[0], 2, 3, dtype=dt, device=dev)
            J_proj[:, 0, 0] = f[0] / z[:, 0]
            J_proj[:, 1, 1] = f[1] / z[:, 0]
            J_proj[:, 0, 2] = -f[0] * Xc[:, 0] / z[:, 0] ** 2
            J_proj[:, 1, 2] = -f[1] * Xc[:, 1] / z[:, 0] ** 2
            J = (J_proj @ R_c @ A) / image_size  # (N,2,n)
            Jw = J * w.view(-1, 1, 1)
            H = torch.einsum("nik,nil->kl", Jw, J) + torch.diag(damping)
            g_ = torch.einsum("nik,ni->k", Jw, r) + damping * beta
            beta = beta - torch.linalg.solve(H, g_)
        p.shape = p.shape.clone()
        p.expression = p.expression.clone()
        p.shape[0, :n_s] = beta[:n_s]
        p.expression[0, :n_e] = beta[n_s:]
    return p


def dataclass_copy(p: FlameParams, **changes) -> FlameParams:
    import dataclasses

    return dataclasses.replace(p, **changes)
