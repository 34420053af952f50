"""Synthetic fitting cases with known ground truth, and the metrics to score a fit against it.

Used by ``flamefit bench fit`` and the tests. A case renders a random head (shape, expression, jaw, pose, texture,
SH light) over a textured background at a resolution different from the fitter's, adds pixel noise, and takes the
"detected" landmarks from the ground-truth model's projected 68 points plus noise (MediaPipe cannot be trusted on
renders of a stand-in model; this is stated in the benchmark output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from flamefit.fit.fitter import Fitter
from flamefit.fit.landmarks import model_landmarks_68
from flamefit.fit.params import FlameParams
from flamefit.fit.targets import FitTarget
from flamefit.render.camera import project_points


@dataclass
class SyntheticCase:
    target: FitTarget
    params: FlameParams  # ground truth, intrinsics in pixels of the rendered image
    vertices_cam: torch.Tensor  # (1,V,3) ground-truth vertices in the camera frame
    lmks_68_clean: np.ndarray  # (68,2) noise-free projected landmarks
    skin_mask: np.ndarray  # (H,W) face-region skin pixels of the render (before the held-out split)
    heldout_mask: np.ndarray  # (H,W) skin pixels withheld from the fitter (for PSNR)
    clean_image: np.ndarray  # (H,W,3) render without noise


def face_region(model, landmarks68) -> torch.Tensor:
    """(V,) bool: the face (forehead to chin, ear to ear, front), from the mean head and its 68 landmarks.

    The stand-in has no region masks; this box is defined by landmarks (contour 0/16 for the sides, the chin 8,
    the brows + 3 cm for the top) on head vertices only (eyeballs excluded).
    """
    out = model()
    v = out.vertices[0]
    lm = landmarks68.project(out.vertices, model.faces)[0]
    x_lo, x_hi = lm[0, 0], lm[16, 0]
    y_lo, y_hi = lm[8, 1] - 0.005, lm[17:27, 1].max() + 0.03
    z_lo = torch.minimum(lm[0, 2], lm[16, 2]) - 0.005
    region = (v[:, 0] >= x_lo) & (v[:, 0] <= x_hi) & (v[:, 1] >= y_lo) & (v[:, 1] <= y_hi) & (v[:, 2] >= z_lo)
    region[3931:] = False  # eyeballs
    return region


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour noise plus stripes: texture that a fit must not explain."""
    import cv2

    small = rng.uniform(0, 1, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
    bg = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0, math.pi)
    stripes = 0.5 + 0.5 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) / rng.uniform(3, 9))
    return np.clip(0.6 * bg + 0.4 * stripes[..., None] * rng.uniform(0.3, 1.0, 3), 0, 1).astype(np.float32)


def random_params(fitter: Fitter, rng: np.random.Generator, height: int, width: int,
                  fov_deg: float = 20.0, shape_sd: float = 1.0) -> FlameParams:
    n_s, n_e, n_t = fitter.n_shape, fitter.n_expr, fitter.texture_space.n_components
    light_c = 3
    f = 0.5 * max(height, width) / math.tan(math.radians(fov_deg) / 2)
    p = FlameParams.zeros(1, n_s, n_e, n_tex=n_t, light_channels=light_c, focal_px=f,
                          principal_px=(width / 2, height / 2), device=fitter.device, dtype=fitter.dtype)

    def t(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=fitter.dtype, device=fitter.device)

    p.shape = t(rng.normal(0, shape_sd, (1, n_s)))
    p.expression = t(rng.normal(0, 0.8, (1, n_e)))
    p.jaw_pose = t([[rng.uniform(0.0, 0.2), 0.0, 0.0]])
    p.global_pose = t([[rng.uniform(-0.25, 0.25), rng.uniform(-0.5, 0.5), rng.uniform(-0.15, 0.15)]])
    p.eye_pose = t(rng.normal(0, 0.05, (1, 6)))
    p.tex = t(rng.normal(0, 1.0, (1, n_t)))
    light = np.zeros((1, 9, 3))
    light[0, 0] = math.sqrt(4 * math.pi) * rng.uniform(0.6, 0.85) * rng.uniform(0.9, 1.1, 3)
    light[0, 1:4] = rng.normal(0, 0.3, (3, 1)) * np.ones((1, 3))
    light[0, 4:] = rng.normal(0, 0.1, (5, 1)) * np.ones((1, 3))
    p.light = t(light)
    # face spans about half of the image
    z = f * 0.2 / (0.5 * min(height, width)) * rng.uniform(0.85, 1.15)
    p.cam_translation = t([[rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02) + 0.02, z]])
    return p


