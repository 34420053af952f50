"""Shading: vertex normals and 9-coefficient spherical-harmonics (SH) lighting.

``rgb = albedo * sh_shading(normals, sh)``. The SH basis is the real, order-2 basis in the form DECA and the
FLAME fitters use (Ramamoorthi & Hanrahan's irradiance approximation: the Lambertian convolution factors are
folded into the constants), in this order for a unit normal ``n = (x, y, z)``::

    c0 * 1, c1 * x, c1 * y, c1 * z, c2 * xy, c2 * xz, c2 * yz, c3 * (x^2 - y^2), c4 * (3 z^2 - 1)

    c0 = 1/sqrt(4 pi), c1 = (2 pi / 3) sqrt(3 / (4 pi)), c2 = (pi / 4) 3 sqrt(5 / (12 pi)),
    c3 = (pi / 4) (3 / 2) sqrt(5 / (12 pi)), c4 = (pi / 4) (1 / 2) sqrt(5 / (4 pi))

so lighting coefficients estimated by DECA-style code can be reused as is. The frame of the normals is the
caller's choice (``render_mesh`` uses the OpenCV camera frame: x right, y down, z forward, so a surface facing
the camera has z < 0). ``sh`` is (B,9) (one set shared by the colour channels) or (B,9,C) (one per channel).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from flamefit.render._backend import (
    SH_CONSTANTS,
    check_faces,
    check_float,
    corner_index,
    gather_corners,
    numba_for,
    scatter_corners,
)


def _face_corners(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B,V,3), (F,3) -> (B,F,3,3) corner positions (one index_select: faster than advanced indexing)."""
    B, V, C = verts.shape
    F = faces.shape[0]
    idx = faces.reshape(1, -1) + (torch.arange(B, device=verts.device) * V).unsqueeze(1)
    return verts.reshape(B * V, C).index_select(0, idx.reshape(-1)).view(B, F, 3, C)


