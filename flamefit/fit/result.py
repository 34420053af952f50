"""The result of fitting one image, in the field's vocabulary and in pixels of the ORIGINAL image.

Camera convention (stated once, used everywhere): OpenCV. ``cam`` = (rotation axis-angle (3), translation (3))
maps FLAME's model frame (after ``pose``/``neck``/``eyes`` skinning, i.e. ``vertices``) to the camera frame:
``X_cam = R(cam[:3]) @ X + cam[3:]`` (x right, y down, z forward, metres); ``K`` (3,3) maps camera points to
pixels of the original image (x right, y down, origin at the top-left corner, pixel centres at +0.5).
``opengl_view``/``opengl_projection`` give the same camera in OpenGL's conventions (for renderers/exporters).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from flamefit.fit.crop import params_to_original
from flamefit.fit.fitter import Fitter, RawFit
from flamefit.fit.landmarks import model_landmarks_68, project_points
from flamefit.fit.params import FlameParams


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
    lmks_68_fit: np.ndarray  # (68,2) projected from the fit (contour follows the silhouette by yaw)
    render: np.ndarray  # (H,W,3) rendered fit over black
    mask: np.ndarray  # (H,W) rendered coverage (alpha) of the fit
    overlay: np.ndarray  # (H,3W,3) input | render | blend
    aligned_image: np.ndarray  # (S,S,3) the face crop the fitter worked on
    crop_transform: np.ndarray  # (2,3) original pixels -> aligned-image pixels
    albedo: np.ndarray  # (Ht,Wt,3) albedo texture map (RGB 0..1), UV row 0 = v 1
    lmks_68: np.ndarray | None = None  # (68,2) as detected
    lmks_dense: np.ndarray | None = None  # (478,2) as detected
    skin_mask: np.ndarray | None = None  # (H,W) the photometric mask used
    params: FlameParams | None = None  # batched tensors, intrinsics of the original image
    timings: dict = field(default_factory=dict)

    @property
    def opengl_view(self) -> np.ndarray:
        """(4,4) world->camera matrix in OpenGL axes (y up, z backward)."""
        import cv2

        R, _ = cv2.Rodrigues(self.cam[:3].astype(np.float64))
        M = np.eye(4)
        M[:3, :3] = np.diag([1.0, -1.0, -1.0]) @ R
        M[:3, 3] = np.diag([1.0, -1.0, -1.0]) @ self.cam[3:]
        return M

    def opengl_projection(self, near: float = 0.01, far: float = 10.0) -> np.ndarray:
        from flamefit.render.camera import intrinsics_to_opengl_projection

        P = intrinsics_to_opengl_projection(torch.as_tensor(self.K[None], dtype=torch.float64),
                                            self.image_size[0], self.image_size[1], near, far)
        return P[0].numpy()

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array field (for ``.npz``), plus the raw parameter tensors prefixed ``param_``."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                out[f.name] = v
        out["image_size"] = np.array(self.image_size, dtype=np.int64)
        out["opengl_view"] = self.opengl_view
        out["opengl_projection"] = self.opengl_projection()
        if self.params is not None:
            for k, v in self.params.to_dict().items():
                out[f"param_{k}"] = v[0]
        return out


def make_overlay(image: np.ndarray, render: np.ndarray, alpha: np.ndarray, blend: float = 0.6) -> np.ndarray:
    """input | render | blend, side by side."""
    a = (alpha[..., None] * blend).astype(np.float32)
    mixed = image * (1 - a) + render * a
    return np.concatenate([image, render, mixed], axis=1).clip(0, 1).astype(np.float32)


@torch.no_grad()
def make_result(fitter: Fitter, raw: RawFit, max_render_side: int = 2048) -> FitResult:
    """Turn the crop-space fit into a :class:`FitResult` in original-image pixels."""
    target = raw.target
    image = np.asarray(target.image, dtype=np.float32)
    H, W = image.shape[:2]
    p = params_to_original(raw.params, raw.crop)
    verts, _ = fitter.vertices(p)
    lm3 = model_landmarks_68(fitter.landmarks68, verts, fitter.faces, p.global_pose, p.neck_pose) \
        if fitter.landmarks68 is not None else None
    lmk_fit = project_points(fitter.to_camera(p, lm3), p.intrinsics())[0].cpu().numpy() if lm3 is not None \
        else np.zeros((68, 2))
    albedo_full = fitter.full_texture_space(p.tex, batch=1) if fitter.texture_space.n_components else \
        fitter.texture_space(None, batch=1)
    if p.tex_offset is not None:
        from flamefit.model.texture_space import resize_map

        albedo_full = albedo_full + resize_map(p.tex_offset, tuple(albedo_full.shape[1:3]))
    render = np.zeros_like(image)
    alpha = np.zeros(image.shape[:2], np.float32)
    if fitter.vt is not None and max(H, W) <= max_render_side:
        r = fitter.render_image(p, H, W)
        render = r["rgb"][0].clamp(0, 1).cpu().numpy()
        alpha = r["alpha"][0].cpu().numpy()
    s, o = raw.crop.scale, raw.crop.offset
    crop_T = np.array([[s, 0, -s * o[0]], [0, s, -s * o[1]]])
    timings = {st.name + "_s": st.seconds for st in raw.stages}
    timings["init_s"] = raw.init_seconds
    return FitResult(
        name=target.name,
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
        lmks_68_fit=lmk_fit.astype(np.float32),
        render=render,
        mask=alpha,
        overlay=make_overlay(image, render, alpha),
        aligned_image=raw.crop.warp(image),
        crop_transform=crop_T,
        albedo=albedo_full[0].clamp(0, 1).cpu().numpy(),
        lmks_68=None if target.lmks_68 is None else np.asarray(target.lmks_68, np.float32),
        lmks_dense=None if target.lmks_dense is None else np.asarray(target.lmks_dense, np.float32),
        skin_mask=None if target.mask is None else np.asarray(target.mask, np.float32),
        params=p,
        timings=timings,
    )
