"""Silhouette anti-aliasing with gradients to the vertex positions (nvdiffrast-style edge blending).

Hard rasterization gives no gradient where the mesh boundary moves across pixels. ``antialias`` finds pairs of
neighbouring pixels (horizontal or vertical) that a visible *silhouette edge* crosses between their centres, and
blends the two colours by how far the edge reaches: with ``t`` the crossing position measured from the centre of
the pixel on the surface's side (the front pixel), 0..1 pixel,

* ``t > 0.5``: the front surface covers ``t - 0.5`` of the back pixel: ``c_back += (c_front - c_back)(t - 0.5)``;
* ``t < 0.5``: the front pixel is ``0.5 - t`` uncovered: ``c_front += (c_back - c_front)(0.5 - t)``.

``t`` is computed in torch from the edge's two vertices, so colour differences across the silhouette pull the
vertices (and the colours get their gradients as usual).

Which pairs: a silhouette edge is an edge whose two faces face opposite ways on screen, or a boundary edge (one
face); both its faces lie on one side of it on screen (the front side). Every silhouette edge is walked along
the pixel rows it crosses if it is steep (horizontal pairs) or along the columns if it is flat (vertical pairs),
so each edge's coverage is counted once and the blended coverage of a polygon matches its area closely. A
crossing is kept when the pixel on the front side is covered and the other pixel is background or shows
something farther than the edge there (otherwise the edge is hidden). When several edges cross one pixel pair,
the nearest is used. Walking edges rather than pixels (nvdiffrast searches the front pixel's triangle) also
catches silhouettes made of slivers that cover no pixel centre, common on dense meshes at low resolution.
The selection is not differentiable: numba on CPU, torch elsewhere; both give the same pairs.

Composite the background *before* calling ``antialias`` (it blends with what is in the image). To get a soft,
differentiable coverage mask, anti-alias the alpha channel along with the colour (``render_mesh`` does);
:func:`soft_mask` does just that for the mask alone.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from flamefit.render._backend import check_faces, check_float, check_frags_faces, numba_available
from flamefit.render.rasterize import Fragments, _gather_cols, _scatter_cols

# ------------------------------------------------------------------------------------------ topology


@functools.lru_cache(maxsize=16)
def _edge_neighbours_cached(key: tuple, faces_bytes: bytes, F: int) -> np.ndarray:
    faces = np.frombuffer(faces_bytes, dtype=np.int64).reshape(F, 3)
    return edge_neighbours(faces)


def edge_neighbours(faces: np.ndarray) -> np.ndarray:
    """(F,3) faces -> (F,3) int64: the face across edge k (v_k -> v_{k+1}) of each face; -1 for a boundary
    edge or a non-manifold edge (shared by more than two faces)."""
    faces = np.asarray(faces, dtype=np.int64)
    F = faces.shape[0]
    a = faces.reshape(-1)
    b = faces[:, [1, 2, 0]].reshape(-1)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * (int(faces.max()) + 1 if F else 1) + hi
    order = np.argsort(key, kind="stable")
    ks = key[order]
    nbr = np.full(3 * F, -1, dtype=np.int64)
    # runs of equal keys: manifold edges have exactly two half-edges
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    lengths = np.diff(np.r_[starts, ks.size])
    two = starts[lengths == 2]
    e0, e1 = order[two], order[two + 1]
    nbr[e0] = e1 // 3
    nbr[e1] = e0 // 3
    return nbr.reshape(F, 3)


def mesh_edge_neighbours(faces: torch.Tensor) -> torch.Tensor:
    """Cached :func:`edge_neighbours` for a faces tensor (recomputed only when its contents change)."""
    f_cpu = faces.detach().to("cpu", torch.int64).contiguous()
    data = f_cpu.numpy().tobytes()
    nbr = _edge_neighbours_cached((f_cpu.shape[0], hash(data)), data, f_cpu.shape[0])
    return torch.from_numpy(nbr).to(faces.device)


# ------------------------------------------------------------------------------------------ pair selection


def _silhouette_flags_torch(v: torch.Tensor, faces: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    B = v.shape[0]
    F = faces.shape[0]
    xy = v[:, faces, :2]  # (B,F,3,2)
    x0, x1, x2 = xy[..., 0].unbind(-1)
    y0, y1, y2 = xy[..., 1].unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    sign = torch.sign(area).to(torch.int8)  # (B,F)
    sign_nb = torch.gather(sign, 1, nbr.clamp(min=0).reshape(1, -1).expand(B, -1)).view(B, F, 3)
    return (nbr < 0).unsqueeze(0) | (sign_nb != sign.unsqueeze(-1))  # (B,F,3)


def _find_pairs_torch(verts_px: torch.Tensor, faces: torch.Tensor, nbr: torch.Tensor, tri: torch.Tensor,
                      zbuf: torch.Tensor):
    """Reference implementation of ``_aa_numba.find_pairs`` (same rules, same float64 arithmetic, same order)."""
    B, H, W = tri.shape
    V = verts_px.shape[1]
    F = faces.shape[0]
    dev = verts_px.device
    v = verts_px.detach().to(torch.float64)
    sil = _silhouette_flags_torch(v, faces, nbr)
    fidx = torch.arange(F, device=dev).view(1, F, 1)
    keep = sil & ((nbr < 0) | (nbr > fidx))  # a shared edge is walked once, from its higher-index face
    bb, ff, kk = torch.nonzero(keep, as_tuple=True)  # sorted like the numba loops
    va = faces[ff, kk]
    vb = faces[ff, (kk + 1) % 3]
    vc = faces[ff, (kk + 2) % 3]
    pa, pb, pc = v[bb, va], v[bb, vb], v[bb, vc]
    xa, ya, za = pa.unbind(-1)
    xb, yb, zb = pb.unbind(-1)
    xc, yc = pc[:, 0], pc[:, 1]
    side = (xb - xa) * (yc - ya) - (yb - ya) * (xc - xa)
    ok = (side != 0) & torch.isfinite(pa[:, :2]).all(1) & torch.isfinite(pb[:, :2]).all(1)
    steep = (xb - xa).abs() <= (yb - ya).abs()
    lo = torch.where(steep, torch.minimum(ya, yb), torch.minimum(xa, xb))
    hi = torch.where(steep, torch.maximum(ya, yb), torch.maximum(xa, xb))
    n_lines = torch.where(steep, float(H), float(W)).to(torch.float64)
    n_along = torch.where(steep, float(W), float(H)).to(torch.float64)
    j0 = torch.ceil(lo - 0.5).clamp(min=0)
    j1 = torch.minimum(torch.ceil(hi - 0.5) - 1.0, n_lines - 1.0)  # line centres in [lo, hi)
    cnt = torch.where(ok, (j1 - j0 + 1).clamp(min=0), torch.zeros_like(j0)).to(torch.int64)
    e = torch.repeat_interleave(torch.arange(cnt.numel(), device=dev), cnt)  # edge of each crossing
    first = torch.cumsum(cnt, 0) - cnt
    j = j0.to(torch.int64)[e] + torch.arange(e.numel(), device=dev) - first[e]
    cen = j.to(torch.float64) + 0.5
    st = steep[e]
    xa_, ya_, za_, xb_, yb_, zb_ = xa[e], ya[e], za[e], xb[e], yb[e], zb[e]
    r = torch.where(st, (cen - ya_) / (yb_ - ya_), (cen - xa_) / (xb_ - xa_))
    c = torch.where(st, xa_ + (cen - ya_) * (xb_ - xa_) / (yb_ - ya_),
                    ya_ + (cen - xa_) * (yb_ - ya_) / (xb_ - xa_))
    ifl = torch.floor(c - 0.5)  # pixel centres i + 0.5 <= c < i + 1.5
    valid = (ifl >= 0) & (ifl + 1.0 < n_along[e])
    i = torch.where(valid, ifl, torch.zeros_like(ifl)).to(torch.int64)
    up = i.to(torch.float64) + 1.5
    e_hi = torch.where(st, (xb_ - xa_) * (cen - ya_) - (yb_ - ya_) * (up - xa_),
                       (xb_ - xa_) * (up - ya_) - (yb_ - ya_) * (cen - xa_))
    hi_inside = e_hi * side[e] > 0
    ip = torch.where(hi_inside, i + 1, i)
    iq = torch.where(hi_inside, i, i + 1)
    b_ = bb[e]
    pp = torch.where(st, (b_ * H + j) * W + ip, (b_ * H + ip) * W + j)
    qq = torch.where(st, (b_ * H + j) * W + iq, (b_ * H + iq) * W + j)
    pmin = torch.where(st, (b_ * H + j) * W + i, (b_ * H + i) * W + j)
    P = B * H * W
    tri_f = tri.reshape(-1)
    z_f = zbuf.reshape(-1)
    tp = tri_f[pp.clamp(0, P - 1)]
    tq = tri_f[qq.clamp(0, P - 1)]
    zq = z_f[qq.clamp(0, P - 1)].to(torch.float64)
    ze = za_ + r * (zb_ - za_)
    good = valid & (tp >= 0) & ((tq < 0) | (zq > ze))
    axis = torch.where(st, 0, 1)
    pos = torch.nonzero(good).squeeze(1)
    if pos.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        return (empty,) * 5
    key = pmin[pos] * 2 + axis[pos]
    # one entry per pixel pair, placed at its first crossing (as the numba kernel's slots), holding the
    # nearest crossing edge (ties: the first)
    uniq, inv = torch.unique(key, return_inverse=True)
    order = torch.arange(pos.numel(), device=dev)
    first_pos = torch.full((uniq.numel(),), pos.numel(), dtype=torch.int64, device=dev)
    first_pos.scatter_reduce_(0, inv, order, reduce="amin")
    zsel = ze[pos]
    best_z = torch.full((uniq.numel(),), torch.inf, dtype=torch.float64, device=dev)
    best_z.scatter_reduce_(0, inv, zsel, reduce="amin")
    is_best = zsel == best_z[inv]
    best_pos = torch.full((uniq.numel(),), pos.numel(), dtype=torch.int64, device=dev)
    best_pos.scatter_reduce_(0, inv[is_best], order[is_best], reduce="amin")
    slots = torch.argsort(first_pos)
    sel = pos[best_pos[slots]]
    return (pp[sel], qq[sel], b_[sel] * V + va[e][sel], b_[sel] * V + vb[e][sel], axis[sel].to(torch.int64))


def _check_aa_inputs(frags: Fragments, verts_px: torch.Tensor, faces: torch.Tensor) -> None:
    check_float(verts_px, "verts_px")
    if verts_px.dim() != 3 or verts_px.shape[-1] != 3 or verts_px.shape[0] != frags.batch:
        raise ValueError(f"verts_px must be (B,V,3) with B = {frags.batch} as rasterized, got "
                         f"{tuple(verts_px.shape)}")
    check_faces(faces, verts_px.shape[1], of="verts_px")
    check_frags_faces(frags, faces)


def silhouette_pairs(frags: Fragments, verts_px: torch.Tensor, faces: torch.Tensor, *, backend: str = "auto"):
    """The pixel pairs that anti-aliasing blends (not differentiable).

    Returns ``(front_pix, back_pix, edge_a, edge_b, axis)``: (K,) int64 tensors; pixels are flat indices into
    B*H*W, edge vertices are ``b * V + v`` indices into ``verts_px.reshape(-1, 3)``, axis 0 = horizontal pair.
    """
    _check_aa_inputs(frags, verts_px, faces)
    return _silhouette_pairs(frags, verts_px, faces.to(device=verts_px.device, dtype=torch.int64), backend)


def _silhouette_pairs(frags: Fragments, verts_px: torch.Tensor, faces: torch.Tensor, backend: str):
    """:func:`silhouette_pairs` for checked inputs (faces int64 in [0, V) on verts_px's device, B as rasterized)."""
    nbr = mesh_edge_neighbours(faces)
    if backend == "auto":
        backend = "numba" if verts_px.device.type == "cpu" and numba_available() else "torch"
    if backend == "numba":
        from flamefit.render._aa_numba import find_pairs

        out = find_pairs(verts_px.detach().cpu().numpy(), faces.cpu().numpy(), nbr.cpu().numpy(),
                         frags.tri_id.cpu().numpy(), frags.zbuf.cpu().numpy())
        return tuple(torch.from_numpy(out).to(verts_px.device).unbind(0))
    if backend == "torch":
        with torch.no_grad():
            return _find_pairs_torch(verts_px, faces, nbr, frags.tri_id, frags.zbuf)
    raise ValueError(f"unknown antialias backend {backend!r}; use 'auto', 'numba' or 'torch'")


# ------------------------------------------------------------------------------------------ blending


def pair_geometry(pairs, height: int, width: int, dtype: torch.dtype):
    """(front, back, va, vb, horizontal, u_front, s_front, dirn) for ``EdgeBlend`` / ``Composite``:
    the front pixel centre along / across the pair's axis and the direction (+1/-1) from front to back."""
    front, back, va, vb, axis = pairs
    horizontal = axis == 0
    rem = front % (height * width)
    fy = torch.div(rem, width, rounding_mode="floor")
    fx = rem - fy * width
    u_front = torch.where(horizontal, fx, fy).to(dtype) + 0.5
    s_front = torch.where(horizontal, fy, fx).to(dtype) + 0.5
    dirn = torch.where((back - front) > 0, 1.0, -1.0).to(dtype)
    return front, back, va, vb, horizontal, u_front, s_front, dirn


def antialias(color: torch.Tensor, frags: Fragments, verts_px: torch.Tensor, faces: torch.Tensor, *,
              backend: str = "auto", pairs=None) -> torch.Tensor:
    """Blend ``color`` (B,H,W,C) across silhouette edges (see module doc) -> (B,H,W,C).

    Differentiable w.r.t. ``color`` and ``verts_px`` (B,V,3) (only x, y matter). ``pairs`` lets a caller reuse
    the output of :func:`silhouette_pairs` for several images of the same rasterization.
    """
    if color.dim() != 4 or tuple(color.shape[:3]) != (frags.batch, frags.height, frags.width):
        raise ValueError(f"color must be ({frags.batch},{frags.height},{frags.width},C) like the fragments, got "
                         f"{tuple(color.shape)}")
    B, H, W, C = color.shape
    if pairs is None:
        pairs = silhouette_pairs(frags, verts_px, faces, backend=backend)
    else:
        _check_aa_inputs(frags, verts_px, faces)
    if pairs[0].numel() == 0:
        return color
    geo = pair_geometry(pairs, H, W, verts_px.dtype)
    out = EdgeBlend.apply(color.reshape(B * H * W, C), verts_px.reshape(-1, 3), *geo)
    return out.view(B, H, W, C)


def soft_mask(frags: Fragments, verts_px: torch.Tensor, faces: torch.Tensor, *, backend: str = "auto",
              pairs=None) -> torch.Tensor:
    """Coverage mask (B,H,W,1) in 0..1 with gradients to ``verts_px`` at the silhouette (the anti-aliased
    hard mask)."""
    mask = frags.mask.to(verts_px.dtype).unsqueeze(-1)
    return antialias(mask, frags, verts_px, faces, backend=backend, pairs=pairs)


# ------------------------------------------------------------------------------------------ autograd Functions


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
