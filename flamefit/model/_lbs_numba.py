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
