"""The square face crop the fitter works in, and the mapping of intrinsics between the crop and the original image.

``crop_px = (orig_px - offset) * scale``: a crop and a scale only change ``K``, never the 3D fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flamefit.fit.params import FlameParams


@dataclass
class Crop:
    """Square crop: crop_px = (orig_px - offset) * scale, for an output of ``size`` x ``size`` pixels."""

    offset: np.ndarray  # (2,)
    scale: float
    size: int

    @classmethod
    def around(cls, points: np.ndarray, size: int, crop_scale: float) -> Crop:
        lo, hi = points.min(0), points.max(0)
        centre = (lo + hi) / 2
        side = max(float((hi - lo).max()) * crop_scale, 8.0)
        return cls(offset=centre - side / 2, scale=size / side, size=size)

    def to_crop(self, pts: np.ndarray) -> np.ndarray:
        return (np.asarray(pts, dtype=np.float64) - self.offset) * self.scale

    def to_orig(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, dtype=np.float64) / self.scale + self.offset

    def warp(self, image: np.ndarray, interpolation: str = "linear", border: str = "replicate") -> np.ndarray:
        """Resample ``image`` (H,W[,C]) into the crop (OpenCV, pixel-centre conventions reconciled)."""
        import cv2

        s = self.scale
        src = np.ascontiguousarray(image, dtype=np.float32)
        if s < 0.5 and interpolation == "linear":  # antialias before a strong downscale
            sigma = 0.5 / s
            src = cv2.GaussianBlur(src, (0, 0), sigmaX=sigma, sigmaY=sigma)
        # corner-origin: x' = s (x - o); OpenCV centre-origin: x'_cv + .5 = s (x_cv + .5 - o)
        M = np.array([[s, 0, s * (0.5 - self.offset[0]) - 0.5], [0, s, s * (0.5 - self.offset[1]) - 0.5]])
        flag = cv2.INTER_LINEAR if interpolation == "linear" else cv2.INTER_NEAREST
        mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
        return cv2.warpAffine(src, M, (self.size, self.size), flags=flag, borderMode=mode, borderValue=0)



def params_to_original(params: FlameParams, crop) -> FlameParams:
    """Crop intrinsics -> original-image intrinsics (crop_px = (orig_px - offset) * scale)."""
    p = params.detach()
    p.focal_px = p.focal_px / crop.scale
    off = torch.as_tensor(crop.offset, dtype=p.principal_px.dtype, device=p.principal_px.device)
    p.principal_px = p.principal_px / crop.scale + off
    return p


def params_to_crop(params: FlameParams, crop) -> FlameParams:
    p = params.detach()
    p.focal_px = p.focal_px * crop.scale
    off = torch.as_tensor(crop.offset, dtype=p.principal_px.dtype, device=p.principal_px.device)
    p.principal_px = (p.principal_px - off) * crop.scale
    return p
