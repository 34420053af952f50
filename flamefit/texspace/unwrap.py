"""Unwrapping: a fitted photo -> an albedo map in a UV layout, with the per-texel weight of each value.

``unwrap_albedo`` takes plain arrays (numpy or torch, batched (B,...) or single), so any fit can feed it: the mesh
(vertices, faces), the UV layout (``vt``, ``ft``: the starting texture space's or the model's), the camera
(``K`` in pixels of ``image``, OpenCV world->camera ``R`` (matrix or axis-angle) and ``t``), the SH light fitted
with camera-frame normals (``render.shade`` conventions, (9,) / (9,C)), the photo and an optional skin mask.
It bakes the photo into UV space (:func:`flamefit.render.bake.bake_uv`), divides by the fitted shading
(SH irradiance of the per-texel camera-frame normal, :func:`flamefit.render.sh_shading`) so the map holds albedo,
and clips to [0, 1]. ``weight`` combines visibility, view-angle confidence and the skin mask, and is zero where the
shading is too dark to divide by (``min_shading``) or the photo is saturated (``saturation``).

:func:`unwrap_fit` is the thin adapter for a fit result object with fields ``vertices`` (V,3), ``K`` (3,3),
``cam`` (6,) = axis-angle + translation, ``light`` (9,C) (``flamefit.fit.result.FitResult``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flamefit.model.lbs import axis_angle_to_matrix
from flamefit.render.bake import UVRaster, bake_uv
from flamefit.render.camera import PerspectiveCamera
from flamefit.render.shade import sh_shading


@dataclass
class UnwrapResult:
    """Albedo maps of B photos, channels-last, texel row 0 = v 1.

    albedo (B,Ht,Wt,3) RGB 0..1 (0 where weight is 0); weight (B,Ht,Wt) in [0,1]; visible (B,Ht,Wt) bool
    (geometric visibility only); shading (B,Ht,Wt,3) the fitted irradiance divided out; color (B,Ht,Wt,3) the
    photo as baked; uv_mask (Ht,Wt) bool texels covered by the layout.
    """

    albedo: torch.Tensor
    weight: torch.Tensor
    visible: torch.Tensor
    shading: torch.Tensor
    color: torch.Tensor
    uv_mask: torch.Tensor

    def numpy(self, index: int = 0) -> dict[str, np.ndarray]:
        """One item's maps as numpy arrays (float32 / bool), e.g. for an ``.npz``."""
        return {
            "albedo": self.albedo[index].detach().cpu().float().numpy(),
            "weight": self.weight[index].detach().cpu().float().numpy(),
            "visible": self.visible[index].cpu().numpy(),
            "uv_mask": self.uv_mask.cpu().numpy(),
        }


def _t(x, dtype=None, device=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device, dtype=dtype) if dtype is not None else t.to(device=device)


def _batched(x: torch.Tensor, ndim: int, name: str) -> torch.Tensor:
    if x.dim() == ndim - 1:
        return x.unsqueeze(0)
    if x.dim() != ndim:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {ndim - 1} dims, or {ndim} with a batch")
    return x


def image_to_float(image, dtype=torch.float32, device=None) -> torch.Tensor:
    """uint8 0..255 or float 0..1 image(s) (...,H,W,3) -> float tensor 0..1."""
    t = _t(image, device=device)
    if not t.is_floating_point():
        return t.to(dtype) / 255.0
    return t.to(dtype)


