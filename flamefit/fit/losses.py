"""Loss terms of the fitter. Each is a small function returning a scalar (mean over the batch).

Landmark errors are normalised by the image side of the fitted crop so weights do not depend on resolution.
"""

from __future__ import annotations

import torch

from flamefit.fit.landmarks import (
    INNER_LIP_LOWER,
    INNER_LIP_UPPER,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
)


def landmark_loss(pred_px: torch.Tensor, target_px: torch.Tensor, image_size: float,
                  weights: torch.Tensor | None = None, delta: float = 0.02) -> torch.Tensor:
    """Weighted Huber loss on 2D landmark distances, in units of the image side.

    pred_px, target_px (B,N,2); weights (N,) or (B,N) (confidence x per-point weight; 0 = ignore).
    Huber with ``delta`` (fraction of the image) is quadratic near the optimum and linear for outliers.
    """
    d = (pred_px - target_px).norm(dim=-1) / image_size  # (B,N)
    rho = torch.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta))
    if weights is None:
        return rho.mean()
    w = weights.to(d.dtype)
    if w.ndim == 1:
        w = w.unsqueeze(0).expand_as(d)
    return (rho * w).mean()  # weights scale the term (not renormalised), so a global weight acts as one


def _gap(points: torch.Tensor, upper: list[int], lower: list[int]) -> torch.Tensor:
    return points[:, upper] - points[:, lower]  # (B,k,2)


def eye_closure_loss(pred68: torch.Tensor, target68: torch.Tensor, image_size: float) -> torch.Tensor:
    """Upper-minus-lower eyelid vectors of the fit match the detected ones (both eyes), image-side units squared."""
    loss = 0.0
    for up, lo in ((LEFT_EYE_UPPER, LEFT_EYE_LOWER), (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)):
        loss = loss + (_gap(pred68, up, lo) - _gap(target68, up, lo)).div(image_size).pow(2).sum(-1).mean()
    return loss / 2


def lip_distance_loss(pred68: torch.Tensor, target68: torch.Tensor, image_size: float) -> torch.Tensor:
    """Inner upper-minus-lower lip vectors match the detected ones (mouth opening), image-side units squared."""
    return (_gap(pred68, INNER_LIP_UPPER, INNER_LIP_LOWER) - _gap(target68, INNER_LIP_UPPER, INNER_LIP_LOWER)) \
        .div(image_size).pow(2).sum(-1).mean()


def photometric_loss(render_rgb: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                     scale: float = 0.1) -> torch.Tensor:
    """Robust (Geman-McClure) colour difference on the masked pixels.

    render_rgb, image (B,H,W,3) RGB 0..1; mask (B,H,W) soft weights (skin mask x rendered coverage).
    rho(r) = r^2 / (r^2 + s^2) per pixel with r the RGB distance: shadows, hair strands, specularities that no
    Lambertian model explains saturate instead of dragging the fit. Normalised by the mask's mass.
    """
    r2 = (render_rgb - image).pow(2).sum(-1)
    rho = r2 / (r2 + scale * scale)
    return (rho * mask).sum() / mask.sum().clamp(min=1.0)


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """Sum of squares per sample, mean over the batch (coefficients in units of 1 sd; poses in radians)."""
    if x.numel() == 0:
        return x.new_zeros(())
    return x.pow(2).flatten(1).sum(-1).mean()


def light_prior(light: torch.Tensor) -> torch.Tensor:
    """Keep the non-ambient SH bands small (B,9,C) and the channels' ambient terms close to each other."""
    loss = light[:, 1:].pow(2).sum((1, 2)).mean()
    if light.shape[-1] > 1:
        dc = light[:, 0]
        loss = loss + (dc - dc.mean(-1, keepdim=True)).pow(2).sum(-1).mean()
    return loss
