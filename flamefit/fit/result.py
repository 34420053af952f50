"""The result of fitting one image, in the field's vocabulary and in pixels of the ORIGINAL image.

Camera convention (stated once, used everywhere): OpenCV. ``cam`` = (rotation axis-angle (3), translation (3))
maps FLAME's model frame (after ``pose``/``neck``/``eyes`` skinning, i.e. ``vertices``) to the camera frame:
``X_cam = R(cam[:3]) @ X + cam[3:]`` (x right, y down, z forward, metres); ``K`` (3,3) maps camera points to
pixels of the original image (x right, y down, origin at the top-left corner, pixel centres at +0.5).
``opengl_view``/``opengl_projection`` give the same camera in OpenGL's conventions (for renderers/exporters).

No field is silently wrong: a field that cannot be computed is None and ``missing`` says why (field -> reason).
FLAME's own ``translation`` is always 0 (the placement is in ``cam``), so it is not written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from flamefit.fit.crop import params_to_original
from flamefit.fit.fitter import Fitter, RawFit
from flamefit.fit.params import FlameParams
from flamefit.model.landmarks import model_landmarks_68
from flamefit.render.camera import project_points

# results of images larger than this (longest side, pixels) are rendered at a reduced size (``render_scale``)
MAX_RENDER_SIDE_PX = 2048


@dataclass
class FitResult:
    """One fitted image. Arrays are numpy, without a batch dimension."""

    name: str
    vertices: np.ndarray  # (V,3) metres, FLAME model frame (posed)
    shape: np.ndarray  # (n_shape,) identity coefficients (sd units)
    exp: np.ndarray  # (n_expr,) expression coefficients
    pose: np.ndarray  # (6,) global rotation (3) + jaw (3), axis-angle radians
    neck: np.ndarray  # (3,)
    eyes: np.ndarray  # (6,) left eye, right eye
    tex: np.ndarray  # (n_tex,) texture-space code (may be empty)
    light: np.ndarray  # (9,C) SH coefficients (C = 3, or 1 shared), camera-frame normals
    cam: np.ndarray  # (6,) OpenCV world->camera rotation axis-angle (3) + translation (3)
    K: np.ndarray  # (3,3) intrinsics, original-image pixels
    image_size: tuple[int, int]  # (H, W)
    lmks_68_fit: np.ndarray | None  # (68,2) projected from the fit (contour follows the silhouette by yaw)
    render: np.ndarray | None  # (h,w,3) rendered fit over black; (h,w) = render_scale x (H,W)
    mask: np.ndarray | None  # (h,w) rendered coverage (alpha) of the fit
    overlay: np.ndarray | None  # (h,3w,3) uint8 input | render | blend
    aligned_image: np.ndarray  # (S,S,3) the face crop the fitter worked on
    crop_transform: np.ndarray  # (2,3) original pixels -> aligned-image pixels
    albedo: np.ndarray  # (Ht,Wt,3) albedo texture map (RGB 0..1), UV row 0 = v 1
    lmks_68: np.ndarray | None = None  # (68,2) as detected
    lmks_dense: np.ndarray | None = None  # (478,2) as detected
    skin_mask: np.ndarray | None = None  # (H,W) the skin mask given to the fitter
    params: FlameParams | None = None  # batched tensors, intrinsics of the original image
    timings: dict = field(default_factory=dict)
    render_scale: float = 1.0  # render/mask/overlay pixels per original-image pixel (< 1 for huge images)
    landmarks_source: str | None = "detected"  # where lmks_68/lmks_dense come from (None: not written)
    blendshape_scores: np.ndarray | None = None  # (52,) MediaPipe blendshape scores 0..1
    blendshape_names: list[str] | None = None  # the 52 names, same order
    face_transform: np.ndarray | None = None  # (4,4) MediaPipe's facial transformation matrix
    missing: dict[str, str] = field(default_factory=dict)  # field -> why it is absent
    # faces the detector found and which was fitted ({"found": n, "fitted_index": i (from the left)}); None when
    # the input was not an Observation (no detection ran here)
    detected_faces: dict | None = None
    # where K's focal length comes from: 'given', 'config', 'exif', 'fov_deg prior (N deg)'; '... , fitted' when
    # camera.optimize_focal refined it
    focal_source: str | None = None

    @property
    def opengl_view(self) -> np.ndarray:
        """(4,4) world->camera matrix in OpenGL axes (y up, z backward)."""
        from flamefit.model.lbs import axis_angle_to_matrix
        from flamefit.render.camera import opencv_to_opengl_view

        R = axis_angle_to_matrix(torch.as_tensor(self.cam[None, :3], dtype=torch.float64))[0]
        return opencv_to_opengl_view(R, torch.as_tensor(self.cam[3:], dtype=torch.float64)).numpy()

    def opengl_projection(self, near: float = 0.01, far: float = 10.0) -> np.ndarray:
        from flamefit.render.camera import intrinsics_to_opengl_projection

        P = intrinsics_to_opengl_projection(torch.as_tensor(self.K[None], dtype=torch.float64),
                                            self.image_size[0], self.image_size[1], near, far)
        return P[0].numpy()

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array field that exists (for ``.npz``), plus the raw parameter tensors prefixed ``param_``
        (FLAME's ``translation`` is always zero and left out). ``overlay`` is a uint8 picture (0..255), which makes
        writing a 1024 px result ~0.7 s faster than float; ``render`` and ``mask`` keep float values."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                out[f.name] = v
        out["image_size"] = np.array(self.image_size, dtype=np.int64)
        out["render_scale"] = np.array(self.render_scale, dtype=np.float64)
        out["opengl_view"] = self.opengl_view
        out["opengl_projection"] = self.opengl_projection()
        if self.params is not None:
            for k, v in self.params.to_dict().items():
                if k != "translation":
                    out[f"param_{k}"] = v[0]
        return out


def make_overlay(image: np.ndarray, render: np.ndarray, alpha: np.ndarray, blend: float = 0.6) -> np.ndarray:
    """input | render | blend, side by side, as a (h, 3w, 3) uint8 picture (inputs float 0..1, (h,w,3) and alpha
    (h,w)); built directly in uint8 with OpenCV: ~3x faster than float intermediates on a 1024 px result."""
    import cv2

    image = np.ascontiguousarray(image, dtype=np.float32)
    render = np.ascontiguousarray(render, dtype=np.float32)
    a = np.ascontiguousarray(alpha, dtype=np.float32) * np.float32(blend)
    mixed = cv2.blendLinear(image, render, 1.0 - a, a)
    # convertScaleAbs: x * 255, rounded and saturated to 0..255 (inputs are >= 0, so the abs changes nothing)
    return cv2.convertScaleAbs(np.concatenate([image, render, mixed], axis=1), alpha=255.0)


def render_size(height: int, width: int, max_side: int = MAX_RENDER_SIDE_PX) -> tuple[int, int, float]:
    """(h, w, scale): the size results are rendered at (the image's, or reduced so the longest side fits)."""
    s = min(1.0, max_side / max(height, width))
    if s >= 1.0:
        return height, width, 1.0
    return max(1, round(height * s)), max(1, round(width * s)), s


@torch.no_grad()
def make_result(fitter: Fitter, raw: RawFit, max_render_side: int = MAX_RENDER_SIDE_PX) -> FitResult:
    """Turn the crop-space fit into a :class:`FitResult` in original-image pixels. Images larger than
    ``max_render_side`` get their render/mask/overlay at a reduced size, stored with ``render_scale``."""
    import cv2

    target = raw.target
    image = np.asarray(target.image, dtype=np.float32)
    H, W = image.shape[:2]
    missing: dict[str, str] = dict(getattr(fitter, "degraded", {}))
    p = params_to_original(raw.params, raw.crop)
    verts, _ = fitter.vertices(p)
    lmk_fit = None
    if fitter.landmarks68 is not None:
        lm3 = model_landmarks_68(fitter.landmarks68, verts, fitter.faces, p.global_pose, p.neck_pose)
        lmk_fit = project_points(fitter.to_camera(p, lm3), p.intrinsics())[0].cpu().numpy().astype(np.float32)
    else:
        missing["lmks_68_fit"] = ("no 68-point model landmarks: neither RingNet's embedding nor the dense "
                                  "correspondence (to derive them) is available for this model")
    albedo_full = fitter.albedo_full(p)
    h, w, scale = render_size(H, W, max_render_side)
    render = alpha = overlay = None
    if fitter.vt is not None:
        lit = fitter.render(p, verts, (h, w), antialias=True, K_scale=scale)
        render = lit.rgb[0].clamp(0, 1).cpu().numpy()
        alpha = lit.alpha[0, ..., 0].cpu().numpy()
        small = image if scale == 1.0 else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        overlay = make_overlay(small, render, alpha)
    else:
        for k in ("render", "mask", "overlay"):
            missing[k] = "the model has no UV layout, so the textured fit cannot be rendered"
    s, o = raw.crop.scale, raw.crop.offset
    crop_T = np.array([[s, 0, -s * o[0]], [0, s, -s * o[1]]])
    timings = {st.name + "_s": st.seconds for st in raw.stages}
    timings["init_s"] = raw.init_seconds
    lm68 = None if target.lmks_68 is None else np.asarray(target.lmks_68, np.float32)
    lmd = None if target.lmks_dense is None else np.asarray(target.lmks_dense, np.float32)
    if target.landmarks_source != "detected":
        lm68 = lmd = None
    for k, v in (("lmks_68", lm68), ("lmks_dense", lmd)):
        if v is None:
            missing[k] = "no detection ran on this image" if target.landmarks_source != "detected" else \
                f"the detector gave no {k}"
    if target.mask is None:
        missing["skin_mask"] = "no skin mask was given; the photometric term used the landmark hull"
    obs = target.observation
    extra = {}
    for k in ("blendshape_scores", "blendshape_names", "face_transform"):
        v = getattr(obs, k, None) if obs is not None else None
        if v is None:
            reason = (getattr(obs, "missing", None) or {}).get(k) if obs is not None else None
            missing[k] = reason or ("the input was not an Observation from flamefit.observe" if obs is None
                                    else "the landmark detector did not provide it")
        else:
            extra[k] = list(v) if k == "blendshape_names" else np.asarray(v, np.float32 if k != "face_transform"
                                                                           else np.float64)
    from flamefit.fit.init import target_focal

    focal_source = target_focal(target, H, W, fitter.cfg.camera)[1]
    if fitter.cfg.camera.optimize_focal:
        focal_source += ", fitted"
    return FitResult(
        name=target.name,
        focal_source=focal_source,
        vertices=verts[0].cpu().numpy(),
        shape=p.shape[0].cpu().numpy(),
        exp=p.expression[0].cpu().numpy(),
        pose=torch.cat([p.global_pose[0], p.jaw_pose[0]]).cpu().numpy(),
        neck=p.neck_pose[0].cpu().numpy(),
        eyes=p.eye_pose[0].cpu().numpy(),
        tex=p.tex[0].cpu().numpy(),
        light=p.light[0].cpu().numpy(),
        cam=torch.cat([p.cam_rotation[0], p.cam_translation[0]]).cpu().numpy(),
        K=p.intrinsics()[0].cpu().numpy(),
        image_size=(H, W),
        lmks_68_fit=lmk_fit,
        render=render,
        mask=alpha,
        overlay=overlay,
        aligned_image=raw.crop.warp(image),
        crop_transform=crop_T,
        albedo=albedo_full[0].clamp(0, 1).cpu().numpy(),
        lmks_68=lm68,
        lmks_dense=lmd,
        skin_mask=None if target.mask is None else np.asarray(target.mask, np.float32),
        params=p,
        timings=timings,
        render_scale=scale,
        landmarks_source="detected" if (lm68 is not None or lmd is not None) else None,
        missing=missing,
        detected_faces=None if not hasattr(target.observation, "faces_found") else
        {"found": int(target.observation.faces_found), "fitted_index": int(target.observation.face_index)},
        **extra,
    )