def unwrap_albedo(vertices, faces, vt, ft, K, R, t, light, image, *, skin_mask=None,
                  size: int | tuple[int, int] = 256, uv: UVRaster | None = None, depth_tol_m: float = 0.005,
                  min_cos: float = 0.1, min_shading: float = 0.05, saturation: float = 0.995,
                  dtype: torch.dtype = torch.float32, device=None) -> UnwrapResult:
    """Photo(s) -> albedo map(s) (see the module doc).

    Args:
        vertices: (B,V,3) or (V,3) metres, the frame ``R``, ``t`` map to the camera.
        faces: (F,3) position faces; ``vt`` (T,2), ``ft`` (F,3) the UV layout (same face order).
        K: (B,3,3) or (3,3) intrinsics in pixels of ``image``; R: (B,3,3)/(3,3) rotation or (B,3)/(3,) axis-angle;
            t: (B,3) or (3,) metres. ``X_cam = R X + t`` (OpenCV).
        light: SH coefficients (B,9,C)/(9,C)/(B,9)/(9,) for camera-frame normals (C = 3 or 1).
        image: (B,H,W,3) or (H,W,3), uint8 or float 0..1.
        skin_mask: optional (B,H,W)/(H,W) weight in [0,1] (bool/uint8 accepted) of the pixels to trust.
        size: texel grid (int or (Ht,Wt)); ignored when a precomputed ``uv`` raster is given.
        depth_tol_m, min_cos: see :func:`flamefit.render.bake.bake_uv`.
        min_shading: texels whose fitted irradiance is below this (any channel) get weight 0.
        saturation: texels whose photo value reaches this (any channel) get weight 0 (clipped highlights).
    """
    verts = _batched(_t(vertices, dtype, device), 3, "vertices")
    dev = verts.device
    B = verts.shape[0]
    img = _batched(image_to_float(image, dtype, dev), 4, "image")
    if img.shape[-1] != 3:
        raise ValueError(f"image must have 3 colour channels, got {tuple(img.shape)}")
    H, W = int(img.shape[1]), int(img.shape[2])
    Kt = _batched(_t(K, dtype, dev), 3, "K")
    Rt = _t(R, dtype, dev)
    if Rt.shape[-2:] != (3, 3):
        Rt = axis_angle_to_matrix(_batched(Rt, 2, "R (axis-angle)"))
    Rt = _batched(Rt, 3, "R")
    tt = _batched(_t(t, dtype, dev), 2, "t")
    sh = _t(light, dtype, dev)
    if sh.dim() == 1 or (sh.dim() == 2 and sh.shape[1] != 9):
        sh = sh.unsqueeze(0)  # unbatched (9,) or (9,C); (N,9) is a batch of shared-colour lights
    if sh.dim() not in (2, 3) or sh.shape[1] != 9:
        raise ValueError(f"light must be SH coefficients (B,9,C) or (9,C), got {tuple(_t(light).shape)}")
    for name, x in (("image", img), ("K", Kt), ("R", Rt), ("t", tt), ("light", sh)):
        if x.shape[0] not in (1, B):
            raise ValueError(f"{name} has batch {x.shape[0]}, the vertices {B}")
    if img.shape[0] != B:
        img = img.expand(B, -1, -1, -1)
    cam = PerspectiveCamera(K=Kt.expand(B, 3, 3), R=Rt.expand(B, 3, 3), t=tt.expand(B, 3), height=H, width=W)
    mask = None
    if skin_mask is not None:
        mask = _batched(_t(skin_mask, device=dev), 3, "skin_mask").to(dtype)
        if mask.shape[1:] != (H, W):
            raise ValueError(f"skin mask {tuple(mask.shape)} does not match the image ({H}x{W})")
        mask = mask.expand(B, H, W).clamp(0.0, 1.0)

    faces_t = _t(faces, device=dev).to(torch.int64)
    bake = bake_uv(verts, faces_t, _t(vt, dtype, dev), _t(ft, device=dev), cam, img, mask=mask, size=size, uv=uv,
                   depth_tol=depth_tol_m, min_cos=min_cos)
    shading = sh_shading(bake.normals_cam, sh.expand(B, *sh.shape[1:]))
    if shading.shape[-1] == 1:
        shading = shading.expand(-1, -1, -1, 3)
    ok = (shading > min_shading).all(-1) & (bake.color < saturation).all(-1) & bake.uv_mask
    weight = bake.weight * ok.to(dtype)
    albedo = (bake.color / shading.clamp_min(min_shading)).clamp(0.0, 1.0)
    albedo = torch.where((weight > 0).unsqueeze(-1), albedo, torch.zeros_like(albedo))
    return UnwrapResult(albedo=albedo, weight=weight, visible=bake.visible, shading=shading, color=bake.color,
                        uv_mask=bake.uv_mask)


def unwrap_fit(result, image, faces, vt, ft, *, skin_mask=None, **kwargs) -> UnwrapResult:
    """Adapter for a fit result with ``vertices`` (V,3), ``K`` (3,3), ``cam`` (6,) (axis-angle, translation) and
    ``light`` (9,C), e.g. ``flamefit.fit.result.FitResult``; ``image`` is the photo the fit's ``K`` refers to."""
    cam = np.asarray(result.cam)
    if skin_mask is None:
        skin_mask = getattr(result, "skin_mask", None)
    return unwrap_albedo(result.vertices, faces, vt, ft, result.K, cam[:3], cam[3:], result.light, image,
                         skin_mask=skin_mask, **kwargs)