def face_normals(verts: torch.Tensor, faces: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """(B,V,3), (F,3) -> (B,F,3) face normals (right-hand rule on the face's vertex order)."""
    faces = faces.to(device=verts.device, dtype=torch.int64)
    corners = _face_corners(verts, faces)
    v0, v1, v2 = corners.unbind(2)
    n = torch.linalg.cross(v1 - v0, v2 - v0)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-20) if normalize else n


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (B,V,3), unit length (zero for unused vertices; NaN next to a NaN/inf
    vertex). ``faces`` (F,3) in [0, V), else ValueError."""
    check_float(verts, "verts")
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (B,V,3), got {tuple(verts.shape)}")
    B, V, _ = verts.shape
    return _vertex_normals(verts, check_faces(faces, V, of="verts").to(device=verts.device))


def _vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """:func:`vertex_normals` for checked inputs (faces int64 in [0, V), on verts' device)."""
    B, V, _ = verts.shape
    cidx = None if numba_for(verts) else corner_index(faces, B, V)  # the numba kernels index faces directly
    return VertexNormals.apply(verts, cidx, faces).view(B, V, 3)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals (...,3) -> SH basis values (...,9) with the constants above."""
    x, y, z = normals.unbind(-1)
    c0, c1, c2, c3, c4 = SH_CONSTANTS
    return torch.stack([
        torch.full_like(x, c0), c1 * x, c1 * y, c1 * z,
        c2 * x * y, c2 * x * z, c2 * y * z, c3 * (x * x - y * y), c4 * (3.0 * z * z - 1.0),
    ], dim=-1)


def sh_shading(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Irradiance from SH lighting: normals (B,H,W,3) (or (B,N,3)), sh (B,9) or (B,9,C) -> (B,H,W,C)."""
    B = normals.shape[0]
    basis = sh_basis(normals)  # (B,...,9)
    sh = _as_sh9c(sh)
    flat = basis.reshape(B, -1, 9)
    out = torch.bmm(flat, sh.expand(B, 9, sh.shape[-1]))
    return out.view(normals.shape[:-1] + (sh.shape[-1],))


def _as_sh9c(sh: torch.Tensor) -> torch.Tensor:
    if sh.dim() == 2:
        sh = sh.unsqueeze(-1).expand(sh.shape[0], 9, 3)
    if sh.dim() != 3 or sh.shape[-2] != 9:
        raise ValueError(f"sh must be (B,9) or (B,9,C), got {tuple(sh.shape)}")
    return sh


def sh_shading_packed(normals: torch.Tensor, sh: torch.Tensor, counts: list[int],
                      batch_index: torch.Tensor | None = None) -> torch.Tensor:
    """Packed, structure-of-arrays variant: unit normals (3,N) whose pixels are grouped by image with
    ``counts[b]`` pixels for image b (``frags.counts``), sh (B,9) or (B,9,C) -> (C,N). ``batch_index`` (N,)
    (``frags.pix_batch``) is derived from ``counts`` when not given."""
    check_float(normals, "normals")
    if normals.dim() != 2 or normals.shape[0] != 3:
        raise ValueError(f"normals must be (3,N), got {tuple(normals.shape)}")
    sh = _as_sh9c(sh).to(normals.dtype)
    counts = [int(c) for c in counts]
    if not counts or min(counts) < 0 or sum(counts) != normals.shape[1]:
        raise ValueError(f"counts must be one non-negative pixel count per image summing to N = "
                         f"{normals.shape[1]}, got {len(counts)} counts summing to {sum(counts)}")
    if sh.shape[0] > 1 and len(counts) != sh.shape[0]:
        raise ValueError(f"sh has {sh.shape[0]} images but the pixels come from {len(counts)}")
    if sh.shape[-1] < 1:
        raise ValueError(f"sh must have at least one colour channel, got {tuple(sh.shape)}")
    if batch_index is None:
        batch_index = torch.repeat_interleave(torch.arange(len(counts), device=normals.device),
                                              torch.tensor(counts, device=normals.device))
    return SHShading.apply(normals.contiguous(), sh, counts, batch_index)


# ------------------------------------------------------------------------------------------ autograd Functions


class VertexNormals(torch.autograd.Function):
    """Area-weighted unit vertex normals, returned vertex-major as (B*V, 3).

    Inputs: verts (B,V,3), cidx (3, B*F) corner vertex indices. Zero for vertices without faces.
    """

    @staticmethod
    def forward(ctx, verts, cidx, faces=None):
        ctx.numba = faces is not None and numba_for(verts)
        if ctx.numba:
            from flamefit.render import _pixel_numba as pn

            verts_c = verts.detach().contiguous()
            n = torch.empty_like(verts_c)
            inv = verts_c.new_empty(verts_c.shape[:2])
            pn.vertex_normals_forward(verts_c.numpy(), faces.numpy(), n.numpy(), inv.numpy())
            ctx.save_for_backward(verts_c, faces, n, inv)
            return n.view(-1, 3)
        B, V, _ = verts.shape
        P = gather_corners(verts, cidx)  # (3 coords, 3 corners, M)
        e1 = P[:, 1] - P[:, 0]
        e2 = P[:, 2] - P[:, 0]
        fn = torch.stack([e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2],
                          e1[0] * e2[1] - e1[1] * e2[0]])  # (3,M), |fn| = 2 area
        flat = cidx.reshape(-1)
        vn = fn.new_zeros(3, B * V).index_add_(1, flat, fn.repeat(1, 3))
        sq = vn * vn
        inv = torch.rsqrt((sq[0] + sq[1] + sq[2]).clamp_min(1e-40))
        n = vn * inv
        ctx.save_for_backward(e1, e2, n, inv, cidx)
        ctx.shape = verts.shape
        return n.t().contiguous()  # vertex-major (B*V,3), like any other per-vertex attribute

    @staticmethod
    @once_differentiable
    def backward(ctx, g_n):
        if ctx.numba:
            from flamefit.render import _pixel_numba as pn

            verts, faces, n, inv = ctx.saved_tensors
            g_verts = torch.zeros_like(verts)
            pn.vertex_normals_backward(verts.numpy(), faces.numpy(), n.numpy(), inv.numpy(),
                                       g_n.contiguous().view_as(n).numpy(), g_verts.numpy())
            return g_verts, None, None
        e1, e2, n, inv, cidx = ctx.saved_tensors
        g_n = g_n.t().contiguous()
        t = g_n * n
        g_vn = (g_n - n * (t[0] + t[1] + t[2])) * inv
        M = e1.shape[1]
        G = g_vn.index_select(1, cidx.reshape(-1)).view(3, 3, M)
        g_fn = G[:, 0] + G[:, 1] + G[:, 2]  # sum over the 3 corners
        # fn = e1 x e2: g_e1 = e2 x g_fn, g_e2 = g_fn x e1
        g_e1 = torch.stack([e2[1] * g_fn[2] - e2[2] * g_fn[1], e2[2] * g_fn[0] - e2[0] * g_fn[2],
                            e2[0] * g_fn[1] - e2[1] * g_fn[0]])
        g_e2 = torch.stack([g_fn[1] * e1[2] - g_fn[2] * e1[1], g_fn[2] * e1[0] - g_fn[0] * e1[2],
                            g_fn[0] * e1[1] - g_fn[1] * e1[0]])
        g_corners = torch.stack([-(g_e1 + g_e2), g_e1, g_e2], 1)  # (3 coords, 3 corners, M)
        return scatter_corners(g_corners, cidx, ctx.shape), None, None


