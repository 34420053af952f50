"""Numba CPU kernels for the per-pixel forward and backward passes of ``_ops`` (barycentrics, interpolation,
SH shading).

Each kernel is one pass over the covered pixels, where the torch formulation in ``_ops`` needs a dozen passes
over (K,N) temporaries that do not fit in cache at 512x512. Same maths as the torch path (which runs on other
devices and without numba); tests check both against each other and against finite differences.
Serial loops: the backward passes scatter-add into per-face / per-vertex gradients.
"""

from __future__ import annotations

import numba
import numpy as np

from flamefit.render._ops import SH_CONSTANTS

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
    """Accumulates d loss / d coef into g_coef (M,11) (zeroed by the caller)."""
    N = gidx.shape[0]
    for n in range(N):
        f = gidx[n]
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
            g_coef[f, 8] += gq0 * b0
            g_coef[f, 9] += gq1 * b1
            g_coef[f, 10] += gq2 * b2
            g0 = gq0 * w0
            g1 = gq1 * w1
            g2 = gq2 * w2
        else:
            g_coef[f, 8] += gd * b0
            g_coef[f, 9] += gd * b1
            g_coef[f, 10] += gd * b2
            g0 = gb0 + gd * w0
            g1 = gb1 + gd * w1
            g2 = gb2 + gd * w2
        g_coef[f, 0] += g0 * dx
        g_coef[f, 1] += g1 * dx
        g_coef[f, 2] += g2 * dx
        g_coef[f, 3] += g0 * dy
        g_coef[f, 4] += g1 * dy
        g_coef[f, 5] += g2 * dy
        g_coef[f, 6] -= g0 * coef[f, 0] + g1 * coef[f, 1] + g2 * coef[f, 2]
        g_coef[f, 7] -= g0 * coef[f, 3] + g1 * coef[f, 4] + g2 * coef[f, 5]


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
def sh_forward(normals, sh, bidx, out):
    """normals (3,N) unit, sh (B,9,C), bidx (N,) -> out (C,N) (written)."""
    C = sh.shape[2]
    N = normals.shape[1]
    shared = sh.shape[0] == 1
    for n in range(N):
        b = 0 if shared else bidx[n]
        x = normals[0, n]
        y = normals[1, n]
        z = normals[2, n]
        e1 = _C1 * x
        e2 = _C1 * y
        e3 = _C1 * z
        e4 = _C2 * x * y
        e5 = _C2 * x * z
        e6 = _C2 * y * z
        e7 = _C3 * (x * x - y * y)
        e8 = _C4 * (3.0 * z * z - 1.0)
        for c in range(C):
            out[c, n] = (_C0 * sh[b, 0, c] + e1 * sh[b, 1, c] + e2 * sh[b, 2, c] + e3 * sh[b, 3, c]
                         + e4 * sh[b, 4, c] + e5 * sh[b, 5, c] + e6 * sh[b, 6, c] + e7 * sh[b, 7, c]
                         + e8 * sh[b, 8, c])


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def sh_backward(normals, sh, bidx, g_out, g_normals, g_sh):
    """Writes g_normals (3,N); accumulates g_sh (B,9,C) (zeroed by the caller). Pixels are grouped by image."""
    C = sh.shape[2]
    N = normals.shape[1]
    shared = sh.shape[0] == 1
    acc = np.zeros((9, C))
    cur = 0 if shared or N == 0 else bidx[0]
    for n in range(N):
        b = 0 if shared else bidx[n]
        if b != cur:
            g_sh[cur] += acc
            acc[:] = 0.0
            cur = b
        x = normals[0, n]
        y = normals[1, n]
        z = normals[2, n]
        e1 = _C1 * x
        e2 = _C1 * y
        e3 = _C1 * z
        e4 = _C2 * x * y
        e5 = _C2 * x * z
        e6 = _C2 * y * z
        e7 = _C3 * (x * x - y * y)
        e8 = _C4 * (3.0 * z * z - 1.0)
        gx = 0.0
        gy = 0.0
        gz = 0.0
        for c in range(C):
            g = g_out[c, n]
            acc[0, c] += _C0 * g
            acc[1, c] += e1 * g
            acc[2, c] += e2 * g
            acc[3, c] += e3 * g
            acc[4, c] += e4 * g
            acc[5, c] += e5 * g
            acc[6, c] += e6 * g
            acc[7, c] += e7 * g
            acc[8, c] += e8 * g
            # d shading / d normal
            gx += g * (_C1 * sh[b, 1, c] + _C2 * (y * sh[b, 4, c] + z * sh[b, 5, c]) + 2 * _C3 * x * sh[b, 7, c])
            gy += g * (_C1 * sh[b, 2, c] + _C2 * (x * sh[b, 4, c] + z * sh[b, 6, c]) - 2 * _C3 * y * sh[b, 7, c])
            gz += g * (_C1 * sh[b, 3, c] + _C2 * (x * sh[b, 5, c] + y * sh[b, 6, c]) + 6 * _C4 * z * sh[b, 8, c])
        g_normals[0, n] = gx
        g_normals[1, n] = gy
        g_normals[2, n] = gz
    if N > 0:
        g_sh[cur] += acc


def as_np(t):
    """Contiguous numpy view of a CPU tensor (no copy when already contiguous)."""
    return t.detach().contiguous().numpy()


def empty_like_np(shape, dtype) -> np.ndarray:
    return np.empty(shape, dtype=dtype)