@torch.no_grad()
def make_case(fitter: Fitter, seed: int, height: int = 300, width: int = 272, pixel_noise: float = 0.02,
              landmark_noise_px: float = 1.0, region: torch.Tensor | None = None) -> SyntheticCase:
    rng = np.random.default_rng(seed)
    p = random_params(fitter, rng, height, width)
    bg = _background(height, width, rng)
    bg_t = torch.as_tensor(bg, dtype=fitter.dtype, device=fitter.device).unsqueeze(0)
    r = fitter.render_image(p, height, width, background=bg_t)
    clean = r["rgb"][0].clamp(0, 1).cpu().numpy()
    image = np.clip(clean + rng.normal(0, pixel_noise, clean.shape), 0, 1).astype(np.float32)
    verts = r["vertices"]
    if fitter.landmarks68 is not None:
        lm3 = model_landmarks_68(fitter.landmarks68, verts, fitter.faces, p.global_pose, p.neck_pose)
    else:  # models without the 68-point embedding: the dense correspondence plays the detector
        lm3 = fitter.dense.project(verts, fitter.faces)
    lm = project_points(fitter.to_camera(p, lm3), p.intrinsics())[0].cpu().numpy()
    noisy = lm + rng.normal(0, landmark_noise_px * max(height, width) / 256, lm.shape)
    # skin mask: rendered face-region pixels (no eyeballs), split in 8x8 blocks: odd blocks held out for PSNR
    if region is None:
        region = face_region(fitter.model, fitter.landmarks68) if fitter.landmarks68 is not None else \
            torch.ones(verts.shape[1], dtype=torch.bool, device=verts.device)
    from flamefit.render.mesh_renderer import render_mesh

    attr = region.to(fitter.dtype).view(-1, 1).expand(-1, 3)
    cov = render_mesh(verts, fitter.faces, fitter.camera(p, height, width), albedo=attr, antialias=False)
    skin = ((cov.rgb[0, ..., 0] > 0.99) & cov.mask[0]).cpu().numpy()
    yy, xx = np.mgrid[0:height, 0:width]
    held = ((yy // 8 + xx // 8) % 2 == 1) & skin
    fit_mask = (skin & ~held).astype(np.float32)
    dense = fitter.landmarks68 is None
    target = FitTarget(image=image, lmks_68=None if dense else noisy, lmks_dense=noisy if dense else None,
                       mask=fit_mask, focal_px=float(p.focal_px[0, 0]), name=f"synthetic-{seed}")
    return SyntheticCase(target, p, r["verts_cam"], lm, skin.astype(np.float32), held.astype(np.float32), clean)


# -- metrics ---------------------------------------------------------------------------------------------------

def similarity_align(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama: the similarity transform of ``src`` (N,3) that best matches ``dst`` (N,3); returns aligned src."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    scale = np.trace(np.diag(S) @ D) / s0.var(0).sum()
    return scale * s0 @ R.T + mu_d


def vertex_errors_mm(pred_cam: np.ndarray, gt_cam: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """Mean per-vertex distance on ``region``: raw (camera frame) and after similarity alignment, in mm."""
    p, g = pred_cam[region], gt_cam[region]
    raw = np.linalg.norm(p - g, axis=1).mean() * 1000
    aligned = np.linalg.norm(similarity_align(p, g) - g, axis=1).mean() * 1000
    return {"raw_mm": float(raw), "aligned_mm": float(aligned)}


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    m = mask > 0.5
    if not m.any():
        return float("nan")
    mse = float(((a - b) ** 2)[m].mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))
