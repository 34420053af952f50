"""Numba CPU visibility pass (z-buffer) for :func:`flamefit.render.rasterize`.

Not differentiable and not meant to be: it only decides which triangle is visible at each pixel centre. The
arithmetic (see ``_setup`` and ``_raster_bands``: edge functions and depth in float64, depth rounded to float32,
ties to the lower face index) is exactly the one of the pure-torch pass in ``rasterize.py``, operation by
operation, so that both give the same triangle ids.

Parallel over row bands of the image (each band owns its pixels, so no atomics): triangles are binned into
the bands their bounding box touches, in face order; the bands are split among a few Python threads (the
kernels release the GIL).
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

BAND_ROWS = 8


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()), thread_name_prefix="flamefit-raster")


def run_split(kernel, args, n_jobs: int, weights: np.ndarray) -> None:
    """Run ``kernel(*args, lo, hi)`` over [0, n_jobs) split into contiguous chunks of about equal ``weights``,
    on a small thread pool (the kernels release the GIL). Plain threads rather than numba's OpenMP layer:
    OpenMP worker threads spin after each parallel region and starve torch's own pool on a small machine."""
    n_threads = min(max(1, torch.get_num_threads()), n_jobs)
    if n_threads <= 1:
        kernel(*args, 0, n_jobs)
        return
    cum = np.cumsum(weights.astype(np.float64) + 1.0)  # +1: empty jobs still cost a little
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, n_threads) / n_threads)
    bounds = [0, *[int(c) for c in cuts], n_jobs]
    futures = [_pool().submit(kernel, *args, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
               if hi > lo]
    for fut in futures:
        fut.result()


@numba.njit(cache=True, nogil=True)
def _setup(verts, faces, H, W, perspective, P, bbox, n_per_band, band_rows):
    """Per-face constants (the arithmetic spec shared with the torch pass), bounding boxes, band counts."""
    B = verts.shape[0]
    F = faces.shape[0]
    for b in range(B):
        for f in range(F):
            bbox[b, f, 0] = 1
            bbox[b, f, 1] = 0  # empty unless set below
            i0 = faces[f, 0]
            i1 = faces[f, 1]
            i2 = faces[f, 2]
            x0 = np.float64(verts[b, i0, 0])
            y0 = np.float64(verts[b, i0, 1])
            z0 = np.float64(verts[b, i0, 2])
            x1 = np.float64(verts[b, i1, 0])
            y1 = np.float64(verts[b, i1, 1])
            z1 = np.float64(verts[b, i1, 2])
            x2 = np.float64(verts[b, i2, 0])
            y2 = np.float64(verts[b, i2, 1])
            z2 = np.float64(verts[b, i2, 2])
            ok = (np.isfinite(x0) and np.isfinite(y0) and np.isfinite(z0) and np.isfinite(x1)
                  and np.isfinite(y1) and np.isfinite(z1) and np.isfinite(x2) and np.isfinite(y2)
                  and np.isfinite(z2))
            if not ok:
                continue
            if perspective and (z0 <= 0.0 or z1 <= 0.0 or z2 <= 0.0):
                continue
            area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            if area == 0.0:
                continue
            # clamp to just outside the image before rounding to integers: same boxes, and no float->int
            # overflow (undefined) for huge coordinates
            cx0 = max(math.ceil(min(max(min(x0, min(x1, x2)), -1.0), W + 1.0) - 0.5), 0)
            cx1 = min(math.floor(max(min(max(x0, max(x1, x2)), W + 1.0), -1.0) - 0.5), W - 1)
            cy0 = max(math.ceil(min(max(min(y0, min(y1, y2)), -1.0), H + 1.0) - 0.5), 0)
            cy1 = min(math.floor(max(min(max(y0, max(y1, y2)), H + 1.0), -1.0) - 0.5), H - 1)
            if cx1 < cx0 or cy1 < cy0:
                continue
            bbox[b, f, 0] = cx0
            bbox[b, f, 1] = cx1
            bbox[b, f, 2] = cy0
            bbox[b, f, 3] = cy1
            for band in range(cy0 // band_rows, cy1 // band_rows + 1):
                n_per_band[b, band] += 1
            P[b, f, 0] = x0
            P[b, f, 1] = y0
            P[b, f, 2] = x1
            P[b, f, 3] = y1
            P[b, f, 4] = x2
            P[b, f, 5] = y2
            P[b, f, 6] = x2 - x1
            P[b, f, 7] = y2 - y1
            P[b, f, 8] = x0 - x2
            P[b, f, 9] = y0 - y2
            P[b, f, 10] = x1 - x0
            P[b, f, 11] = y1 - y0
            P[b, f, 12] = 1.0 / area
            P[b, f, 13] = 1.0 if area > 0.0 else -1.0
            if perspective:
                P[b, f, 14] = 1.0 / z0
                P[b, f, 15] = 1.0 / z1
                P[b, f, 16] = 1.0 / z2
            else:
                P[b, f, 14] = z0
                P[b, f, 15] = z1
                P[b, f, 16] = z2


@numba.njit(cache=True, nogil=True)
def _fill_bins(bbox, offsets, fill, lists, band_rows):
    B = bbox.shape[0]
    F = bbox.shape[1]
    for b in range(B):
        for f in range(F):
            if bbox[b, f, 1] < bbox[b, f, 0]:
                continue
            for band in range(bbox[b, f, 2] // band_rows, bbox[b, f, 3] // band_rows + 1):
                k = offsets[b, band] + fill[b, band]
                lists[k] = f
                fill[b, band] += 1


@numba.njit(cache=True, nogil=True)
def _raster_bands(P, H, perspective, bbox, offsets, counts, lists, band_rows, tri, zbuf, job_lo, job_hi):
    n_bands = counts.shape[1]
    for job in range(job_lo, job_hi):
        b = job // n_bands
        band = job % n_bands
        r0 = band * band_rows
        r1 = min(r0 + band_rows, H) - 1
        start = offsets[b, band]
        for k in range(start, start + counts[b, band]):
            f = lists[k]
            x0 = P[b, f, 0]
            y0 = P[b, f, 1]
            x1 = P[b, f, 2]
            y1 = P[b, f, 3]
            x2 = P[b, f, 4]
            y2 = P[b, f, 5]
            dx21 = P[b, f, 6]
            dy21 = P[b, f, 7]
            dx02 = P[b, f, 8]
            dy02 = P[b, f, 9]
            dx10 = P[b, f, 10]
            dy10 = P[b, f, 11]
            inv_area = P[b, f, 12]
            sgn = P[b, f, 13]
            w0 = P[b, f, 14]
            w1 = P[b, f, 15]
            w2 = P[b, f, 16]
            ya = max(bbox[b, f, 2], r0)
            yb = min(bbox[b, f, 3], r1)
            xa = bbox[b, f, 0]
            xb = bbox[b, f, 1]
            for py_i in range(ya, yb + 1):
                py = py_i + 0.5
                r_0 = dx21 * (py - y1)
                r_1 = dx02 * (py - y2)
                r_2 = dx10 * (py - y0)
                for px_i in range(xa, xb + 1):
                    px = px_i + 0.5
                    e0 = r_0 - dy21 * (px - x1)
                    e1 = r_1 - dy02 * (px - x2)
                    e2 = r_2 - dy10 * (px - x0)
                    if e0 * sgn < 0.0 or e1 * sgn < 0.0 or e2 * sgn < 0.0:
                        continue
                    s = e0 * inv_area * w0 + e1 * inv_area * w1 + e2 * inv_area * w2
                    d32 = np.float32(1.0 / s) if perspective else np.float32(s)
                    cur = zbuf[b, py_i, px_i]
                    if d32 < cur or (d32 == cur and f < tri[b, py_i, px_i]):
                        zbuf[b, py_i, px_i] = d32
                        tri[b, py_i, px_i] = f


def rasterize_numba(verts: np.ndarray, faces: np.ndarray, height: int, width: int,
                    perspective: bool) -> tuple[np.ndarray, np.ndarray]:
    """verts (B,V,3) float32/64 [x_px, y_px, depth], faces (F,3) int32/64 -> (tri ids (B,H,W) int32, -1 = none;
    z-buffer (B,H,W) float32, +inf = none)."""
    B = verts.shape[0]
    F = faces.shape[0]
    n_bands = (height + BAND_ROWS - 1) // BAND_ROWS
    bbox = np.empty((B, F, 4), dtype=np.int32)
    P = np.empty((B, F, 17), dtype=np.float64)
    counts = np.zeros((B, n_bands), dtype=np.int64)
    _setup(verts, faces, height, width, perspective, P, bbox, counts, BAND_ROWS)
    offsets = np.zeros((B, n_bands), dtype=np.int64)
    flat = np.cumsum(counts.reshape(-1))
    offsets.reshape(-1)[1:] = flat[:-1]
    lists = np.empty(int(flat[-1]) if flat.size else 0, dtype=np.int32)
    _fill_bins(bbox, offsets, np.zeros_like(counts), lists, BAND_ROWS)
    tri = np.full((B, height, width), -1, dtype=np.int32)
    zbuf = np.full((B, height, width), np.inf, dtype=np.float32)
    n_jobs = B * n_bands
    args = (P, height, perspective, bbox, offsets, counts, lists, BAND_ROWS, tri, zbuf)
    run_split(_raster_bands, args, n_jobs, counts.reshape(-1))
    return tri, zbuf


@numba.njit(cache=True, nogil=True)
def _compact_fill(tri, pix, face, bb, xx, yy):
    B, H, W = tri.shape
    k = 0
    p = 0
    for b in range(B):
        for y in range(H):
            for x in range(W):
                t = tri[b, y, x]
                if t >= 0:
                    pix[k] = p
                    face[k] = t
                    bb[k] = b
                    yy[k] = y
                    xx[k] = x
                    k += 1
                p += 1


def compact(tri: np.ndarray):
    """Covered pixels of a (B,H,W) id image in raster order -> (pix flat, face, batch, x, y), int64."""
    n = int(np.count_nonzero(tri >= 0))
    out = [np.empty(n, dtype=np.int64) for _ in range(5)]
    _compact_fill(tri, *out)
    return tuple(out)
