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
from flamefit.fit.init import focal_from_fov
from flamefit.fit.params import FlameParams
from flamefit.fit.targets import FitTarget
from flamefit.model.landmarks import model_landmarks_68
from flamefit.render.camera import project_points

# the stand-in's expression component that closes both eyelids (about +2 sd; standin_components.json)
BLINK_COMPONENT = 3


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
    f = focal_from_fov(height, width, fov_deg)
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


# -- renders for the detector-in-the-loop benches ----------------------------------------------------------------------

@dataclass
class PhotoCase:
    """A render for the whole pipeline (the real detector reads it; nothing of its truth reaches the fitter)."""

    image: np.ndarray  # (H,W,3) float32 in [0,1]
    params: FlameParams  # ground truth (intrinsics of this image)
    vertices_cam: np.ndarray  # (V,3) camera-frame vertices (m)
    lmks_68: np.ndarray  # (68,2) true projected 68 points (the 68-point embedding of the rendering fitter)
    info: dict  # what was drawn: fov_deg, yaw/pitch/roll_deg, jaw_rad, eyes_closed, occluder


def make_photo_case(fitter: Fitter, seed: int, size: int = 512, fov_range_deg=(15.0, 75.0),
                    yaw_max_rad: float = 0.78, jaw_max_rad: float = 0.3, p_eyes_closed: float = 0.15,
                    p_occluder: float = 0.2, pixel_noise: float = 0.015) -> PhotoCase:
    """A photo-like render: random identity, expression, jaw (open mouths), yaw up to ``yaw_max_rad`` (0.78 =
    45 deg), a field of view drawn from ``fov_range_deg``, an off-centre principal point, textured background, SH
    light, closed eyes in some cases (``p_eyes_closed``), a skin- or dark-coloured occluder over part of the face
    (a hand, a strand of hair) in others (``p_occluder``), sensor noise. ``fitter`` renders it (its texture space)
    and gives the true 68 points (it needs the 68-point embedding)."""
    import cv2

    if fitter.landmarks68 is None:
        raise ValueError("make_photo_case needs a fitter with the 68-point embedding (the truth's 68 points)")
    rng = np.random.default_rng(seed)
    fov = float(rng.uniform(*fov_range_deg))
    p = random_params(fitter, rng, size, size, fov_deg=fov)
    f = float(p.focal_px[0, 0])
    p.principal_px = p.principal_px + torch.as_tensor(rng.uniform(-0.04, 0.04, (1, 2)) * size, dtype=fitter.dtype)
    yaw = float(rng.uniform(-yaw_max_rad, yaw_max_rad))
    pose = p.global_pose.clone()
    pose[0, 1] = yaw
    p.global_pose = pose
    jaw = float(rng.uniform(0.0, jaw_max_rad)) if rng.random() < 0.6 else float(rng.uniform(0.0, 0.05))
    p.jaw_pose = torch.as_tensor([[jaw, 0.0, 0.0]], dtype=fitter.dtype)
    closed = bool(rng.random() < p_eyes_closed and BLINK_COMPONENT < fitter.n_expr)
    if closed:
        e = p.expression.clone()
        e[0, BLINK_COMPONENT] = 2.5
        p.expression = e
    # the face spans 35-55 % of the image whatever the focal length
    z = f * 0.2 / (0.5 * size) * rng.uniform(0.8, 1.25)
    p.cam_translation = torch.as_tensor([[rng.uniform(-0.02, 0.02), rng.uniform(-0.01, 0.03), z]], dtype=fitter.dtype)
    bg = cv2.GaussianBlur(_background(size, size, rng), (0, 0), rng.uniform(0.5, 3.0))
    bg_t = torch.as_tensor(bg, dtype=fitter.dtype).unsqueeze(0)
    with torch.no_grad():
        r = fitter.render_image(p, size, size, background=bg_t)
        lm3 = model_landmarks_68(fitter.landmarks68, r["vertices"], fitter.faces, p.global_pose, p.neck_pose)
        lm = project_points(fitter.to_camera(p, lm3), p.intrinsics())[0].cpu().numpy()
    image = r["rgb"][0].clamp(0, 1).cpu().numpy()
    occluder = None
    if rng.random() < p_occluder:  # an ellipse over one side of the lower or upper face
        which = rng.choice(["cheek", "mouth_corner", "forehead"])
        c = {"cheek": lm[rng.choice([3, 13])], "mouth_corner": lm[rng.choice([48, 54])],
             "forehead": lm[rng.choice([19, 24])] - [0, 0.06 * size]}[which]
        ax = (int(rng.uniform(0.06, 0.1) * size), int(rng.uniform(0.1, 0.16) * size))
        colour = np.array([0.75, 0.55, 0.45]) * rng.uniform(0.8, 1.1) if rng.random() < 0.5 else \
            np.array([0.12, 0.09, 0.07]) * rng.uniform(0.7, 1.5)
        m = np.zeros((size, size), np.float32)
        cv2.ellipse(m, (int(c[0]), int(c[1])), ax, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        m = cv2.GaussianBlur(m, (0, 0), 2.0)[..., None]
        image = image * (1 - m) + m * colour.astype(np.float32)
        occluder = str(which)
    image = np.clip(image + rng.normal(0, pixel_noise, image.shape), 0, 1).astype(np.float32)
    ypr = [math.degrees(float(v)) for v in (p.global_pose[0, 1], p.global_pose[0, 0], p.global_pose[0, 2])]
    info = {"seed": seed, "fov_deg": fov, "focal_px": f, "yaw_deg": ypr[0], "pitch_deg": ypr[1], "roll_deg": ypr[2],
            "jaw_rad": jaw, "eyes_closed": closed, "occluder": occluder, "distance_m": z}
    return PhotoCase(image, p, r["verts_cam"][0].cpu().numpy().astype(np.float64), lm, info)
