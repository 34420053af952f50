"""Numba CPU pass of :func:`flamefit.render.antialias`: find the pixel pairs that a silhouette edge crosses.

Same rules and float64 arithmetic as the torch pass in ``antialias.py`` (the reference, and the CUDA path), so
both select the same pairs. Edge-centric: every silhouette edge is walked along the pixel rows (steep edges) or
columns (flat edges) it crosses; each crossing between two pixel centres is a candidate pair, kept when the
edge is visible there (see ``antialias.py``).
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def silhouette_flags(verts, faces, nbr):
    """(B,F,3) uint8: edge k (v_k -> v_{k+1}) of face f is a silhouette edge in screen space (its two faces
    face opposite ways, or it has one face only)."""
    B = verts.shape[0]
    F = faces.shape[0]
    sign = np.empty((B, F), dtype=np.int8)
    for b in range(B):
        for f in range(F):
            i0 = faces[f, 0]
            i1 = faces[f, 1]
            i2 = faces[f, 2]
            x0 = np.float64(verts[b, i0, 0])
            y0 = np.float64(verts[b, i0, 1])
            x1 = np.float64(verts[b, i1, 0])
            y1 = np.float64(verts[b, i1, 1])
            x2 = np.float64(verts[b, i2, 0])
            y2 = np.float64(verts[b, i2, 1])
            area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            sign[b, f] = 1 if area > 0.0 else (-1 if area < 0.0 else 0)
    sil = np.zeros((B, F, 3), dtype=np.uint8)
    for b in range(B):
        for f in range(F):
            for k in range(3):
                nb = nbr[f, k]
                if nb < 0 or sign[b, nb] != sign[b, f]:
                    sil[b, f, k] = 1
    return sil


@numba.njit(cache=True, nogil=True)
def find_pairs(verts, faces, nbr, tri, zbuf):
    """-> (5,K) int64 rows (front_pix, back_pix, edge_a, edge_b, axis); pixels are flat indices into B*H*W,
    edge vertices ``b * V + v``; axis 0 = horizontal pair."""
    B, H, W = tri.shape
    V = verts.shape[1]
    F = faces.shape[0]
    sil = silhouette_flags(verts, faces, nbr)
    slot = np.full((B * H * W, 2), -1, dtype=np.int64)
    cap = 1024
    out = np.empty((5, cap), dtype=np.int64)
    best = np.empty(cap, dtype=np.float64)
    n = 0
    for b in range(B):
        for f in range(F):
            for k in range(3):
                if sil[b, f, k] == 0:
                    continue
                g = nbr[f, k]
                if g >= 0 and g < f:
                    continue  # a shared edge is walked once, from its higher-index face
                va = faces[f, k]
                vb = faces[f, (k + 1) % 3]
                vc = faces[f, (k + 2) % 3]
                xa = np.float64(verts[b, va, 0])
                ya = np.float64(verts[b, va, 1])
                za = np.float64(verts[b, va, 2])
                xb = np.float64(verts[b, vb, 0])
                yb = np.float64(verts[b, vb, 1])
                zb = np.float64(verts[b, vb, 2])
                xc = np.float64(verts[b, vc, 0])
                yc = np.float64(verts[b, vc, 1])
                # the faces of a silhouette edge lie on one side of it on screen: the third vertex's side
                side = (xb - xa) * (yc - ya) - (yb - ya) * (xc - xa)
                if not (side != 0.0 and np.isfinite(xa) and np.isfinite(ya) and np.isfinite(xb)
                        and np.isfinite(yb)):
                    continue
                steep = abs(xb - xa) <= abs(yb - ya)
                # walk along the minor axis: rows for steep edges (horizontal pairs), columns otherwise
                if steep:
                    lo = min(ya, yb)
                    hi = max(ya, yb)
                    n_lines = H
                    n_along = W
                else:
                    lo = min(xa, xb)
                    hi = max(xa, xb)
                    n_lines = W
                    n_along = H
                # clamped before rounding: same lines, no float->int overflow for huge coordinates
                lo = min(max(lo, -1.0), n_lines + 1.0)
                hi = min(max(hi, -1.0), n_lines + 1.0)
                j0 = max(math.ceil(lo - 0.5), 0.0)
                j1 = min(math.ceil(hi - 0.5) - 1.0, n_lines - 1.0)  # line centres in [lo, hi)
                for jf in range(int(j0), int(j1) + 1):
                    cen = jf + 0.5
                    if steep:
                        r = (cen - ya) / (yb - ya)
                        c = xa + (cen - ya) * (xb - xa) / (yb - ya)
                    else:
                        r = (cen - xa) / (xb - xa)
                        c = ya + (cen - xa) * (yb - ya) / (xb - xa)
                    cf = c - 0.5  # pixel centres i + 0.5 <= c < i + 1.5 with 0 <= i and i + 1 < n_along
                    if not (cf >= 0.0 and cf < n_along - 1.0):  # (tested as floats: also false for NaN)
                        continue
                    i = int(math.floor(cf))
                    up = i + 1.5
                    if steep:
                        e_hi = (xb - xa) * (cen - ya) - (yb - ya) * (up - xa)
                    else:
                        e_hi = (xb - xa) * (up - ya) - (yb - ya) * (cen - xa)
                    hi_inside = e_hi * side > 0.0
                    ip = i + 1 if hi_inside else i
                    iq = i if hi_inside else i + 1
                    if steep:
                        pp = (b * H + jf) * W + ip
                        qq = (b * H + jf) * W + iq
                        pmin = (b * H + jf) * W + i
                    else:
                        pp = (b * H + ip) * W + jf
                        qq = (b * H + iq) * W + jf
                        pmin = (b * H + i) * W + jf
                    if tri.flat[pp] < 0:
                        continue  # nothing drawn on the surface's side
                    ze = za + r * (zb - za)
                    if tri.flat[qq] >= 0 and not (zbuf.flat[qq] > ze):
                        continue  # the other side shows something in front of the edge: hidden
                    axis = 0 if steep else 1
                    s_ = slot[pmin, axis]
                    if s_ >= 0:
                        if ze < best[s_]:  # several edges cross the pair: the nearest one is seen
                            best[s_] = ze
                            out[0, s_] = pp
                            out[1, s_] = qq
                            out[2, s_] = b * V + va
                            out[3, s_] = b * V + vb
                        continue
                    if n == cap:
                        cap *= 2
                        grown = np.empty((5, cap), dtype=np.int64)
                        grown[:, :n] = out[:, :n]
                        out = grown
                        grown_b = np.empty(cap, dtype=np.float64)
                        grown_b[:n] = best[:n]
                        best = grown_b
                    slot[pmin, axis] = n
                    best[n] = ze
                    out[0, n] = pp
                    out[1, n] = qq
                    out[2, n] = b * V + va
                    out[3, n] = b * V + vb
                    out[4, n] = axis
                    n += 1
    return out[:, :n]
