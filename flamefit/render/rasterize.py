"""Rasterization: screen-space triangles -> per-pixel triangle id, barycentrics and depth.

``rasterize(verts_px, faces, height, width)`` takes vertices already in pixels, ``verts_px`` (B,V,3) =
``(x_px, y_px, depth)`` as returned by ``camera.project`` (pixel centres at +0.5, y down; smaller depth is
nearer) and faces (F,3) int64 shared by the batch. It runs in two passes:

1. **Visibility** (not differentiable): which triangle covers each pixel *centre*, with a z-buffer. A pixel
   centre exactly on an edge belongs to both triangles and the z-test (then the lower face index) decides, so
   meshes have no cracks. There is no back-face culling and no near-plane clipping: with
   ``perspective_correct=True`` triangles with a vertex at depth <= 0 are dropped. Two implementations give
   identical ids: a numba kernel (CPU, parallel over row bands) and a pure-torch one (any device, used on CUDA
   and when numba is missing); pick with ``backend='auto'|'numba'|'torch'``.
2. **Barycentrics** (differentiable w.r.t. ``verts_px``): for covered pixels only, from per-face affine
   coefficients gathered per pixel, in an autograd Function with a hand-written backward (``RasterBary``, below;
   numba kernels on CPU, torch ops elsewhere). With ``perspective_correct=True`` (pass it for a perspective camera)
   the barycentrics are perspective-correct and the depth is ``1 / sum(b_i / z_i)``; otherwise both are linear
   in screen space (exact for orthographic cameras). Hard rasterization has no gradient at silhouettes — use
   :func:`flamefit.render.antialias` for that.

The result, :class:`Fragments`, stores the covered pixels *packed* (``pix``: flat indices into B*H*W, and their
``pix_tri``, ``pix_bary``, ``pix_depth``); the full images ``tri_id``, ``bary``, ``depth`` and ``mask`` are
built on first access. Work on the packed form (``interpolate(..., packed=True)``, ``frags.unpack``) to keep
per-pixel work proportional to the covered area.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from flamefit.render._backend import (
    check_faces,
    check_float,
    check_image_size,
    corner_index,
    gather_corners,
    numba_available,
    numba_for,
    scatter_corners,
)

_INT64_MAX = torch.iinfo(torch.int64).max


@dataclass
class Fragments:
    """Output of :func:`rasterize`.

    Packed attributes (N = number of covered pixels over the batch, in raster order, grouped by image):
        pix: (N,) int64 flat index into B*H*W.
        pix_tri: (N,) int64 face index.
        pix_batch: (N,) int64 image index.
        pix_x, pix_y: (N,) int64 pixel column and row.
        pix_bary_t: (3,N) barycentrics (differentiable), "structure of arrays" (fast per-pixel maths);
            ``pix_bary`` is the same as (N,3).
        pix_depth: (N,) depth (differentiable).
        batch, height, width: image grid.
        perspective_correct: how barycentrics were computed.
    Full images (built on first access): ``tri_id`` (B,H,W) int64 (-1 = background), ``bary`` (B,H,W,3),
    ``depth`` (B,H,W) (0 on background), ``mask`` (B,H,W) bool, ``zbuf`` (B,H,W) (detached, +inf on background).
    """

    pix: torch.Tensor
    pix_tri: torch.Tensor
    pix_batch: torch.Tensor
    pix_x: torch.Tensor
    pix_y: torch.Tensor
    pix_bary_t: torch.Tensor
    pix_depth: torch.Tensor
    batch: int
    height: int
    width: int
    perspective_correct: bool
    _tri_image: torch.Tensor | None = None
    _zbuf: torch.Tensor | None = None
    num_faces: int | None = None  # F of the rasterized faces (ops given faces with these fragments check it)

    @property
    def num_pixels(self) -> int:
        return self.batch * self.height * self.width

    @property
    def pix_bary(self) -> torch.Tensor:
        """(N,3) view of ``pix_bary_t``."""
        return self.pix_bary_t.t()

    @functools.cached_property
    def counts(self) -> list[int]:
        """Covered pixels per image (python ints)."""
        if self.batch == 1:
            return [int(self.pix.shape[0])]
        return torch.bincount(self.pix_batch, minlength=self.batch).tolist()

    @functools.cached_property
    def tri_id(self) -> torch.Tensor:
        if self._tri_image is not None:
            return self._tri_image
        out = torch.full((self.num_pixels,), -1, dtype=torch.int64, device=self.pix.device)
        out[self.pix] = self.pix_tri
        return out.view(self.batch, self.height, self.width)

    @functools.cached_property
    def zbuf(self) -> torch.Tensor:
        """(B,H,W) float32 z-buffer of the visibility pass (detached; +inf on background)."""
        if self._zbuf is not None:
            return self._zbuf
        out = torch.full((self.num_pixels,), float("inf"), dtype=torch.float32, device=self.pix.device)
        out[self.pix] = self.pix_depth.detach().to(torch.float32)
        return out.view(self.batch, self.height, self.width)

    @functools.cached_property
    def mask(self) -> torch.Tensor:
        return self.tri_id >= 0

    @functools.cached_property
    def bary(self) -> torch.Tensor:
        return self.unpack(self.pix_bary)

    @functools.cached_property
    def depth(self) -> torch.Tensor:
        return self.unpack(self.pix_depth)

    def unpack(self, values: torch.Tensor, background: torch.Tensor | float = 0.0) -> torch.Tensor:
        """Packed (N,...) values -> full (B,H,W,...) image; background pixels get ``background``
        (a scalar, or a tensor broadcastable to (B,H,W,...)). Differentiable w.r.t. both."""
        self._check_packed(values.shape[0] if values.dim() else -1, "values (N,...)")
        tail = values.shape[1:]
        shape = (self.batch, self.height, self.width) + tail
        if isinstance(background, torch.Tensor):
            full = background.to(values.dtype).expand(shape).reshape((self.num_pixels,) + tail)
        else:
            full = values.new_full((self.num_pixels,) + tail, float(background))
        return full.index_put((self.pix,), values).view(shape)

    def unpack_t(self, values_t: torch.Tensor, background: torch.Tensor | float = 0.0) -> torch.Tensor:
        """Packed (C,N) values -> (B,H,W,C) image (faster than ``unpack(values_t.t())``)."""
        if values_t.dim() != 2:
            raise ValueError(f"values_t must be (C,N), got {tuple(values_t.shape)}")
        self._check_packed(values_t.shape[1], "values_t (C,N)")
        C = values_t.shape[0]
        shape = (self.batch, self.height, self.width, C)
        if isinstance(background, torch.Tensor):
            base = background.to(values_t.dtype).expand(shape).reshape(self.num_pixels, C)
        else:
            base = values_t.new_full((self.num_pixels, C), float(background))
        return Unpack.apply(values_t, self.pix, base).view(shape)

    def _check_packed(self, n: int, what: str) -> None:
        if n != self.pix.shape[0]:
            raise ValueError(f"{what} has {n} pixels but the fragments cover {self.pix.shape[0]}")

    def pack(self, image: torch.Tensor) -> torch.Tensor:
        """Full (B,H,W,...) image -> (N,...) values at the covered pixels."""
        if tuple(image.shape[:3]) != (self.batch, self.height, self.width):
            raise ValueError(f"image must be ({self.batch},{self.height},{self.width},...) like the fragments, "
                             f"got {tuple(image.shape)}")
        return image.reshape((self.num_pixels,) + image.shape[3:])[self.pix]


def rasterize(verts_px: torch.Tensor, faces: torch.Tensor, height: int, width: int, *,
              perspective_correct: bool = False, backend: str = "auto") -> Fragments:
    """Rasterize triangles given in pixels. See the module docstring.

    Args:
        verts_px: (B,V,3) ``(x_px, y_px, depth)``; float32 or float64. A face with a NaN/inf vertex covers no
            pixel; finite coordinates of any size are safe (clipped to the image).
        faces: (F,3) int64 (any integer dtype is accepted), indices in [0, V) (ValueError otherwise).
        height, width: output size in pixels, in [1, ``MAX_IMAGE_SIDE_PX``].
        perspective_correct: perspective-correct barycentrics/depth (for perspective cameras; needs depth > 0).
        backend: visibility pass: 'numba' (CPU), 'torch' (any device), or 'auto' (numba on CPU when installed).
    """
    check_float(verts_px, "verts_px")
    if verts_px.dim() != 3 or verts_px.shape[-1] != 3:
        raise ValueError(f"verts_px must be (B,V,3), got {tuple(verts_px.shape)}")
    height, width = check_image_size(height, width, "rasterize")
    faces = check_faces(faces, verts_px.shape[1], of="verts_px").to(device=verts_px.device)
    return _rasterize(verts_px, faces, height, width, perspective_correct, backend)


def _rasterize(verts_px: torch.Tensor, faces: torch.Tensor, height: int, width: int, perspective_correct: bool,
               backend: str) -> Fragments:
    """:func:`rasterize` for checked inputs (float (B,V,3) verts, int64 faces in [0, V), sizes in range)."""
    B = verts_px.shape[0]
    if backend == "auto":
        backend = "numba" if verts_px.device.type == "cpu" and numba_available() else "torch"
    with torch.no_grad():
        if backend == "numba":
            from flamefit.render._raster_numba import compact, rasterize_numba

            tri_np, zbuf_np = rasterize_numba(verts_px.detach().cpu().numpy(), faces.cpu().numpy(), height, width,
                                              bool(perspective_correct))
            pix, pix_tri, pix_batch, pix_x, pix_y = (torch.from_numpy(a) for a in compact(tri_np))
            tri_img = torch.from_numpy(tri_np).to(torch.int64)
            zbuf = torch.from_numpy(zbuf_np)
        elif backend == "torch":
            tri_img, zbuf = _visibility_torch(verts_px, faces, height, width, perspective_correct)
            flat = tri_img.view(-1)
            pix = torch.nonzero(flat >= 0).squeeze(1)
            pix_tri = flat[pix]
            hw = height * width
            pix_batch = torch.div(pix, hw, rounding_mode="floor")
            rem = pix - pix_batch * hw
            pix_y = torch.div(rem, width, rounding_mode="floor")
            pix_x = rem - pix_y * width
        else:
            raise ValueError(f"unknown rasterizer backend {backend!r}; use 'auto', 'numba' or 'torch'")
    pix_x, pix_y = pix_x.to(torch.int64), pix_y.to(torch.int64)
    bary_t, depth = _barycentrics(verts_px, faces, pix_tri, pix_batch, pix_x, pix_y, perspective_correct)
    return Fragments(pix=pix, pix_tri=pix_tri, pix_batch=pix_batch, pix_x=pix_x, pix_y=pix_y, pix_bary_t=bary_t,
                     pix_depth=depth, batch=B, height=height, width=width, perspective_correct=perspective_correct,
                     _tri_image=tri_img, _zbuf=zbuf, num_faces=int(faces.shape[0]))


# ------------------------------------------------------------------------------------------ barycentrics


def _barycentrics(verts_px: torch.Tensor, faces: torch.Tensor, pix_tri: torch.Tensor, pix_batch: torch.Tensor,
                  pix_x: torch.Tensor, pix_y: torch.Tensor, perspective_correct: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable barycentrics (3,N) and depth (N,) for the covered pixels.

    Per face (cheap, F-sized): b_i(p) = A_i (px - x0) + B_i (py - y0) + [i == 0]; relative to vertex 0 so that
    float32 stays accurate for small triangles far from the origin. Per pixel: one gather and a few products
    (``RasterBary``, below, with a hand-written backward).
    """
    B, V, _ = verts_px.shape
    F = faces.shape[0]
    cidx = None if numba_for(verts_px) else corner_index(faces, B, V)  # the numba kernels index faces directly
    gidx = pix_batch * F + pix_tri if B > 1 else pix_tri
    return RasterBary.apply(verts_px, cidx, gidx, pix_x, pix_y, bool(perspective_correct), faces)


