"""Per-pixel hot paths as torch autograd Functions with hand-written backward passes.

Plain torch (so they run on any device). Written by hand because autograd's generic graph for these few lines
spends most of its time in slice/stack backward copies, zero fills and reductions over tiny axes, not in
arithmetic. Layout: per-pixel quantities are "structure of arrays", (K, N) with N = covered pixels, so every
elementwise op runs on contiguous rows and no reduction runs over a size-3 axis. Each Function does one gather
in the forward and one scatter-add in the backward. First-order gradients only (checked against finite
differences in tests/render).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.autograd.function import once_differentiable

# Use the numba kernels of _pixel_numba for CPU tensors (tests switch this off to check the torch path).
NUMBA_KERNELS = True


def _numba_for(t: torch.Tensor) -> bool:
    if not NUMBA_KERNELS or t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
        return False
    from flamefit.render.rasterize import _numba_available

    return _numba_available()


# the SH constants of shade.py (defined here so that shade.py can import this module)
SH_CONSTANTS = (
    1.0 / math.sqrt(4 * math.pi),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * (3 / 2) * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * (1 / 2) * math.sqrt(5 / (4 * math.pi)),
)


def corner_index(faces: torch.Tensor, batch: int, num_verts: int) -> torch.Tensor:
    """(F,3) faces -> (3, B*F) flat vertex index (into B*V) of corner k of every face of every image."""
    idx = faces.t().unsqueeze(1) + (torch.arange(batch, device=faces.device) * num_verts).view(1, -1, 1)
    return idx.reshape(3, batch * faces.shape[0])


def _gather_corners(verts: torch.Tensor, cidx: torch.Tensor) -> torch.Tensor:
    """verts (B,V,3), cidx (3,M) -> (3 coords, 3 corners, M) contiguous."""
    vt = verts.reshape(-1, 3).t()  # (3, B*V) strided view; index_select copes
    return vt.index_select(1, cidx.reshape(-1)).view(3, 3, cidx.shape[1])


def _scatter_corners(g: torch.Tensor, cidx: torch.Tensor, shape) -> torch.Tensor:
    """Adjoint of :func:`_gather_corners`: g (3,3,M) -> (B,V,3)."""
    B, V, _ = shape
    out = g.new_zeros(3, B * V).index_add_(1, cidx.reshape(-1), g.reshape(3, -1))
    return out.t().reshape(B, V, 3)


class RasterBary(torch.autograd.Function):
    """Barycentrics and depth of covered pixels, differentiable w.r.t. the screen-space vertices.

    Per face (M = B*F): b_i(p) = A_i (px - x0) + B_i (py - y0) + [i == 0], with A = (y1-y2, y2-y0, y0-y1)/area,
    B = (x2-x1, x0-x2, x1-x0)/area, so relative to corner 0 and accurate in float32; w_i = 1/z_i (perspective:
    bary = b w / sum(b w), depth = 1 / sum(b w)) or z_i (linear: bary = b, depth = sum(b z)).
    Inputs: verts (B,V,3), cidx (3,M) corner vertex indices, gidx (N,) face (column) of each pixel, px, py (N,)
    int64 pixel column and row. Returns bary (3,N), depth (N,).
    """

    @staticmethod
    def forward(ctx, verts, cidx, gidx, px, py, perspective: bool, faces=None):
        ctx.perspective = perspective
        ctx.shape = verts.shape
        if faces is not None and _numba_for(verts):
            from flamefit.render import _pixel_numba as pn

            verts_c = verts.detach().contiguous()
            M = cidx.shape[1]
            coef = verts.new_empty(M, 11)
            inv_area = verts.new_empty(M)
            pn.face_coefs(verts_c.numpy(), faces.numpy(), perspective, coef.numpy(), inv_area.numpy())
            N = gidx.shape[0]
            bary = coef.new_empty(3, N)
            depth = coef.new_empty(N)
            pn.bary_forward(coef.numpy(), gidx.numpy(), px.numpy(), py.numpy(), perspective, bary.numpy(),
                            depth.numpy())
            ctx.save_for_backward(verts_c, faces, coef, inv_area, gidx, px, py, bary, depth)
            ctx.numba = True
            return bary, depth
        ctx.numba = False
        corners = _gather_corners(verts, cidx)
        X, Y, Z = corners[0], corners[1], corners[2]  # (3,M) each: rows = corners
        a = torch.stack([Y[1] - Y[2], Y[2] - Y[0], Y[0] - Y[1]])  # d area / d x_i
        bb = torch.stack([X[2] - X[1], X[0] - X[2], X[1] - X[0]])  # d area / d y_i
        area = (X[1] - X[0]) * (Y[2] - Y[0]) - (Y[1] - Y[0]) * (X[2] - X[0])
        # degenerate faces never cover pixels; keep their (unused) coefficients finite
        ia = 1.0 / torch.where(area == 0, torch.ones_like(area), area)
        # face-major storage (M,11): the numba kernels gather one cache line per pixel; torch uses the (11,M) view
        coef = corners.new_empty(corners.shape[2], 11).t()
        torch.mul(a, ia, out=coef[0:3])
        torch.mul(bb, ia, out=coef[3:6])
        coef[6] = X[0]
        coef[7] = Y[0]
        if perspective:
            torch.reciprocal(Z, out=coef[8:11])
        else:
            coef[8:11] = Z
        bary, depth = _bary_pixels_torch(coef, gidx, px, py, perspective)
        ctx.save_for_backward(coef, gidx, px, py, bary, depth, cidx, a, bb, ia)
        return bary, depth

    @staticmethod
    @once_differentiable
    def backward(ctx, g_bary, g_depth):
        if ctx.numba:
            from flamefit.render import _pixel_numba as pn

            verts, faces, coef, inv_area, gidx, px, py, bary, depth = ctx.saved_tensors
            g_bary = torch.zeros_like(bary) if g_bary is None else g_bary.contiguous()
            g_depth = torch.zeros_like(depth) if g_depth is None else g_depth.contiguous()
            gcoef = torch.zeros_like(coef)
            pn.bary_backward(coef.numpy(), gidx.numpy(), px.numpy(), py.numpy(), ctx.perspective, g_bary.numpy(),
                             g_depth.numpy(), gcoef.numpy())
            g_verts = torch.zeros_like(verts)
            pn.face_coefs_backward(verts.numpy(), faces.numpy(), ctx.perspective, coef.numpy(), inv_area.numpy(),
                                   gcoef.numpy(), g_verts.numpy())
            return g_verts, None, None, None, None, None, None
        coef, gidx, px, py, bary, depth, cidx, a, bb, ia = ctx.saved_tensors
        g_bary = torch.zeros_like(bary) if g_bary is None else g_bary.contiguous()
        g_depth = torch.zeros_like(depth) if g_depth is None else g_depth.contiguous()
        gcoef = _bary_pixels_backward_torch(coef, gidx, px, py, ctx.perspective, bary, depth, g_bary, g_depth)
        # per face -> corners: coef[0:3] = a * ia, coef[3:6] = bb * ia, ia = 1 / area
        gA, gB = gcoef[0:3], gcoef[3:6]
        t = gA * a + gB * bb
        g_area = -(t[0] + t[1] + t[2]) * ia * ia
        gX = a * g_area  # d area / d x_i = a_i
        gY = bb * g_area  # d area / d y_i = bb_i
        gAi = gA * ia
        gBi = gB * ia
        # a = (y1-y2, y2-y0, y0-y1), bb = (x2-x1, x0-x2, x1-x0)
        gY[0] += gAi[2] - gAi[1]
        gY[1] += gAi[0] - gAi[2]
        gY[2] += gAi[1] - gAi[0]
        gX[0] += gBi[1] - gBi[2]
        gX[1] += gBi[2] - gBi[0]
        gX[2] += gBi[0] - gBi[1]
        gX[0] += gcoef[6]
        gY[0] += gcoef[7]
        wf = coef[8:11]
        gZ = -gcoef[8:11] * wf * wf if ctx.perspective else gcoef[8:11]
        g_verts = _scatter_corners(torch.stack([gX, gY, gZ]), cidx, ctx.shape)
        return g_verts, None, None, None, None, None, None


def _bary_pixels_torch(coef, gidx, px, py, perspective):
    c = coef.index_select(1, gidx)
    dx = (px.to(c.dtype) + 0.5) - c[6]
    dy = (py.to(c.dtype) + 0.5) - c[7]
    b = c[0:3] * dx
    b += c[3:6] * dy
    b[0] += 1.0
    q = b * c[8:11]
    if perspective:
        depth = 1.0 / (q[0] + q[1] + q[2])
        return q * depth, depth
    return b, q[0] + q[1] + q[2]


def _bary_pixels_backward_torch(coef, gidx, px, py, perspective, bary, depth, g_bary, g_depth):
    c = coef.index_select(1, gidx)
    dx = (px.to(c.dtype) + 0.5) - c[6]
    dy = (py.to(c.dtype) + 0.5) - c[7]
    b = c[0:3] * dx
    b += c[3:6] * dy
    b[0] += 1.0
    w = c[8:11]
    gc = torch.empty_like(c)
    if perspective:
        gb = g_bary * bary
        dot = gb[0] + gb[1] + gb[2] + g_depth * depth
        g_q = (g_bary - dot) * depth
        torch.mul(g_q, b, out=gc[8:11])
        g_b = g_q * w
    else:
        torch.mul(b, g_depth, out=gc[8:11])
        g_b = g_bary + w * g_depth
    torch.mul(g_b, dx, out=gc[0:3])
    torch.mul(g_b, dy, out=gc[3:6])
    t = g_b * c[0:3]
    torch.neg(t[0] + t[1] + t[2], out=gc[6])
    t = g_b * c[3:6]
    torch.neg(t[0] + t[1] + t[2], out=gc[7])
    return c.new_zeros(11, coef.shape[1]).index_add_(1, gidx, gc)


class VertexNormals(torch.autograd.Function):
    """Area-weighted unit vertex normals, returned vertex-major as (B*V, 3).

    Inputs: verts (B,V,3), cidx (3, B*F) corner vertex indices. Zero for vertices without faces.
    """

    @staticmethod
    def forward(ctx, verts, cidx, faces=None):
        ctx.numba = faces is not None and _numba_for(verts)
        if ctx.numba:
            from flamefit.render import _pixel_numba as pn

            verts_c = verts.detach().contiguous()
            n = torch.empty_like(verts_c)
            inv = verts_c.new_empty(verts_c.shape[:2])
            pn.vertex_normals_forward(verts_c.numpy(), faces.numpy(), n.numpy(), inv.numpy())
            ctx.save_for_backward(verts_c, faces, n, inv)
            return n.view(-1, 3)
        B, V, _ = verts.shape
        P = _gather_corners(verts, cidx)  # (3 coords, 3 corners, M)
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
        return _scatter_corners(g_corners, cidx, ctx.shape), None, None


class Interpolate(torch.autograd.Function):
    """out (C,N) = sum_k bary[k] * attr[vidx[k]] for attr (M,C) (vertex-major), vidx (3,N), bary (3,N)."""

    @staticmethod
    def forward(ctx, attr, vidx, bary):
        N = vidx.shape[1]
        M, C = attr.shape
        ctx.numba = _numba_for(attr)
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
        ctx.numba = _numba_for(normals) and sh.dtype == normals.dtype
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


def _scatter_cols(values: torch.Tensor, pix: torch.Tensor, out: torch.Tensor) -> None:
    """out[pix[n], :] = values[:, n] (values (C,N), out (P,C), in place)."""
    if _numba_for(out) and values.dtype == out.dtype:
        from flamefit.render import _pixel_numba as pn

        pn.scatter_cols(values.contiguous().numpy(), pix.numpy(), out.numpy())
    else:
        out.index_put_((pix,), values.t())


def _gather_cols(img: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """(P,C) image rows at pix -> (C,N)."""
    if _numba_for(img):
        from flamefit.render import _pixel_numba as pn

        out = img.new_empty(img.shape[1], pix.shape[0])
        pn.gather_cols(img.contiguous().numpy(), pix.numpy(), out.numpy())
        return out
    return img.index_select(0, pix).t()


class Unpack(torch.autograd.Function):
    """Packed values (C,N) at flat pixels ``pix`` (N,) over ``base`` (P,C) -> image rows (P,C)."""

    @staticmethod
    def forward(ctx, values, pix, base):
        out = base.clone(memory_format=torch.contiguous_format)
        _scatter_cols(values, pix, out)
        ctx.save_for_backward(pix)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        (pix,) = ctx.saved_tensors
        g_values = g_base = None
        g_out = g_out.contiguous()
        if ctx.needs_input_grad[0]:
            g_values = _gather_cols(g_out, pix)
        if ctx.needs_input_grad[2]:
            g_base = g_out.clone()
            g_base[pix] = 0
        return g_values, None, g_base


def _crossings(verts, va, vb, horizontal, u_front, s_front, dirn):
    """Crossing position t (K,) of edges (va, vb) from the front pixel centre, and what its gradient needs."""
    pa = verts.index_select(0, va)
    pb = verts.index_select(0, vb)
    h = horizontal
    ua = torch.where(h, pa[:, 0], pa[:, 1])
    sa = torch.where(h, pa[:, 1], pa[:, 0])
    ub = torch.where(h, pb[:, 0], pb[:, 1])
    sb = torch.where(h, pb[:, 1], pb[:, 0])
    den = sb - sa
    den = torch.where(den == 0, torch.full_like(den, 1e-12), den)  # pairs are selected with den != 0
    r = (s_front - sa) / den
    t = (ua + r * (ub - ua) - u_front) * dirn
    inside = (t >= 0) & (t <= 1)
    return t.clamp(0.0, 1.0), inside, r, den, ua, ub


def _crossing_grad(g_t, h, dirn, r, den, ua, ub, va, vb, num_verts):
    """d loss / d verts (num_verts, 3) from d loss / d t (K,); see :func:`_crossings`."""
    g_t = g_t * dirn
    # t = (ua + r (ub - ua) - u_front) dirn, r = (s_front - sa) / (sb - sa)
    g_ua = g_t * (1.0 - r)
    g_ub = g_t * r
    k = g_t * (ub - ua) / den
    g_sa = k * (r - 1.0)
    g_sb = -k * r
    zero = torch.zeros_like(g_t)
    g_pa = torch.stack([torch.where(h, g_ua, g_sa), torch.where(h, g_sa, g_ua), zero], 1)
    g_pb = torch.stack([torch.where(h, g_ub, g_sb), torch.where(h, g_sb, g_ub), zero], 1)
    return g_pa.new_zeros(num_verts, 3).index_add_(0, va, g_pa).index_add_(0, vb, g_pb)


class Composite(torch.autograd.Function):
    """Packed colours over a background, plus coverage, anti-aliased at silhouettes, in one pass.

    color (C,N) at flat pixels ``pix`` (N,, sorted); ``base`` (P,C) background rows or None (zeros);
    ``verts`` (B*V,3); pairs from ``antialias.silhouette_pairs`` as front, back, va, vb, horizontal, u_front,
    s_front, dirn (see ``EdgeBlend``). Returns rgb (P,C) and alpha (P,1). Equivalent to ``Unpack`` of
    [color; 1] followed by ``EdgeBlend``, without the full-image intermediates.
    """

    @staticmethod
    def forward(ctx, color, pix, base, verts, front, back, va, vb, horizontal, u_front, s_front, dirn,
                num_pixels: int):
        C = color.shape[0]
        dtype = color.dtype
        rgb = color.new_zeros(num_pixels, C) if base is None else base.to(dtype).clone(
            memory_format=torch.contiguous_format)
        _scatter_cols(color, pix, rgb)
        alpha = color.new_zeros(num_pixels, 1)
        alpha[pix] = 1.0
        K = front.shape[0]
        if K:
            t, inside, r, den, ua, ub = _crossings(verts, va, vb, horizontal, u_front, s_front, dirn)
            w_back = (t - 0.5).clamp_min(0.0).to(dtype).unsqueeze(1)
            w_front = (0.5 - t).clamp_min(0.0).to(dtype).unsqueeze(1)
            diff = torch.cat([rgb.index_select(0, front) - rgb.index_select(0, back),
                              alpha.index_select(0, front) - alpha.index_select(0, back)], 1)
            db, df = diff * w_back, diff * -w_front
            rgb.index_add_(0, back, db[:, :C]).index_add_(0, front, df[:, :C])
            alpha.index_add_(0, back, db[:, C:]).index_add_(0, front, df[:, C:])
            ctx.save_for_backward(pix, front, back, va, vb, horizontal, dirn, r, den, ua, ub, inside, t, w_back,
                                  w_front, diff)
        else:
            ctx.save_for_backward(pix)
        ctx.K = K
        ctx.num_verts = verts.shape[0]
        ctx.C = C
        return rgb, alpha

    @staticmethod
    @once_differentiable
    def backward(ctx, g_rgb, g_alpha):
        C = ctx.C
        pix = ctx.saved_tensors[0]
        if g_rgb is None:
            g_rgb = torch.zeros(1, C, dtype=g_alpha.dtype, device=g_alpha.device).expand(g_alpha.shape[0], C)
        g_rgb = g_rgb.contiguous()
        g_color = g_base = g_verts = None
        want_color, want_base, want_verts = ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        if want_color:
            g_color = _gather_cols(g_rgb, pix)
        if want_base:
            g_base = g_rgb.clone()
        if ctx.K:
            (_, front, back, va, vb, h, dirn, r, den, ua, ub, inside, t, w_back, w_front,
             diff) = ctx.saved_tensors
            if g_alpha is None:
                g_alpha = torch.zeros_like(g_rgb[:, :1])
            g_alpha = g_alpha.contiguous()
            gb = torch.cat([g_rgb.index_select(0, back), g_alpha.index_select(0, back)], 1)
            gf = torch.cat([g_rgb.index_select(0, front), g_alpha.index_select(0, front)], 1)
            g_cf = (gb * w_back - gf * w_front)[:, :C]  # d loss / d (pre-blend colour at front); -that at back
            if want_color:
                # corrections at the pair pixels that are covered (packed position via the sorted pix)
                for rows, sign in ((front, 1.0), (back, -1.0)):
                    pos = torch.searchsorted(pix, rows).clamp(max=max(pix.shape[0] - 1, 0))
                    hit = pix[pos] == rows
                    g_color.index_add_(1, pos[hit], (sign * g_cf[hit]).t())
            if want_base:
                g_base.index_add_(0, front, g_cf).index_add_(0, back, -g_cf)
            if want_verts:
                sel = torch.where((t > 0.5).unsqueeze(1), gb, gf)
                g_t = (sel * diff).sum(1).to(r.dtype) * inside.to(r.dtype)
                g_verts = _crossing_grad(g_t, h, dirn, r, den, ua, ub, va, vb, ctx.num_verts)
        if want_base:
            g_base[pix] = 0
        return (g_color, None, g_base, g_verts) + (None,) * 9


class EdgeBlend(torch.autograd.Function):
    """Silhouette blending of ``antialias`` (see antialias.py) on flat image rows ``color`` (P,C).

    ``front``/``back`` (K,) pixel rows of each pair, ``va``/``vb`` (K,) rows of ``verts`` (B*V,3) of the
    crossing edge, ``horizontal`` (K,) bool, ``u_front``/``s_front`` (K,) the front pixel centre along / across
    the pair's axis, ``dirn`` (K,) +1 or -1 from front towards back along the axis.
    """

    @staticmethod
    def forward(ctx, color, verts, front, back, va, vb, horizontal, u_front, s_front, dirn):
        t, inside, r, den, ua, ub = _crossings(verts, va, vb, horizontal, u_front, s_front, dirn)
        w_back = (t - 0.5).clamp_min(0.0).to(color.dtype).unsqueeze(1)
        w_front = (0.5 - t).clamp_min(0.0).to(color.dtype).unsqueeze(1)
        diff = color.index_select(0, front) - color.index_select(0, back)
        out = color.clone()
        out.index_add_(0, back, diff * w_back)
        out.index_add_(0, front, diff * -w_front)
        ctx.save_for_backward(front, back, va, vb, horizontal, dirn, r, den, ua, ub, inside, t, w_back, w_front,
                              diff)
        ctx.num_verts = verts.shape[0]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        front, back, va, vb, h, dirn, r, den, ua, ub, inside, t, w_back, w_front, diff = ctx.saved_tensors
        g_out = g_out.contiguous()
        gb = g_out.index_select(0, back)
        gf = g_out.index_select(0, front)
        g_color = g_verts = None
        if ctx.needs_input_grad[0]:
            g_cf = gb * w_back - gf * w_front
            g_color = g_out.clone()
            g_color.index_add_(0, front, g_cf)
            g_color.index_add_(0, back, -g_cf)
        if ctx.needs_input_grad[1]:
            sel = torch.where((t > 0.5).unsqueeze(1), gb, gf)
            g_t = (sel * diff).sum(1).to(r.dtype) * inside.to(r.dtype)
            g_verts = _crossing_grad(g_t, h, dirn, r, den, ua, ub, va, vb, ctx.num_verts)
        return g_color, g_verts, None, None, None, None, None, None, None, None


class TextureSample(torch.autograd.Function):
    """Bilinear lookup (numba CPU kernels; see texture.py for the convention): tex (Bt,Ht,Wt,C), uv (2,N),
    bidx (N,) -> (C,N)."""

    @staticmethod
    def forward(ctx, tex, uv, bidx, wrap: bool):
        from flamefit.render import _pixel_numba as pn

        tex = tex.contiguous()
        uv = uv.contiguous()
        out = tex.new_empty(tex.shape[3], uv.shape[1])
        pn.texture_forward(tex.detach().numpy(), uv.detach().numpy(), bidx.numpy(), wrap, out.numpy())
        ctx.save_for_backward(tex, uv, bidx)
        ctx.wrap = wrap
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        from flamefit.render import _pixel_numba as pn

        tex, uv, bidx = ctx.saved_tensors
        want_tex, want_uv = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g_tex = torch.zeros_like(tex) if want_tex else tex.new_zeros(1, 1, 1, 1)
        g_uv = torch.empty_like(uv) if want_uv else uv.new_empty(2, 1)
        pn.texture_backward(tex.detach().numpy(), uv.detach().numpy(), bidx.numpy(), ctx.wrap,
                            g_out.contiguous().numpy(), want_tex, want_uv, g_tex.numpy(), g_uv.numpy())
        return (g_tex if want_tex else None), (g_uv if want_uv else None), None, None
