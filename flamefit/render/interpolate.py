"""Interpolate per-vertex attributes over the rasterized pixels (differentiable w.r.t. the attribute and the
barycentrics, hence the vertex positions).

``interpolate(attr, faces, frags)`` -> (B,H,W,C), zeros on background; ``packed=True`` returns (N,C) for the
covered pixels only (cheaper; ``frags.unpack`` turns it into an image with any background), and
``interpolate_t`` returns the packed values as (C,N), the layout the fast per-pixel code works in.
``interpolate_uv(vt, ft, frags)`` does the same for texture coordinates indexed by their own UV faces (FLAME's
``vt``/``ft``: a seam vertex has several UVs, so UV faces differ from position faces).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from flamefit.render._backend import check_faces, check_float, check_frags_faces, numba_for
from flamefit.render.rasterize import Fragments


def interpolate_t(attr: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """Packed, structure-of-arrays result (C,N) (the fastest form to keep computing on).

    ``faces`` (F,3) index the rows of ``attr`` (ValueError unless in [0, V)) and must be as many as were
    rasterized (triangle ids index them). NaN/inf attributes interpolate to NaN/inf (no check)."""
    check_float(attr, "attribute")
    if attr.dim() not in (2, 3) or attr.shape[-1] < 1:
        raise ValueError(f"attribute must be (B,V,C) or (V,C) with C >= 1, got {tuple(attr.shape)}")
    faces = check_faces(faces, attr.shape[-2], of="the attribute's rows (V)").to(device=frags.pix.device)
    check_frags_faces(frags, faces)
    return _interpolate_t(attr, faces, frags)


def _interpolate_t(attr: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """:func:`interpolate_t` for checked faces (int64 in [0, V), as many as rasterized, on the frags' device)."""
    vidx = faces.t().index_select(1, frags.pix_tri)  # (3,N)
    if attr.dim() == 3 and attr.shape[0] == 1:
        attr = attr[0]
    if attr.dim() == 3:
        if attr.shape[0] != frags.batch:
            raise ValueError(f"attribute batch {attr.shape[0]} does not match the rasterized batch {frags.batch}")
        vidx = vidx + frags.pix_batch * attr.shape[1]
        attr = attr.reshape(-1, attr.shape[-1])
    return Interpolate.apply(attr, vidx, frags.pix_bary_t.to(attr.dtype))


def interpolate(attr: torch.Tensor, faces: torch.Tensor, frags: Fragments, *, packed: bool = False
                ) -> torch.Tensor:
    """Barycentric interpolation of per-vertex ``attr`` (B,V,C) or (V,C) -> (B,H,W,C) (or packed (N,C))."""
    out_t = interpolate_t(attr, faces, frags)
    return out_t.t() if packed else frags.unpack_t(out_t)


def interpolate_uv(vt: torch.Tensor, ft: torch.Tensor, frags: Fragments, *, packed: bool = False
                   ) -> torch.Tensor:
    """UV image from a UV layout: ``vt`` (T,2) or (B,T,2), ``ft`` (F,3) with the same face order as the
    rasterized faces -> (B,H,W,2) (or packed (N,2)); zeros on background."""
    return interpolate(vt, ft, frags, packed=packed)


# ------------------------------------------------------------------------------------------ autograd Functions


class Interpolate(torch.autograd.Function):
    """out (C,N) = sum_k bary[k] * attr[vidx[k]] for attr (M,C) (vertex-major), vidx (3,N), bary (3,N)."""

    @staticmethod
    def forward(ctx, attr, vidx, bary):
        N = vidx.shape[1]
        M, C = attr.shape
        ctx.numba = numba_for(attr)
        if ctx.numba:
            from flamefit.render import _pixel_numba as pn

            attr = attr.contiguous()
            bary = bary.contiguous()
            out = attr.new_empty(C, N)
            pn.interp_forward(attr.numpy(), vidx.numpy(), bary.numpy(), out.numpy())
            ctx.save_for_backward(attr, vidx, bary)
            return out
        vals = attr.t().index_select(1, vidx.reshape(-1)).view(C, 3, N)
        out = vals[:, 0] * bary[0]
        out += vals[:, 1] * bary[1]
        out += vals[:, 2] * bary[2]
        ctx.save_for_backward(vals, vidx, bary)
        ctx.num_rows = M
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        g_out = g_out.contiguous()
        want_attr, want_bary = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        if ctx.numba:
            from flamefit.render import _pixel_numba as pn

            attr, vidx, bary = ctx.saved_tensors
            g_attr = torch.zeros_like(attr)
            g_bary = torch.empty_like(bary)
            pn.interp_backward(attr.numpy(), vidx.numpy(), bary.numpy(), g_out.numpy(), want_attr, want_bary,
                               g_attr.numpy(), g_bary.numpy())
            return (g_attr if want_attr else None), None, (g_bary if want_bary else None)
        vals, vidx, bary = ctx.saved_tensors
        g_attr = g_bary = None
        C = g_out.shape[0]
        if want_attr:
            g_vals = g_out.unsqueeze(1) * bary  # (C,3,N)
            g_attr = g_out.new_zeros(C, ctx.num_rows).index_add_(1, vidx.reshape(-1), g_vals.view(C, -1)).t()
        if want_bary:
            g_bary = (vals * g_out.unsqueeze(1)).sum(0)  # reduction over the outer axis: contiguous
        return g_attr, None, g_bary
