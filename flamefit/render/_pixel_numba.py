"""Numba CPU kernels for the per-pixel forward and backward passes of the render autograd Functions
(barycentrics, interpolation, SH shading, texture lookup, vertex normals).

Each kernel is one pass over the covered pixels, where the torch formulation needs a dozen passes
over (K,N) temporaries that do not fit in cache at 512x512. Same maths as the torch path (which runs on other
devices and without numba); tests check both against each other and against finite differences.
Serial loops: the backward passes scatter-add into per-face / per-vertex gradients.
"""

from __future__ import annotations

import numba
import numpy as np

from flamefit.render._backend import SH_CONSTANTS

_C0, _C1, _C2, _C3, _C4 = SH_CONSTANTS
_FM = {"contract", "reassoc"}  # let LLVM fuse multiply-adds; no assumption about NaN/inf


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def bary_forward(coef, gidx, px, py, perspective, bary, depth):
    """coef (M,11), gidx (N,), px/py (N,) int pixel column/row -> bary (3,N), depth (N,) (written)."""
    N = gidx.shape[0]
    for n in range(N):
        f = gidx[n]
        dx = px[n] + 0.5 - coef[f, 6]
        dy = py[n] + 0.5 - coef[f, 7]
        b0 = coef[f, 0] * dx + coef[f, 3] * dy + 1.0
        b1 = coef[f, 1] * dx + coef[f, 4] * dy
        b2 = coef[f, 2] * dx + coef[f, 5] * dy
        q0 = b0 * coef[f, 8]
        q1 = b1 * coef[f, 9]
        q2 = b2 * coef[f, 10]
        if perspective:
            d = 1.0 / (q0 + q1 + q2)
            bary[0, n] = q0 * d
            bary[1, n] = q1 * d
            bary[2, n] = q2 * d
            depth[n] = d
        else:
            bary[0, n] = b0
            bary[1, n] = b1
            bary[2, n] = b2
            depth[n] = q0 + q1 + q2


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def bary_backward(coef, gidx, px, py, perspective, g_bary, g_depth, g_coef):
    """Accumulates d loss / d coef into g_coef (M,11) (zeroed by the caller).

    Consecutive pixels (raster order) often share a face: sums stay in registers for the run and are written
    once, instead of a read-modify-write chain through memory per pixel."""
    N = gidx.shape[0]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = 0.0
    cur = -1
    for n in range(N + 1):
        f = gidx[n] if n < N else -2
        if f != cur:
            if cur >= 0:
                g_coef[cur, 0] += a0
                g_coef[cur, 1] += a1
                g_coef[cur, 2] += a2
                g_coef[cur, 3] += a3
                g_coef[cur, 4] += a4
                g_coef[cur, 5] += a5
                g_coef[cur, 6] += a6
                g_coef[cur, 7] += a7
                g_coef[cur, 8] += a8
                g_coef[cur, 9] += a9
                g_coef[cur, 10] += a10
                a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = 0.0
            cur = f
        if n == N:
            break
        dx = px[n] + 0.5 - coef[f, 6]
        dy = py[n] + 0.5 - coef[f, 7]
        b0 = coef[f, 0] * dx + coef[f, 3] * dy + 1.0
        b1 = coef[f, 1] * dx + coef[f, 4] * dy
        b2 = coef[f, 2] * dx + coef[f, 5] * dy
        w0 = coef[f, 8]
        w1 = coef[f, 9]
        w2 = coef[f, 10]
        gb0 = g_bary[0, n]
        gb1 = g_bary[1, n]
        gb2 = g_bary[2, n]
        gd = g_depth[n]
        if perspective:
            q0 = b0 * w0
            q1 = b1 * w1
            q2 = b2 * w2
            d = 1.0 / (q0 + q1 + q2)
            dot = (gb0 * q0 + gb1 * q1 + gb2 * q2) * d + gd * d
            gq0 = (gb0 - dot) * d
            gq1 = (gb1 - dot) * d
            gq2 = (gb2 - dot) * d
            a8 += gq0 * b0
            a9 += gq1 * b1
            a10 += gq2 * b2
            g0 = gq0 * w0
            g1 = gq1 * w1
            g2 = gq2 * w2
        else:
            a8 += gd * b0
            a9 += gd * b1
            a10 += gd * b2
            g0 = gb0 + gd * w0
            g1 = gb1 + gd * w1
            g2 = gb2 + gd * w2
        a0 += g0 * dx
        a1 += g1 * dx
        a2 += g2 * dx
        a3 += g0 * dy
        a4 += g1 * dy
        a5 += g2 * dy
        a6 -= g0 * coef[f, 0] + g1 * coef[f, 1] + g2 * coef[f, 2]
        a7 -= g0 * coef[f, 3] + g1 * coef[f, 4] + g2 * coef[f, 5]


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def interp_forward(attr, vidx, bary, out):
    """attr (M,C), vidx (3,N), bary (3,N) -> out (C,N) (written)."""
    C = attr.shape[1]
    N = vidx.shape[1]
    for n in range(N):
        i0 = vidx[0, n]
        i1 = vidx[1, n]
        i2 = vidx[2, n]
        w0 = bary[0, n]
        w1 = bary[1, n]
        w2 = bary[2, n]
        for c in range(C):
            out[c, n] = attr[i0, c] * w0 + attr[i1, c] * w1 + attr[i2, c] * w2


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def interp_backward(attr, vidx, bary, g_out, want_attr, want_bary, g_attr, g_bary):
    """Accumulates into g_attr (M,C) (zeroed by the caller) and writes g_bary (3,N)."""
    C = attr.shape[1]
    N = vidx.shape[1]
    for n in range(N):
        i0 = vidx[0, n]
        i1 = vidx[1, n]
        i2 = vidx[2, n]
        w0 = bary[0, n]
        w1 = bary[1, n]
        w2 = bary[2, n]
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        for c in range(C):
            g = g_out[c, n]
            if want_attr:
                g_attr[i0, c] += g * w0
                g_attr[i1, c] += g * w1
                g_attr[i2, c] += g * w2
            s0 += g * attr[i0, c]
            s1 += g * attr[i1, c]
            s2 += g * attr[i2, c]
        if want_bary:
            g_bary[0, n] = s0
            g_bary[1, n] = s1
            g_bary[2, n] = s2


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def sh_forward(normals, sh, starts, out):
    """normals (3,N) unit, sh (B,9,C), starts (B+1,) pixel ranges of the images -> out (C,N) (written).

    Loops channel by channel over contiguous pixel runs with the 9 coefficients in registers (vectorizes)."""
    C = sh.shape[2]
    for b in range(starts.shape[0] - 1):
        s = 0 if sh.shape[0] == 1 else b
        for c in range(C):
            k0 = _C0 * sh[s, 0, c]
            k1 = _C1 * sh[s, 1, c]
            k2 = _C1 * sh[s, 2, c]
            k3 = _C1 * sh[s, 3, c]
            k4 = _C2 * sh[s, 4, c]
            k5 = _C2 * sh[s, 5, c]
            k6 = _C2 * sh[s, 6, c]
            k7 = _C3 * sh[s, 7, c]
            k8 = _C4 * sh[s, 8, c]
            for n in range(starts[b], starts[b + 1]):
                x = normals[0, n]
                y = normals[1, n]
                z = normals[2, n]
                out[c, n] = (k0 + k1 * x + k2 * y + k3 * z + k4 * x * y + k5 * x * z + k6 * y * z
                             + k7 * (x * x - y * y) + k8 * (3.0 * z * z - 1.0))


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def sh_backward(normals, sh, starts, g_out, g_normals, g_sh):
    """Writes g_normals (3,N); accumulates g_sh (B,9,C) (B = 1: shared; zeroed by the caller)."""
    C = sh.shape[2]
    g_normals[:] = 0.0
    for b in range(starts.shape[0] - 1):
        s = 0 if sh.shape[0] == 1 else b
        for c in range(C):
            k1 = _C1 * sh[s, 1, c]
            k2 = _C1 * sh[s, 2, c]
            k3 = _C1 * sh[s, 3, c]
            k4 = _C2 * sh[s, 4, c]
            k5 = _C2 * sh[s, 5, c]
            k6 = _C2 * sh[s, 6, c]
            k7 = 2.0 * _C3 * sh[s, 7, c]
            k8 = 6.0 * _C4 * sh[s, 8, c]
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = 0.0
            for n in range(starts[b], starts[b + 1]):
                x = normals[0, n]
                y = normals[1, n]
                z = normals[2, n]
                g = g_out[c, n]
                a0 += g
                a1 += g * x
                a2 += g * y
                a3 += g * z
                a4 += g * x * y
                a5 += g * x * z
                a6 += g * y * z
                a7 += g * (x * x - y * y)
                a8 += g * (3.0 * z * z - 1.0)
                g_normals[0, n] += g * (k1 + k4 * y + k5 * z + k7 * x)
                g_normals[1, n] += g * (k2 + k4 * x + k6 * z - k7 * y)
                g_normals[2, n] += g * (k3 + k5 * x + k6 * y + k8 * z)
            g_sh[s, 0, c] += _C0 * a0
            g_sh[s, 1, c] += _C1 * a1
            g_sh[s, 2, c] += _C1 * a2
            g_sh[s, 3, c] += _C1 * a3
            g_sh[s, 4, c] += _C2 * a4
            g_sh[s, 5, c] += _C2 * a5
            g_sh[s, 6, c] += _C2 * a6
            g_sh[s, 7, c] += _C3 * a7
            g_sh[s, 8, c] += _C4 * a8


