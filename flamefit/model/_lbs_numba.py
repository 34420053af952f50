"""Numba CPU kernels for the per-vertex skinning of :func:`flamefit.model.lbs.lbs` (forward and backward in one
pass each; autograd's graph for these few lines makes a dozen (B,V,3) temporaries and slice-backward copies)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def skin_forward(v_posed, A, weights, out):
    """v_posed (B,V,3), A (B,J,12) row-major 3x4 transforms, weights (V,J) -> out (B,V,3) (written)."""
    B, V, _ = v_posed.shape
    J = A.shape[1]
    for b in range(B):
        for v in range(V):
            x = v_posed[b, v, 0]
            y = v_posed[b, v, 1]
            z = v_posed[b, v, 2]
            for r in range(3):
                m0 = 0.0
                m1 = 0.0
                m2 = 0.0
                m3 = 0.0
                for j in range(J):
                    w = weights[v, j]
                    m0 += w * A[b, j, 4 * r]
                    m1 += w * A[b, j, 4 * r + 1]
                    m2 += w * A[b, j, 4 * r + 2]
                    m3 += w * A[b, j, 4 * r + 3]
                out[b, v, r] = m0 * x + m1 * y + m2 * z + m3


@numba.njit(cache=True, nogil=True)
def skin_backward(v_posed, A, weights, g_out, want_v, want_A, g_v, g_A):
    """g_v (B,V,3) written when ``want_v``; g_A (B,J,12) written when ``want_A`` (float64 sums over vertices)."""
    B, V, _ = v_posed.shape
    J = A.shape[1]
    acc = np.zeros((J, 12))
    for b in range(B):
        acc[:] = 0.0
        for v in range(V):
            x = v_posed[b, v, 0]
            y = v_posed[b, v, 1]
            z = v_posed[b, v, 2]
            g0 = g_out[b, v, 0]
            g1 = g_out[b, v, 1]
            g2 = g_out[b, v, 2]
            if want_v:
                # d out_r / d p_c = M[r, c], M = sum_j w_j A_j
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                for j in range(J):
                    w = weights[v, j]
                    s0 += w * (A[b, j, 0] * g0 + A[b, j, 4] * g1 + A[b, j, 8] * g2)
                    s1 += w * (A[b, j, 1] * g0 + A[b, j, 5] * g1 + A[b, j, 9] * g2)
                    s2 += w * (A[b, j, 2] * g0 + A[b, j, 6] * g1 + A[b, j, 10] * g2)
                g_v[b, v, 0] = s0
                g_v[b, v, 1] = s1
                g_v[b, v, 2] = s2
            if want_A:
                for j in range(J):
                    w = weights[v, j]
                    if w == 0.0:
                        continue
                    wg0 = w * g0
                    wg1 = w * g1
                    wg2 = w * g2
                    acc[j, 0] += wg0 * x
                    acc[j, 1] += wg0 * y
                    acc[j, 2] += wg0 * z
                    acc[j, 3] += wg0
                    acc[j, 4] += wg1 * x
                    acc[j, 5] += wg1 * y
                    acc[j, 6] += wg1 * z
                    acc[j, 7] += wg1
                    acc[j, 8] += wg2 * x
                    acc[j, 9] += wg2 * y
                    acc[j, 10] += wg2 * z
                    acc[j, 11] += wg2
        if want_A:
            for j in range(J):
                for k in range(12):
                    g_A[b, j, k] = acc[j, k]


@numba.njit(cache=True, nogil=True)
def _rodrigues_coefs(x, y, z):
    """a = sin(t)/t, b = (1-cos t)/t^2 and their derivatives divided by t (da/dr_i = a1 r_i, db/dr_i = b1 r_i),
    with Taylor series near t = 0 (no division by a tiny angle)."""
    t2 = x * x + y * y + z * z
    if t2 < 1e-8:
        a = 1.0 - t2 / 6.0
        b = 0.5 - t2 / 24.0
        a1 = -1.0 / 3.0 + t2 / 30.0
        b1 = -1.0 / 12.0 + t2 / 180.0
    else:
        t = np.sqrt(t2)
        s = np.sin(t)
        c = np.cos(t)
        a = s / t
        b = (1.0 - c) / t2
        a1 = (t * c - s) / (t2 * t)
        b1 = (t * s - 2.0 * (1.0 - c)) / (t2 * t2)
    return a, b, a1, b1


@numba.njit(cache=True, nogil=True)
def rodrigues_forward(aa, out):
    """aa (N,3) axis-angle -> out (N,9) row-major rotation matrices, R = I + a K + b K^2."""
    for n in range(aa.shape[0]):
        x = np.float64(aa[n, 0])
        y = np.float64(aa[n, 1])
        z = np.float64(aa[n, 2])
        a, b, _, _ = _rodrigues_coefs(x, y, z)
        xx = x * x
        yy = y * y
        zz = z * z
        out[n, 0] = 1.0 - b * (yy + zz)
        out[n, 1] = -a * z + b * x * y
        out[n, 2] = a * y + b * x * z
        out[n, 3] = a * z + b * x * y
        out[n, 4] = 1.0 - b * (xx + zz)
        out[n, 5] = -a * x + b * y * z
        out[n, 6] = -a * y + b * x * z
        out[n, 7] = a * x + b * y * z
        out[n, 8] = 1.0 - b * (xx + yy)


@numba.njit(cache=True, nogil=True)
def rodrigues_backward(aa, g, g_aa):
    """g (N,9) = d loss / d R -> g_aa (N,3) (written)."""
    for n in range(aa.shape[0]):
        x = np.float64(aa[n, 0])
        y = np.float64(aa[n, 1])
        z = np.float64(aa[n, 2])
        a, b, a1, b1 = _rodrigues_coefs(x, y, z)
        g0 = np.float64(g[n, 0])
        g1 = np.float64(g[n, 1])
        g2 = np.float64(g[n, 2])
        g3 = np.float64(g[n, 3])
        g4 = np.float64(g[n, 4])
        g5 = np.float64(g[n, 5])
        g6 = np.float64(g[n, 6])
        g7 = np.float64(g[n, 7])
        g8 = np.float64(g[n, 8])
        # R = I + a K + b S with K the skew matrix of (x, y, z) and S = K^2 = r r^T - |r|^2 I:
        # dR/dr_i = (a1 K + b1 S) r_i + a dK/dr_i + b dS/dr_i
        gk = -g1 * z + g2 * y + g3 * z - g5 * x - g6 * y + g7 * x  # <G, K>
        gs = (-g0 * (y * y + z * z) + (g1 + g3) * x * y + (g2 + g6) * x * z - g4 * (x * x + z * z)
              + (g5 + g7) * y * z - g8 * (x * x + y * y))  # <G, S>
        common = a1 * gk + b1 * gs
        # <G, dK/dx> = g7 - g5, <G, dK/dy> = g2 - g6, <G, dK/dz> = g3 - g1
        # <G, dS/dx> = (g1 + g3) y + (g2 + g6) z - 2 x (g4 + g8), and cyclic
        g_aa[n, 0] = common * x + a * (g7 - g5) + b * ((g1 + g3) * y + (g2 + g6) * z - 2.0 * x * (g4 + g8))
        g_aa[n, 1] = common * y + a * (g2 - g6) + b * ((g1 + g3) * x + (g5 + g7) * z - 2.0 * y * (g0 + g8))
        g_aa[n, 2] = common * z + a * (g3 - g1) + b * ((g2 + g6) * x + (g5 + g7) * y - 2.0 * z * (g0 + g4))
