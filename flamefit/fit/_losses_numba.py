"""Numba CPU kernels for :func:`flamefit.fit.losses.photometric_loss_clipped`: one pass over the image forward
and one backward (the torch formulation makes a dozen full-image temporaries every iteration)."""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True)
def photo_forward(rgb, image, skin, alpha, s2, num, mass):
    """rgb, image (B,P,3), skin, alpha (B,P) -> num[b] = sum rho * w, mass[b] = sum w (float64 sums)."""
    B, P = skin.shape
    for b in range(B):
        acc = 0.0
        m = 0.0
        for i in range(P):
            w = skin[b, i] * alpha[b, i]
            if w == 0.0:
                continue
            r2 = 0.0
            for c in range(3):
                v = min(max(rgb[b, i, c], 0.0), 1.0) - image[b, i, c]
                r2 += v * v
            acc += w * (r2 / (r2 + s2))
            m += w
        num[b] = acc
        mass[b] = m


@numba.njit(cache=True, nogil=True)
def photo_backward(rgb, image, skin, alpha, s2, gl, sub, want_rgb, want_skin, want_alpha, g_rgb, g_skin, g_alpha):
    """gl[b] = g / norm, sub[b] = loss [mass > 1] -> g_rgb (B,P,3), g_skin and g_alpha (B,P) (those wanted;
    d loss / d w = (rho - sub) gl with w = skin * alpha)."""
    B, P = skin.shape
    for b in range(B):
        gb = gl[b]
        sb = sub[b]
        for i in range(P):
            sk = skin[b, i]
            al = alpha[b, i]
            if sk == 0.0 and not want_skin:  # no weight: no gradient (most of the image)
                if want_alpha:
                    g_alpha[b, i] = 0.0
                if want_rgb:
                    g_rgb[b, i, 0] = 0.0
                    g_rgb[b, i, 1] = 0.0
                    g_rgb[b, i, 2] = 0.0
                continue
            d0 = min(max(rgb[b, i, 0], 0.0), 1.0) - image[b, i, 0]
            d1 = min(max(rgb[b, i, 1], 0.0), 1.0) - image[b, i, 1]
            d2 = min(max(rgb[b, i, 2], 0.0), 1.0) - image[b, i, 2]
            r2 = d0 * d0 + d1 * d1 + d2 * d2
            den = r2 + s2
            inv = 1.0 / den
            if want_skin or want_alpha:
                gw = (r2 * inv - sb) * gb
                if want_skin:
                    g_skin[b, i] = gw * al
                if want_alpha:
                    g_alpha[b, i] = gw * sk
            if want_rgb:
                k = gb * 2.0 * s2 * sk * al * inv * inv
                x = rgb[b, i, 0]
                g_rgb[b, i, 0] = k * d0 if (x >= 0.0 and x <= 1.0) else 0.0
                x = rgb[b, i, 1]
                g_rgb[b, i, 1] = k * d1 if (x >= 0.0 and x <= 1.0) else 0.0
                x = rgb[b, i, 2]
                g_rgb[b, i, 2] = k * d2 if (x >= 0.0 and x <= 1.0) else 0.0