@numba.njit(cache=True, nogil=True)
def scatter_cols(values, pix, out):
    """out[pix[n], c] = values[c, n] for values (C,N), out (P,C)."""
    C = values.shape[0]
    for n in range(pix.shape[0]):
        p = pix[n]
        for c in range(C):
            out[p, c] = values[c, n]


@numba.njit(cache=True, nogil=True)
def gather_cols(img, pix, out):
    """out[c, n] = img[pix[n], c] for img (P,C), out (C,N)."""
    C = img.shape[1]
    for n in range(pix.shape[0]):
        p = pix[n]
        for c in range(C):
            out[c, n] = img[p, c]




# ------------------------------------------------------------------------------ per-face kernels (F-sized)


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def face_coefs(verts, faces, perspective, coef, inv_area):
    """verts (B,V,3), faces (F,3) -> coef (B*F,11) as in ``rasterize.RasterBary``; inv_area (B*F,) 1/area (1 if 0)."""
    B = verts.shape[0]
    F = faces.shape[0]
    for b in range(B):
        for f in range(F):
            m = b * F + f
            i0 = faces[f, 0]
            i1 = faces[f, 1]
            i2 = faces[f, 2]
            x0 = verts[b, i0, 0]
            y0 = verts[b, i0, 1]
            x1 = verts[b, i1, 0]
            y1 = verts[b, i1, 1]
            x2 = verts[b, i2, 0]
            y2 = verts[b, i2, 1]
            area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            ia = 1.0 / area if area != 0.0 else 1.0
            inv_area[m] = ia
            coef[m, 0] = (y1 - y2) * ia
            coef[m, 1] = (y2 - y0) * ia
            coef[m, 2] = (y0 - y1) * ia
            coef[m, 3] = (x2 - x1) * ia
            coef[m, 4] = (x0 - x2) * ia
            coef[m, 5] = (x1 - x0) * ia
            coef[m, 6] = x0
            coef[m, 7] = y0
            if perspective:
                coef[m, 8] = 1.0 / verts[b, i0, 2]
                coef[m, 9] = 1.0 / verts[b, i1, 2]
                coef[m, 10] = 1.0 / verts[b, i2, 2]
            else:
                coef[m, 8] = verts[b, i0, 2]
                coef[m, 9] = verts[b, i1, 2]
                coef[m, 10] = verts[b, i2, 2]


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def face_coefs_backward(verts, faces, perspective, coef, inv_area, g_coef, g_verts):
    """Chain rule of :func:`face_coefs`: accumulates into g_verts (B,V,3) (zeroed by the caller)."""
    B = verts.shape[0]
    F = faces.shape[0]
    for b in range(B):
        for f in range(F):
            m = b * F + f
            gA0 = g_coef[m, 0]
            gA1 = g_coef[m, 1]
            gA2 = g_coef[m, 2]
            gB0 = g_coef[m, 3]
            gB1 = g_coef[m, 4]
            gB2 = g_coef[m, 5]
            if (gA0 == 0.0 and gA1 == 0.0 and gA2 == 0.0 and gB0 == 0.0 and gB1 == 0.0 and gB2 == 0.0
                    and g_coef[m, 6] == 0.0 and g_coef[m, 7] == 0.0 and g_coef[m, 8] == 0.0
                    and g_coef[m, 9] == 0.0 and g_coef[m, 10] == 0.0):
                continue  # face covers no pixel
            i0 = faces[f, 0]
            i1 = faces[f, 1]
            i2 = faces[f, 2]
            x0 = verts[b, i0, 0]
            y0 = verts[b, i0, 1]
            x1 = verts[b, i1, 0]
            y1 = verts[b, i1, 1]
            x2 = verts[b, i2, 0]
            y2 = verts[b, i2, 1]
            ia = inv_area[m]
            a0 = y1 - y2
            a1 = y2 - y0
            a2 = y0 - y1
            c0 = x2 - x1
            c1 = x0 - x2
            c2 = x1 - x0
            g_area = -(gA0 * a0 + gA1 * a1 + gA2 * a2 + gB0 * c0 + gB1 * c1 + gB2 * c2) * ia * ia
            g_verts[b, i0, 0] += a0 * g_area + ia * (gB1 - gB2) + g_coef[m, 6]
            g_verts[b, i1, 0] += a1 * g_area + ia * (gB2 - gB0)
            g_verts[b, i2, 0] += a2 * g_area + ia * (gB0 - gB1)
            g_verts[b, i0, 1] += c0 * g_area + ia * (gA2 - gA1) + g_coef[m, 7]
            g_verts[b, i1, 1] += c1 * g_area + ia * (gA0 - gA2)
            g_verts[b, i2, 1] += c2 * g_area + ia * (gA1 - gA0)
            if perspective:
                w0 = coef[m, 8]
                w1 = coef[m, 9]
                w2 = coef[m, 10]
                g_verts[b, i0, 2] -= g_coef[m, 8] * w0 * w0
                g_verts[b, i1, 2] -= g_coef[m, 9] * w1 * w1
                g_verts[b, i2, 2] -= g_coef[m, 10] * w2 * w2
            else:
                g_verts[b, i0, 2] += g_coef[m, 8]
                g_verts[b, i1, 2] += g_coef[m, 9]
                g_verts[b, i2, 2] += g_coef[m, 10]


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def vertex_normals_forward(verts, faces, normals, inv_len):
    """verts (B,V,3), faces (F,3) -> unit area-weighted normals (B,V,3) and 1/|sum| (B,V) (written)."""
    B, V, _ = verts.shape
    F = faces.shape[0]
    normals[:] = 0.0
    for b in range(B):
        for f in range(F):
            i0 = faces[f, 0]
            i1 = faces[f, 1]
            i2 = faces[f, 2]
            ex = verts[b, i1, 0] - verts[b, i0, 0]
            ey = verts[b, i1, 1] - verts[b, i0, 1]
            ez = verts[b, i1, 2] - verts[b, i0, 2]
            fx = verts[b, i2, 0] - verts[b, i0, 0]
            fy = verts[b, i2, 1] - verts[b, i0, 1]
            fz = verts[b, i2, 2] - verts[b, i0, 2]
            nx = ey * fz - ez * fy
            ny = ez * fx - ex * fz
            nz = ex * fy - ey * fx
            for i in (i0, i1, i2):
                normals[b, i, 0] += nx
                normals[b, i, 1] += ny
                normals[b, i, 2] += nz
        for v in range(V):
            sq = normals[b, v, 0] ** 2 + normals[b, v, 1] ** 2 + normals[b, v, 2] ** 2
            inv = 1.0 / np.sqrt(max(sq, 1e-40))
            inv_len[b, v] = inv
            normals[b, v, 0] *= inv
            normals[b, v, 1] *= inv
            normals[b, v, 2] *= inv


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def vertex_normals_backward(verts, faces, normals, inv_len, g_n, g_verts):
    """Accumulates into g_verts (B,V,3) (zeroed by the caller)."""
    B, V, _ = verts.shape
    F = faces.shape[0]
    g_vn = np.empty((V, 3), dtype=verts.dtype)
    for b in range(B):
        for v in range(V):
            nx = normals[b, v, 0]
            ny = normals[b, v, 1]
            nz = normals[b, v, 2]
            dot = g_n[b, v, 0] * nx + g_n[b, v, 1] * ny + g_n[b, v, 2] * nz
            g_vn[v, 0] = (g_n[b, v, 0] - nx * dot) * inv_len[b, v]
            g_vn[v, 1] = (g_n[b, v, 1] - ny * dot) * inv_len[b, v]
            g_vn[v, 2] = (g_n[b, v, 2] - nz * dot) * inv_len[b, v]
        for f in range(F):
            i0 = faces[f, 0]
            i1 = faces[f, 1]
            i2 = faces[f, 2]
            gx = g_vn[i0, 0] + g_vn[i1, 0] + g_vn[i2, 0]
            gy = g_vn[i0, 1] + g_vn[i1, 1] + g_vn[i2, 1]
            gz = g_vn[i0, 2] + g_vn[i1, 2] + g_vn[i2, 2]
            ex = verts[b, i1, 0] - verts[b, i0, 0]
            ey = verts[b, i1, 1] - verts[b, i0, 1]
            ez = verts[b, i1, 2] - verts[b, i0, 2]
            fx = verts[b, i2, 0] - verts[b, i0, 0]
            fy = verts[b, i2, 1] - verts[b, i0, 1]
            fz = verts[b, i2, 2] - verts[b, i0, 2]
            # n = e x f: d/de = f x g, d/df = g x e
            dex = fy * gz - fz * gy
            dey = fz * gx - fx * gz
            dez = fx * gy - fy * gx
            dfx = gy * ez - gz * ey
            dfy = gz * ex - gx * ez
            dfz = gx * ey - gy * ex
            g_verts[b, i1, 0] += dex
            g_verts[b, i1, 1] += dey
            g_verts[b, i1, 2] += dez
            g_verts[b, i2, 0] += dfx
            g_verts[b, i2, 1] += dfy
            g_verts[b, i2, 2] += dfz
            g_verts[b, i0, 0] -= dex + dfx
            g_verts[b, i0, 1] -= dey + dfy
            g_verts[b, i0, 2] -= dez + dfz