def sh_basis_t(n: torch.Tensor) -> torch.Tensor:
    """Unit normals (3,N) -> SH basis (9,N) (constants of shade.py)."""
    c0, c1, c2, c3, c4 = SH_CONSTANTS
    x, y, z = n[0], n[1], n[2]
    out = n.new_empty(9, n.shape[1])
    out[0] = c0
    torch.mul(n, c1, out=out[1:4])
    torch.mul(x * y, c2, out=out[4])
    torch.mul(x * z, c2, out=out[5])
    torch.mul(y * z, c2, out=out[6])
    torch.mul(x * x - y * y, c3, out=out[7])
    torch.mul(3.0 * z * z - 1.0, c4, out=out[8])
    return out


class SHShading(torch.autograd.Function):
    """Irradiance (C,N) for unit normals (3,N) whose pixels are grouped by image (``counts`` pixels per image,
    ``bidx`` (N,) image of each pixel) with lighting ``sh`` (B,9,C) (B = 1: shared)."""

    @staticmethod
    def forward(ctx, normals, sh, counts: list[int], bidx):
        ctx.numba = numba_for(normals) and sh.dtype == normals.dtype
        ctx.counts = counts
        if ctx.numba:
            from flamefit.render import _pixel_numba as pn

            sh_c = sh.contiguous()
            out = normals.new_empty(sh.shape[2], normals.shape[1])
            starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            pn.sh_forward(normals.numpy(), sh_c.numpy(), starts, out.numpy())
            ctx.save_for_backward(normals, sh_c)
            ctx.starts = starts
            return out
        basis = sh_basis_t(normals)
        if sh.shape[0] == 1:
            out = sh[0].t() @ basis
        else:
            out = torch.cat([sh[b].t() @ part for b, part in enumerate(torch.split(basis, counts, dim=1))], 1)
        ctx.save_for_backward(normals, basis, sh)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        g_out = g_out.contiguous()
        if ctx.numba:
            from flamefit.render import _pixel_numba as pn

            normals, sh = ctx.saved_tensors
            g_normals = torch.empty_like(normals)
            g_sh = torch.zeros_like(sh)
            pn.sh_backward(normals.numpy(), sh.numpy(), ctx.starts, g_out.numpy(), g_normals.numpy(), g_sh.numpy())
            return g_normals, g_sh, None, None
        normals, basis, sh = ctx.saved_tensors
        g_normals = g_sh = g_basis = None
        if sh.shape[0] == 1:
            if ctx.needs_input_grad[0]:
                g_basis = sh[0] @ g_out
            if ctx.needs_input_grad[1]:
                g_sh = (basis @ g_out.t()).unsqueeze(0)
        else:
            g_parts = torch.split(g_out, ctx.counts, dim=1)
            if ctx.needs_input_grad[0]:
                g_basis = torch.cat([sh[b] @ gp for b, gp in enumerate(g_parts)], 1)
            if ctx.needs_input_grad[1]:
                b_parts = torch.split(basis, ctx.counts, dim=1)
                g_sh = torch.stack([bp @ gp.t() for bp, gp in zip(b_parts, g_parts, strict=True)], 0)
        if ctx.needs_input_grad[0]:
            _, c1, c2, c3, c4 = SH_CONSTANTS
            x, y, z = normals[0], normals[1], normals[2]
            g = g_basis
            g_normals = torch.empty_like(normals)
            g_normals[0] = c1 * g[1] + c2 * (y * g[4] + z * g[5]) + (2 * c3) * x * g[7]
            g_normals[1] = c1 * g[2] + c2 * (x * g[4] + z * g[6]) - (2 * c3) * y * g[7]
            g_normals[2] = c1 * g[3] + c2 * (x * g[5] + y * g[6]) + (6 * c4) * z * g[8]
        return g_normals, g_sh, None, None