# ------------------------------------------------------------------------------------------ visibility


def _ordered_depth_key(depth64: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """(depth as float32, face) -> int64 key whose integer order is the lexicographic order."""
    bits = depth64.to(torch.float32).view(torch.int32)
    # negative floats: flip the magnitude bits so that signed-int order == float order
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits.to(torch.int64) << 32) | face


def _visibility_torch(verts_px, faces, height, width, perspective_correct, max_candidates: int = 1 << 22):
    """Pure-torch z-buffer: expand every face to the pixel centres of its bounding box, test, scatter-min."""
    B = verts_px.shape[0]
    F = faces.shape[0]
    dev = verts_px.device
    v = verts_px.detach().to(torch.float64)[:, faces]  # (B,F,3,3)
    x, y, z = v.unbind(-1)
    finite = torch.isfinite(v).all(-1).all(-1)
    x0, x1, x2 = x.unbind(-1)
    y0, y1, y2 = y.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    valid = finite & (area != 0)
    if perspective_correct:
        valid &= (z > 0).all(-1)
    cx0 = torch.ceil(x.amin(-1) - 0.5).clamp(min=0)
    cx1 = torch.floor(x.amax(-1) - 0.5).clamp(max=width - 1)
    cy0 = torch.ceil(y.amin(-1) - 0.5).clamp(min=0)
    cy1 = torch.floor(y.amax(-1) - 0.5).clamp(max=height - 1)
    nx = (cx1 - cx0 + 1).clamp(min=0)
    ny = (cy1 - cy0 + 1).clamp(min=0)
    n = torch.where(valid, nx * ny, torch.zeros_like(nx)).to(torch.int64).reshape(-1)  # (B*F,)
    keys = torch.full((B * height * width,), _INT64_MAX, dtype=torch.int64, device=dev)

    # per-face constants, exactly as ``_raster_numba._setup`` computes them
    safe_area = torch.where(area == 0, torch.ones_like(area), area)
    w = 1.0 / z if perspective_correct else z
    P = torch.stack([x0, y0, x1, y1, x2, y2, x2 - x1, y2 - y1, x0 - x2, y0 - y2, x1 - x0, y1 - y0,
                     1.0 / safe_area, torch.where(area > 0, 1.0, -1.0).to(area.dtype),
                     w[..., 0], w[..., 1], w[..., 2]], -1).reshape(B * F, 17)
    cx0, cy0, nx = cx0.reshape(-1).to(torch.int64), cy0.reshape(-1).to(torch.int64), nx.reshape(-1).to(torch.int64)
    # chunk faces so that the candidate list stays bounded in memory
    csum = torch.cumsum(n, 0)
    total = int(csum[-1]) if n.numel() else 0
    start_face = 0
    done = 0
    while done < total:
        end_face = int(torch.searchsorted(csum, done + max_candidates, right=True))
        end_face = max(end_face, start_face + 1)
        cnt = n[start_face:end_face]
        sel = torch.arange(start_face, end_face, device=dev)
        m = int(cnt.sum())
        if m:
            idx = torch.repeat_interleave(sel, cnt)  # flat (b*F + f) per candidate
            first = torch.cumsum(cnt, 0) - cnt
            off = torch.arange(m, device=dev) - torch.repeat_interleave(first, cnt)
            row_len = nx[idx]
            pxi = cx0[idx] + off % row_len
            pyi = cy0[idx] + torch.div(off, row_len, rounding_mode="floor")
            px = pxi.to(torch.float64) + 0.5
            py = pyi.to(torch.float64) + 0.5
            pf = P[idx]  # same per-face constants and operation order as the numba kernel
            e0 = pf[:, 6] * (py - pf[:, 3]) - pf[:, 7] * (px - pf[:, 2])
            e1 = pf[:, 8] * (py - pf[:, 5]) - pf[:, 9] * (px - pf[:, 4])
            e2 = pf[:, 10] * (py - pf[:, 1]) - pf[:, 11] * (px - pf[:, 0])
            sgn = pf[:, 13]
            inside = (e0 * sgn >= 0) & (e1 * sgn >= 0) & (e2 * sgn >= 0)
            inv_area = pf[:, 12]
            d = e0 * inv_area * pf[:, 14] + e1 * inv_area * pf[:, 15] + e2 * inv_area * pf[:, 16]
            if perspective_correct:
                d = 1.0 / d
            bi = torch.div(idx, F, rounding_mode="floor")
            fi = idx - bi * F
            target = (bi * height + pyi) * width + pxi
            key = _ordered_depth_key(d[inside], fi[inside])
            keys.scatter_reduce_(0, target[inside], key, reduce="amin")
        done = int(csum[end_face - 1])
        start_face = end_face
    empty = keys == _INT64_MAX
    tri = torch.where(empty, torch.full_like(keys, -1), keys & 0xFFFFFFFF)
    bits = (keys >> 32).to(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    zbuf = torch.where(empty, float("inf"), bits.view(torch.float32))
    return tri.view(B, height, width), zbuf.view(B, height, width)


# ------------------------------------------------------------------------------------------ autograd Functions


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
        if faces is not None and numba_for(verts):
            from flamefit.render import _pixel_numba as pn

            verts_c = verts.detach().contiguous()
            M = verts.shape[0] * faces.shape[0]
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
        corners = gather_corners(verts, cidx)
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
        g_verts = scatter_corners(torch.stack([gX, gY, gZ]), cidx, ctx.shape)
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


def _scatter_cols(values: torch.Tensor, pix: torch.Tensor, out: torch.Tensor) -> None:
    """out[pix[n], :] = values[:, n] (values (C,N), out (P,C), in place)."""
    if numba_for(out) and values.dtype == out.dtype:
        from flamefit.render import _pixel_numba as pn

        pn.scatter_cols(values.contiguous().numpy(), pix.numpy(), out.numpy())
    else:
        out.index_put_((pix,), values.t())


def _gather_cols(img: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """(P,C) image rows at pix -> (C,N)."""
    if numba_for(img):
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