# ------------------------------------------------------------------------------ texture


@numba.njit(cache=True, nogil=True, inline="always")
def _texel(i, n, wrap):
    if wrap:
        i = i % n
        return i + n if i < 0 else i
    return min(max(i, 0), n - 1)


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def texture_forward(tex, uv, bidx, wrap, out):
    """tex (Bt,Ht,Wt,C), uv (2,N), bidx (N,) image of each sample (ignored when Bt == 1) -> out (C,N)."""
    Bt, Ht, Wt, C = tex.shape
    N = uv.shape[1]
    for n in range(N):
        b = 0 if Bt == 1 else bidx[n]
        x = uv[0, n] * Wt - 0.5
        y = (1.0 - uv[1, n]) * Ht - 0.5
        xf = np.floor(x)
        yf = np.floor(y)
        fx = x - xf
        fy = y - yf
        x0 = _texel(int(xf), Wt, wrap)
        x1 = _texel(int(xf) + 1, Wt, wrap)
        y0 = _texel(int(yf), Ht, wrap)
        y1 = _texel(int(yf) + 1, Ht, wrap)
        for c in range(C):
            t00 = tex[b, y0, x0, c]
            t01 = tex[b, y0, x1, c]
            t10 = tex[b, y1, x0, c]
            t11 = tex[b, y1, x1, c]
            top = t00 + (t01 - t00) * fx
            bot = t10 + (t11 - t10) * fx
            out[c, n] = top + (bot - top) * fy


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def texture_backward(tex, uv, bidx, wrap, g_out, want_tex, want_uv, g_tex, g_uv):
    """Accumulates g_tex (Bt,Ht,Wt,C) (zeroed by the caller); writes g_uv (2,N)."""
    Bt, Ht, Wt, C = tex.shape
    N = uv.shape[1]
    for n in range(N):
        b = 0 if Bt == 1 else bidx[n]
        x = uv[0, n] * Wt - 0.5
        y = (1.0 - uv[1, n]) * Ht - 0.5
        xf = np.floor(x)
        yf = np.floor(y)
        fx = x - xf
        fy = y - yf
        x0 = _texel(int(xf), Wt, wrap)
        x1 = _texel(int(xf) + 1, Wt, wrap)
        y0 = _texel(int(yf), Ht, wrap)
        y1 = _texel(int(yf) + 1, Ht, wrap)
        gx = 0.0
        gy = 0.0
        for c in range(C):
            g = g_out[c, n]
            if want_tex:
                g_tex[b, y0, x0, c] += g * (1.0 - fx) * (1.0 - fy)
                g_tex[b, y0, x1, c] += g * fx * (1.0 - fy)
                g_tex[b, y1, x0, c] += g * (1.0 - fx) * fy
                g_tex[b, y1, x1, c] += g * fx * fy
            t00 = tex[b, y0, x0, c]
            t01 = tex[b, y0, x1, c]
            t10 = tex[b, y1, x0, c]
            t11 = tex[b, y1, x1, c]
            gx += g * ((t01 - t00) * (1.0 - fy) + (t11 - t10) * fy)
            gy += g * ((t10 - t00) * (1.0 - fx) + (t11 - t01) * fx)
        if want_uv:
            g_uv[0, n] = gx * Wt
            g_uv[1, n] = -gy * Ht


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def shade_albedo_forward(color, raw, sh, starts, out):
    """out (C,N) = color (C,N) * SH irradiance of the normalised raw normals (3,N); sh (B,9,Cs), Cs = C or 1
    (shared by the channels); pixels of image b are starts[b]:starts[b+1]. Same maths as
    ``color * sh_forward(raw / |raw|)`` with the length clamped like ``mesh_renderer._normalize_t``."""
    C = color.shape[0]
    Cs = sh.shape[2]
    for b in range(starts.shape[0] - 1):
        s = 0 if sh.shape[0] == 1 else b
        for n in range(starts[b], starts[b + 1]):
            x = raw[0, n]
            y = raw[1, n]
            z = raw[2, n]
            inv = 1.0 / np.sqrt(max(x * x + y * y + z * z, 1e-24))
            x *= inv
            y *= inv
            z *= inv
            for c in range(C):
                k = c if Cs > 1 else 0
                shade = (_C0 * sh[s, 0, k] + _C1 * (sh[s, 1, k] * x + sh[s, 2, k] * y + sh[s, 3, k] * z)
                         + _C2 * (sh[s, 4, k] * x * y + sh[s, 5, k] * x * z + sh[s, 6, k] * y * z)
                         + _C3 * sh[s, 7, k] * (x * x - y * y) + _C4 * sh[s, 8, k] * (3.0 * z * z - 1.0))
                out[c, n] = color[c, n] * shade


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def shade_albedo_backward(color, raw, sh, starts, g_out, want_color, want_raw, want_sh, g_color, g_raw, g_sh):
    """Writes g_color (C,N) and g_raw (3,N) (those wanted); accumulates g_sh (B,9,Cs) (zeroed by the caller)."""
    C = color.shape[0]
    Cs = sh.shape[2]
    acc = np.zeros((9, Cs))
    for b in range(starts.shape[0] - 1):
        s = 0 if sh.shape[0] == 1 else b
        acc[:] = 0.0
        for n in range(starts[b], starts[b + 1]):
            rx = raw[0, n]
            ry = raw[1, n]
            rz = raw[2, n]
            sq = rx * rx + ry * ry + rz * rz
            clamped = sq < 1e-24
            inv = 1.0 / np.sqrt(max(sq, 1e-24))
            x = rx * inv
            y = ry * inv
            z = rz * inv
            gx = 0.0
            gy = 0.0
            gz = 0.0
            for c in range(C):
                k = c if Cs > 1 else 0
                g = g_out[c, n]
                if want_color:
                    shade = (_C0 * sh[s, 0, k] + _C1 * (sh[s, 1, k] * x + sh[s, 2, k] * y + sh[s, 3, k] * z)
                             + _C2 * (sh[s, 4, k] * x * y + sh[s, 5, k] * x * z + sh[s, 6, k] * y * z)
                             + _C3 * sh[s, 7, k] * (x * x - y * y) + _C4 * sh[s, 8, k] * (3.0 * z * z - 1.0))
                    g_color[c, n] = g * shade
                gs = g * color[c, n]  # d loss / d irradiance
                if want_sh:
                    acc[0, k] += gs
                    acc[1, k] += gs * x
                    acc[2, k] += gs * y
                    acc[3, k] += gs * z
                    acc[4, k] += gs * x * y
                    acc[5, k] += gs * x * z
                    acc[6, k] += gs * y * z
                    acc[7, k] += gs * (x * x - y * y)
                    acc[8, k] += gs * (3.0 * z * z - 1.0)
                if want_raw:
                    gx += gs * (_C1 * sh[s, 1, k] + _C2 * (sh[s, 4, k] * y + sh[s, 5, k] * z)
                                + 2.0 * _C3 * sh[s, 7, k] * x)
                    gy += gs * (_C1 * sh[s, 2, k] + _C2 * (sh[s, 4, k] * x + sh[s, 6, k] * z)
                                - 2.0 * _C3 * sh[s, 7, k] * y)
                    gz += gs * (_C1 * sh[s, 3, k] + _C2 * (sh[s, 5, k] * x + sh[s, 6, k] * y)
                                + 6.0 * _C4 * sh[s, 8, k] * z)
            if want_raw:
                if clamped:  # the clamped length is a constant
                    g_raw[0, n] = gx * inv
                    g_raw[1, n] = gy * inv
                    g_raw[2, n] = gz * inv
                else:  # d (r / |r|) / d r = (I - n n^T) / |r|
                    d = gx * x + gy * y + gz * z
                    g_raw[0, n] = (gx - d * x) * inv
                    g_raw[1, n] = (gy - d * y) * inv
                    g_raw[2, n] = (gz - d * z) * inv
        if want_sh:
            for j in range(9):
                cj = _C0 if j == 0 else (_C1 if j < 4 else (_C2 if j < 7 else (_C3 if j == 7 else _C4)))
                for k in range(Cs):
                    g_sh[s, j, k] += cj * acc[j, k]