def shade_albedo_packed(color: torch.Tensor, normals_raw: torch.Tensor, sh: torch.Tensor, counts: list[int],
                        batch_index: torch.Tensor) -> torch.Tensor:
    """``color * sh_shading_packed(normalize(normals_raw), sh, counts)`` for packed (C,N) colours and raw
    (unnormalised, interpolated) normals (3,N), as one autograd op (numba on CPU): the renderer's shading, without
    the per-pixel temporaries of the composed form. Inputs as checked by :func:`render_mesh`."""
    sh = _as_sh9c(sh).to(color.dtype)
    if (numba_for(color) and normals_raw.dtype == color.dtype and sh.shape[-1] in (1, color.shape[0])
            and (sh.shape[0] == 1 or sh.shape[0] == len(counts))):
        return ShadeAlbedo.apply(color, normals_raw, sh, counts)
    sq = normals_raw * normals_raw
    unit = normals_raw * torch.rsqrt((sq[0] + sq[1] + sq[2]).clamp_min(1e-24))
    return color * sh_shading_packed(unit, sh, counts, batch_index)


class ShadeAlbedo(torch.autograd.Function):
    """See :func:`shade_albedo_packed` (numba kernels ``shade_albedo_forward/backward``)."""

    @staticmethod
    def forward(ctx, color, raw, sh, counts: list[int]):
        from flamefit.render import _pixel_numba as pn

        color, raw, sh = color.detach().contiguous(), raw.detach().contiguous(), sh.detach().contiguous()
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        out = torch.empty_like(color)
        pn.shade_albedo_forward(color.numpy(), raw.numpy(), sh.numpy(), starts, out.numpy())
        ctx.save_for_backward(color, raw, sh)
        ctx.starts = starts
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        from flamefit.render import _pixel_numba as pn

        color, raw, sh = ctx.saved_tensors
        want_color, want_raw, want_sh = ctx.needs_input_grad[:3]
        g_color = torch.empty_like(color) if want_color else color.new_empty(1, 1)
        g_raw = torch.empty_like(raw) if want_raw else raw.new_empty(3, 1)
        g_sh = torch.zeros_like(sh)
        pn.shade_albedo_backward(color.numpy(), raw.numpy(), sh.numpy(), ctx.starts, g_out.contiguous().numpy(),
                                 want_color, want_raw, want_sh, g_color.numpy(), g_raw.numpy(), g_sh.numpy())
        return (g_color if want_color else None), (g_raw if want_raw else None), (g_sh if want_sh else None), None
