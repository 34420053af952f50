"""The fitter's loss functions. Each returns one value PER ITEM, shape (B,): the fit minimises their sum over
items, so items of a batch never couple through a normalisation (see :mod:`flamefit.fit.terms`).

Landmark errors are normalised by the image side of the fitted crop so weights do not depend on resolution.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from flamefit import ibug68
from flamefit.render._backend import numba_for


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


def photometric_loss_clipped(render_rgb: torch.Tensor, image: torch.Tensor, skin: torch.Tensor,
                             alpha: torch.Tensor, scale: float = 0.1) -> torch.Tensor:
    """``photometric_loss(render_rgb.clamp(0, 1), image, skin * alpha, scale)`` as one autograd op; (B,).

    render_rgb, image (B,H,W,3); skin (B,H,W) constant weights; alpha (B,H,W) or (B,H,W,1) rendered coverage.
    Same values and gradients (w.r.t. ``render_rgb`` and ``alpha``; a clipped channel passes none, as with
    ``clamp``), but one pass forward and one backward over the image instead of autograd's dozen full-size
    temporaries: this runs every iteration of the photometric stage."""
    if alpha.dim() not in (3, 4) or (alpha.dim() == 4 and alpha.shape[-1] != 1) or alpha.shape[:3] != skin.shape:
        raise ValueError(f"alpha must be (B,H,W) or (B,H,W,1) like skin {tuple(skin.shape)}, got "
                         f"{tuple(alpha.shape)}")
    return _PhotometricClipped.apply(render_rgb, image, skin, alpha, float(scale))


class _PhotometricClipped(torch.autograd.Function):
    """Numba kernels (flamefit.fit._losses_numba) on CPU float tensors, the same maths in torch elsewhere."""

    @staticmethod
    def forward(ctx, rgb, image, skin, alpha, scale):
        B = rgb.shape[0]
        s2 = scale * scale
        ctx.scale = scale
        ctx.numba = numba_for(rgb) and image.dtype == skin.dtype == alpha.dtype == rgb.dtype
        if ctx.numba:
            from flamefit.fit import _losses_numba as K

            rgb, image, skin, alpha = (t.detach().contiguous() for t in (rgb, image, skin, alpha))
            num = torch.empty(B, dtype=torch.float64)
            mass = torch.empty(B, dtype=torch.float64)
            K.photo_forward(rgb.view(B, -1, 3).numpy(), image.view(B, -1, 3).numpy(), skin.view(B, -1).numpy(),
                            alpha.view(B, -1).numpy(), s2, num.numpy(), mass.numpy())
            mass = mass.to(rgb.dtype)
            norm = mass.clamp(min=1.0)
            loss = num.to(rgb.dtype) / norm
            ctx.save_for_backward(rgb, image, skin, alpha, norm, loss, mass)
            return loss
        d = rgb.clamp(0.0, 1.0) - image  # (B,H,W,3)
        d2 = d * d
        r2 = d2[..., 0] + d2[..., 1] + d2[..., 2]  # explicit: a reduction over a size-3 axis is slow on CPU
        rho = r2 / (r2 + s2)
        w = skin * alpha.view(skin.shape)
        mass = w.reshape(B, -1).sum(-1)
        norm = mass.clamp(min=1.0)
        loss = (rho * w).reshape(B, -1).sum(-1) / norm
        ctx.save_for_backward(rgb, image, skin, alpha, norm, loss, mass)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        rgb, image, skin, alpha, norm, loss, mass = ctx.saved_tensors
        B = rgb.shape[0]
        s2 = ctx.scale * ctx.scale
        gl = g / norm  # d loss / d sum(rho * w)
        # d loss / d w = (rho - loss [mass > 1]) / norm: the clamp of the mass passes no gradient below 1
        sub = loss * (mass > 1.0).to(loss.dtype)
        want_rgb, want_skin, want_alpha = (ctx.needs_input_grad[i] for i in (0, 2, 3))
        g_rgb = g_skin = g_alpha = None
        if ctx.numba:
            from flamefit.fit import _losses_numba as K

            g_rgb = torch.empty_like(rgb) if want_rgb else rgb.new_empty(1, 1, 3)
            g_skin = torch.empty_like(skin) if want_skin else skin.new_empty(1, 1)
            g_alpha = torch.empty_like(alpha) if want_alpha else alpha.new_empty(1, 1)
            K.photo_backward(rgb.view(B, -1, 3).numpy(), image.view(B, -1, 3).numpy(), skin.view(B, -1).numpy(),
                             alpha.view(B, -1).numpy(), s2, gl.contiguous().numpy(), sub.contiguous().numpy(),
                             want_rgb, want_skin, want_alpha, g_rgb.view(g_rgb.shape[0], -1, 3).numpy(),
                             g_skin.view(g_skin.shape[0], -1).numpy(), g_alpha.view(g_alpha.shape[0], -1).numpy())
        else:
            d = rgb.clamp(0.0, 1.0) - image
            d2 = d * d
            r2 = d2[..., 0] + d2[..., 1] + d2[..., 2]
            den = r2 + s2
            if want_rgb:
                coef = (gl.view(B, 1, 1) * (2.0 * s2)) * (skin * alpha.view(skin.shape)) / (den * den)
                g_rgb = d.mul_(coef.unsqueeze(-1)).mul_((rgb >= 0.0) & (rgb <= 1.0))
            if want_skin or want_alpha:
                g_w = (r2 / den - sub.view(B, 1, 1)) * gl.view(B, 1, 1)
                g_skin = g_w * alpha.view(skin.shape) if want_skin else None
                g_alpha = (g_w * skin).view(alpha.shape) if want_alpha else None
        return ((g_rgb if want_rgb else None), None, (g_skin if want_skin else None),
                (g_alpha if want_alpha else None), None)


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
