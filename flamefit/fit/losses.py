"""The fitter's loss functions. Each returns one value PER ITEM, shape (B,): the fit minimises their sum over
items, so items of a batch never couple through a normalisation (see :mod:`flamefit.fit.terms`).

Landmark errors are normalised by the image side of the fitted crop so weights do not depend on resolution.
"""

from __future__ import annotations

import torch

from flamefit import ibug68


def landmark_loss(pred_px: torch.Tensor, target_px: torch.Tensor, image_size: float,
                  weights: torch.Tensor | None = None, delta: float = 0.02) -> torch.Tensor:
    """Weighted Huber loss on 2D landmark distances, in units of the image side; (B,).

    pred_px, target_px (B,N,2); weights (N,) or (B,N) (confidence x per-point weight; 0 = ignore).
    Huber with ``delta`` (fraction of the image) is quadratic near the optimum and linear for outliers.
    The weights scale the term (mean over points, not renormalised), so a global weight acts as one.
    """
    d = (pred_px - target_px).norm(dim=-1) / image_size  # (B,N)
    rho = torch.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta))
    if weights is not None:
        rho = rho * weights.to(d.dtype)
    return rho.mean(-1)


def _gap(points: torch.Tensor, upper, lower) -> torch.Tensor:
    return points[:, list(upper)] - points[:, list(lower)]  # (B,k,2)


def _gap_loss(pred68, target68, upper, lower, image_size: float) -> torch.Tensor:
    return (_gap(pred68, upper, lower) - _gap(target68, upper, lower)).div(image_size).pow(2).sum(-1).mean(-1)


def eye_closure_loss(pred68: torch.Tensor, target68: torch.Tensor, image_size: float) -> torch.Tensor:
    """Upper-minus-lower eyelid vectors of the fit match the detected ones (both eyes), image-side units squared;
    (B,)."""
    return (_gap_loss(pred68, target68, ibug68.RIGHT_EYE_UPPER, ibug68.RIGHT_EYE_LOWER, image_size)
            + _gap_loss(pred68, target68, ibug68.LEFT_EYE_UPPER, ibug68.LEFT_EYE_LOWER, image_size)) / 2


def lip_distance_loss(pred68: torch.Tensor, target68: torch.Tensor, image_size: float) -> torch.Tensor:
    """Inner upper-minus-lower lip vectors match the detected ones (mouth opening), image-side units squared;
    (B,)."""
    return _gap_loss(pred68, target68, ibug68.INNER_LIP_UPPER, ibug68.INNER_LIP_LOWER, image_size)


def photometric_loss(render_rgb: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                     scale: float = 0.1) -> torch.Tensor:
    """Robust (Geman-McClure) colour difference on the masked pixels; (B,).

    render_rgb, image (B,H,W,3) RGB 0..1; mask (B,H,W) soft weights (skin mask x rendered coverage).
    rho(r) = r^2 / (r^2 + s^2) per pixel with r the RGB distance: shadows, hair strands, specularities that no
    Lambertian model explains saturate instead of dragging the fit. Normalised by each item's mask mass.
    """
    r2 = (render_rgb - image).pow(2).sum(-1)
    rho = r2 / (r2 + scale * scale)
    return (rho * mask).flatten(1).sum(-1) / mask.flatten(1).sum(-1).clamp(min=1.0)


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """Sum of squares per item (coefficients in units of 1 sd; poses in radians); (B,)."""
    if x.numel() == 0:
        return x.new_zeros(x.shape[0])
    return x.pow(2).flatten(1).sum(-1)


def light_prior(light: torch.Tensor) -> torch.Tensor:
    """Keep the non-ambient SH bands small (B,9,C) and the channels' ambient terms close to each other; (B,)."""
    loss = light[:, 1:].pow(2).sum((1, 2))
    if light.shape[-1] > 1:
        dc = light[:, 0]
        loss = loss + (dc - dc.mean(-1, keepdim=True)).pow(2).sum(-1)
    return loss


def map_l2(tex: torch.Tensor) -> torch.Tensor:
    """Mean square of a (B,H,W,C) map per item; (B,)."""
    return tex.pow(2).flatten(1).mean(-1)


def map_smoothness(tex: torch.Tensor) -> torch.Tensor:
    """Mean squared finite difference of a (B,H,W,C) map along rows plus along columns, per item; (B,)."""
    dx = (tex[:, :, 1:] - tex[:, :, :-1]).pow(2).flatten(1).mean(-1)
    dy = (tex[:, 1:] - tex[:, :-1]).pow(2).flatten(1).mean(-1)
    return dx + dy


def map_symmetry(tex: torch.Tensor) -> torch.Tensor:
    """Left-right symmetry of a (B,H,W,C) map on FLAME's UV layout (mirrored about u = 0.5), per item; (B,)."""
    return (tex - tex.flip(2)).pow(2).flatten(1).mean(-1)
