"""Per-stage constants of a photometric stage whose geometry and camera do not change (``appearance``,
``offset``, fit-texture's ``texture``).

With vertices and camera fixed, rasterisation, barycentrics, UVs, normals and the SH basis of every pixel are
constants of the stage: :class:`FrozenRender` computes them once and each iteration only samples the albedo, shades
(the SH light is a 9x3 matrix product), and evaluates the photometric loss on the pixels that carry weight (covered
AND inside the skin mask; no other pixel reaches the loss or its gradient). Without anti-aliasing the render is the
colour on covered pixels and zero coverage elsewhere, so the loss and its gradients with respect to texture code,
texel offset and light are those of :class:`flamefit.fit.terms.PhotometricTerm` on a full render (tested).

Bilinear sampling is linear in the map, so a texture space's mean and components are sampled once at the pixels'
UVs: the albedo of a code is then ``mean_px + code @ basis_px`` (no map is built per iteration).
"""

from __future__ import annotations

import torch

from flamefit.fit.params import FlameParams
from flamefit.model.texture_space import resize_map
from flamefit.render.shade import sh_basis_t
from flamefit.render.texture import texture_packed_t

# parameters that move the mesh or the camera; a stage that frees none of them renders the same pixels throughout
GEOMETRY_FIELDS = frozenset({"shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose",
                             "translation", "cam_rotation", "cam_translation", "focal_px", "principal_px"})


class FrozenRender:
    """The pixels of a fixed-geometry render of ``params`` at ``level`` (a :class:`flamefit.fit.targets.ImageLevel`)
    that carry photometric weight, with what the loss needs of them (see module doc). Items are independent:
    each one's pixels are a contiguous block (``counts``)."""

    @torch.no_grad()
    def __init__(self, fitter, params: FlameParams, level):
        S = level.size
        B = params.batch_size
        self.fitter = fitter
        verts, _ = fitter.vertices(params)
        out = fitter.render(params, verts, (S, S), shaded=False, K_scale=level.scale)
        coverage = out.alpha[..., 0]
        # normalisation of the loss exactly as on a full render: the mask mass under the coverage, per item
        self.denom = (level.mask * coverage).flatten(1).sum(-1).clamp(min=1.0)
        sel = out.mask & (level.mask > 0)
        idx = torch.nonzero(sel.reshape(-1)).squeeze(1)  # flat B*S*S indices, ascending: grouped by item
        self.batch_index = torch.div(idx, S * S, rounding_mode="floor")
        self.counts = torch.bincount(self.batch_index, minlength=B).tolist()
        self.batch_size = B
        self.uv_t = out.uv.reshape(-1, 2).index_select(0, idx).t().contiguous()  # (2,N)
        normals = out.normals.reshape(-1, 3).index_select(0, idx).t().contiguous()  # (3,N) unit
        self.sh_basis = list(torch.split(sh_basis_t(normals), self.counts, dim=1))  # per item (9,n_b)
        self.image = level.image.reshape(-1, 3).index_select(0, idx).t().contiguous()  # (3,N)
        self.weight = level.mask.reshape(-1).index_select(0, idx)  # (N,)
        ts = fitter.texture_space
        self.tex_size = tuple(ts.mean.shape[:2])
        self.mean_px = self._sample(ts.mean)  # (3,N)
        K = ts.n_components
        self.basis_px = None
        if K:
            maps = ts.basis.permute(1, 2, 0, 3).reshape(*self.tex_size, K * 3)  # channel k*3+c
            flat = self._sample(maps).view(K, 3, -1)
            # per item (K, 3*n_b), contiguous: one matrix product per item and iteration
            self.basis_px = [part.reshape(K, -1).contiguous() for part in torch.split(flat, self.counts, dim=2)]

    def _sample(self, tex: torch.Tensor) -> torch.Tensor:
        bidx = self.batch_index if tex.dim() == 4 and tex.shape[0] > 1 else torch.zeros_like(self.batch_index)
        return texture_packed_t(tex, self.uv_t.to(tex.dtype), bidx)

    def albedo(self, params: FlameParams) -> torch.Tensor:
        """(3,N) albedo of the weighted pixels: as :meth:`Fitter.albedo` sampled there."""
        color = self.mean_px
        if self.basis_px is not None and params.tex is not None and params.tex.shape[-1]:
            code = params.tex
            k = code.shape[-1]
            parts = [(code[b:b + 1] @ self.basis_px[b][:k]).view(3, -1) for b in range(self.batch_size)]
            color = color + torch.cat(parts, 1)
        if params.tex_offset is not None:
            off = resize_map(params.tex_offset, self.tex_size)
            color = color + self._sample(off)
        return color

    def shading(self, params: FlameParams) -> torch.Tensor:
        """(C,N) SH irradiance (C = 3, or 1 for light shared by the channels)."""
        light = params.light  # (B,9,C)
        if light.shape[0] == 1 and self.batch_size > 1:
            light = light.expand(self.batch_size, *light.shape[1:])
        return torch.cat([light[b].t() @ y for b, y in enumerate(self.sh_basis)], 1)

    def photometric_loss(self, params: FlameParams, scale: float) -> torch.Tensor:
        """(B,) the loss of :func:`flamefit.fit.losses.photometric_loss` on the render of ``params``."""
        rgb = self.albedo(params) * self.shading(params)
        return _RobustPixels.apply(rgb, self.image, self.weight / self.denom[self.batch_index], self.batch_index,
                                   self.batch_size, float(scale))


class _RobustPixels(torch.autograd.Function):
    """Per item: sum over its pixels of ``w * rho(|clamp(rgb, 0, 1) - image|)`` with Geman-McClure
    ``rho(r) = r^2 / (r^2 + s^2)``; rgb, image (3,N), w (N,), bidx (N,) -> (B,). One node instead of a dozen: the
    offset stage's iterations are a few milliseconds."""

    @staticmethod
    def forward(ctx, rgb, image, w, bidx, B: int, scale: float):
        clamped = rgb.clamp(0.0, 1.0)
        diff = clamped - image
        r2 = diff.pow(2).sum(0)
        s2 = scale * scale
        den = r2 + s2
        ctx.save_for_backward(rgb, diff, den, w, bidx)
        ctx.s2 = s2
        return (r2 / den * w).new_zeros(B).index_add_(0, bidx, r2 / den * w)

    @staticmethod
    def backward(ctx, g):
        rgb, diff, den, w, bidx, = ctx.saved_tensors
        # d rho / d r2 = s^2 / (r2 + s^2)^2; d r2 / d rgb = 2 diff inside [0, 1], 0 where clamped
        k = (2 * ctx.s2) * w * g.index_select(0, bidx) / den.pow(2)
        g_rgb = diff * k * ((rgb >= 0) & (rgb <= 1)).to(diff.dtype)
        return g_rgb, None, None, None, None, None
