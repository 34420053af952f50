"""Classical fills of a map's unknown texels, to compare with (and fall back from) the inpainting network.

All take channels-last maps (H,W,3) or (N,H,W,3) RGB 0..1 (torch or numpy) and known masks (H,W)/(N,H,W) bool,
and return the same shape as a torch tensor with the known texels unchanged:

* :func:`fill_opencv`: ``cv2.inpaint`` (Telea's fast marching or Navier-Stokes), per channel in float32;
* :func:`fill_mirror`: copy from the left-right mirrored texel where that one is known. The mirror map comes from
  :func:`mirror_uv_map` (from the mesh: each vertex's x-mirrored twin, its UV, interpolated per texel) or is simply
  ``u -> 1 - u`` (:func:`flip_u_map`); :func:`mirror_uv_error` checks a layout against ``u -> 1 - u``;
* :func:`fill_pca`: the least-squares (ridge) fit of a linear space ``mean + basis @ c`` to the known texels;
* :func:`fill_mean`: a constant (the mean known colour) — the floor any fill must beat;
* :func:`push_pull` / :func:`fill_pushpull`: pyramid fill, with ``smooth_iters`` the membrane (Laplace) fill;
* combinations: :func:`fill_mirror_then_opencv`, :func:`fill_mirror_then_pca`, :func:`fill_mirror_then_pushpull`,
  :func:`fill_mirror_then_membrane`. The pipeline's default completion is chosen in
  :data:`flamefit.texspace.pipeline.DEFAULT_FILL` (OpenCV Telea: the best on maps unwrapped from real fits).

:func:`evaluate_fills` measures PSNR on held-out strokes (visible texels hidden, filled, compared), the protocol
used for the network too.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from flamefit.render.bake import rasterize_uv
from flamefit.render.texture import texture
from flamefit.texspace.strokes import training_holes


def _maps(maps, known) -> tuple[torch.Tensor, torch.Tensor, bool]:
    m = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
    k = known if isinstance(known, torch.Tensor) else torch.as_tensor(np.asarray(known))
    single = m.dim() == 3
    if single:
        m, k = m.unsqueeze(0), k.unsqueeze(0)
    if m.dim() != 4 or m.shape[-1] != 3 or k.shape != m.shape[:3]:
        raise ValueError(f"maps must be (N,H,W,3) with known (N,H,W); got {tuple(m.shape)} and {tuple(k.shape)}")
    if not m.is_floating_point():
        m = m.float()
    return m, k.to(device=m.device, dtype=torch.bool), single


def _out(x: torch.Tensor, single: bool) -> torch.Tensor:
    return x[0] if single else x


def fill_opencv(maps, known, *, method: str = "telea", radius_px: float = 5.0) -> torch.Tensor:
    """``cv2.inpaint`` of the unknown texels (method 'telea' or 'ns'), float32 per channel (no 8-bit rounding).
    Unknown texels are filled from the known ones only (zero them or not, it does not matter)."""
    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
    if method not in flags:
        raise ValueError(f"unknown OpenCV inpainting method {method!r}; use 'telea' or 'ns'")
    m, k, single = _maps(maps, known)
    arr = m.detach().cpu().numpy().astype(np.float32)
    holes = (~k).cpu().numpy().astype(np.uint8)
    out = arr.copy()
    for i in range(arr.shape[0]):
        if not holes[i].any():
            continue
        if not (1 - holes[i]).any():
            continue  # nothing to propagate from
        for c in range(3):
            # float32 single channel, scaled to 0..255: OpenCV's Telea assumes 8-bit-like magnitudes (on 0..1
            # values it returns garbage), and float keeps sub-8-bit precision
            ch = np.ascontiguousarray(arr[i, ..., c] * 255.0)
            out[i, ..., c] = cv2.inpaint(ch, holes[i], radius_px, flags[method]) / 255.0
    res = torch.from_numpy(out).to(device=m.device, dtype=m.dtype)
    return _out(torch.where(k.unsqueeze(-1), m, res), single)


def flip_u_map(height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(H,W,2) UV of each texel's mirror under ``u -> 1 - u``."""
    v = 1.0 - (torch.arange(height, dtype=dtype, device=device) + 0.5) / height
    u = (torch.arange(width, dtype=dtype, device=device) + 0.5) / width
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([1.0 - uu, vv], -1)


def mirror_uv_map(vertices, faces, vt, ft, size: int | tuple[int, int], *, axis: int = 0,
                  max_dist: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror map of a UV layout from the mesh: for every texel, the UV of the mirror image (coordinate ``axis``
    negated, FLAME: x) of its surface point. Each vertex's twin is its nearest vertex after mirroring
    (``max_dist``: ignore twins further away, default 2% of the mesh's extent); a texel's mirror UV interpolates its
    face's twins' UVs with the texel's barycentrics. -> (uv (H,W,2), valid (H,W) bool)."""
    from scipy.spatial import cKDTree

    V = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    Fp = np.asarray(faces, dtype=np.int64)
    vt_np = np.asarray(vt, dtype=np.float64)
    ft_np = np.asarray(ft, dtype=np.int64)
    mirrored = V.copy()
    mirrored[:, axis] *= -1
    dist, twin = cKDTree(V).query(mirrored)
    tol = 0.02 * float(np.ptp(V, axis=0).max()) if max_dist is None else max_dist
    # one UV per vertex (seam vertices have several: any one of them lands on the right part of the face)
    vert_uv = np.zeros((V.shape[0], 2))
    vert_uv[Fp.reshape(-1)] = vt_np[ft_np.reshape(-1)]
    uv = rasterize_uv(torch.as_tensor(vt_np), torch.as_tensor(ft_np), size)
    face = uv.face.numpy()
    bary = uv.bary.detach().numpy()
    corners = Fp[face]  # (N,3) vertex ids
    ok = (dist[corners] <= tol).all(1)
    mir = (vert_uv[twin[corners]] * bary[..., None]).sum(1)
    H, W = uv.height, uv.width
    out = np.zeros((H * W, 2))
    valid = np.zeros(H * W, bool)
    out[uv.texel.numpy()] = mir
    valid[uv.texel.numpy()] = ok
    return torch.from_numpy(out.reshape(H, W, 2)).float(), torch.from_numpy(valid.reshape(H, W))


def mirror_uv_error(mirror_uv: torch.Tensor, valid: torch.Tensor) -> float:
    """Median distance (in UV units) between a mesh-derived mirror map and ``u -> 1 - u``: small (FLAME: < 0.01)
    means the simple flip is good enough."""
    H, W = valid.shape
    flip = flip_u_map(H, W, dtype=mirror_uv.dtype)
    d = (mirror_uv - flip).norm(dim=-1)[valid]
    return float(d.median()) if d.numel() else float("nan")


def fill_mirror(maps, known, mirror_uv: torch.Tensor | None = None, *, min_known: float = 0.99) -> torch.Tensor:
    """Fill unknown texels from their mirror (bilinear at ``mirror_uv`` (H,W,2), default ``u -> 1 - u``) where the
    mirror's bilinear footprint is known (fraction >= ``min_known``). Texels whose mirror is unknown stay as they
    were (zero-filled input stays zero): chain another fill after this one."""
    m, k, single = _maps(maps, known)
    N, H, W, _ = m.shape
    uvm = flip_u_map(H, W, m.dtype, m.device) if mirror_uv is None else mirror_uv.to(m.device, m.dtype)
    kf = k.to(m.dtype).unsqueeze(-1)
    src = texture(torch.cat([m * kf, kf], -1), uvm.expand(N, H, W, 2).contiguous())
    kk = src[..., 3:]
    val = src[..., :3] / kk.clamp_min(1e-6)
    take = (~k) & (kk[..., 0] >= min_known)
    out = torch.where(take.unsqueeze(-1), val, m)
    return _out(out, single)


def mirror_known(known, mirror_uv: torch.Tensor | None = None, min_known: float = 0.99) -> torch.Tensor:
    """Known mask after :func:`fill_mirror`: known, or with a known mirror."""
    k = known if isinstance(known, torch.Tensor) else torch.as_tensor(np.asarray(known))
    single = k.dim() == 2
    k = k.unsqueeze(0) if single else k
    N, H, W = k.shape
    uvm = flip_u_map(H, W) if mirror_uv is None else mirror_uv.float()
    kk = texture(k.float().unsqueeze(-1), uvm.to(k.device).expand(N, H, W, 2).contiguous())[..., 0]
    out = k.bool() | (kk >= min_known)
    return _out(out, single)


def fill_mirror_then_opencv(maps, known, mirror_uv: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """Mirror first, then OpenCV inpainting of what is still unknown."""
    m = fill_mirror(maps, known, mirror_uv)
    return fill_opencv(m, mirror_known(known, mirror_uv), **kwargs)


def push_pull(x: torch.Tensor, weight: torch.Tensor, *, min_size: int = 2, smooth_iters: int = 0) -> torch.Tensor:
    """Push-pull (pyramid) interpolation, channels-first: values (B,C,H,W) known where ``weight`` (B,1,H,W) in
    [0,1] is positive -> a smooth fill everywhere (B,C,H,W). Averages of known values are pushed down a 2x2
    pyramid, then pulled back up: each level keeps its own (weighted) value where it has data and takes the
    upsampled coarser level elsewhere. With ``smooth_iters`` > 0, each level of the pull also relaxes its free
    texels that many Jacobi steps towards the average of their neighbours (a cascadic multigrid solve of Laplace's
    equation: the membrane fill, close to OpenCV's Navier-Stokes inpainting across thin gaps). Differentiable;
    device follows the inputs."""
    xs, ws = [x * weight], [weight]
    while min(xs[-1].shape[-2:]) > min_size:
        xs.append(F.avg_pool2d(xs[-1], 2, ceil_mode=True))
        ws.append(F.avg_pool2d(ws[-1], 2, ceil_mode=True))
    val = xs[-1] / ws[-1].clamp_min(1e-8)
    for level, (xl, wl) in enumerate(zip(reversed(xs[:-1]), reversed(ws[:-1]), strict=True)):
        up = F.interpolate(val, size=xl.shape[-2:], mode="bilinear", align_corners=False)
        a = wl.clamp(0.0, 1.0)
        val = torch.where(wl > 0, xl / wl.clamp_min(1e-8), up) * a + up * (1 - a)
        if smooth_iters > 0:
            fixed = wl >= (1.0 - 1e-6) if level < len(xs) - 2 else wl > 0
            for _ in range(smooth_iters):  # 4-neighbour Jacobi (slices: ~2.5x faster than a 3x3 pooling)
                p = F.pad(val, (1, 1, 1, 1), mode="replicate")
                nb = (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]) * 0.25
                val = torch.where(fixed, val, nb)
    return val


def fill_pushpull(maps, known, *, smooth_iters: int = 0) -> torch.Tensor:
    """Smooth pyramid fill of the unknown texels (:func:`push_pull`; ``smooth_iters`` > 0: membrane fill)."""
    m, k, single = _maps(maps, known)
    kf = k.to(m.dtype).unsqueeze(1)
    pp = push_pull(m.permute(0, 3, 1, 2), kf, smooth_iters=smooth_iters).permute(0, 2, 3, 1)
    return _out(torch.where(k.unsqueeze(-1), m, pp), single)


def fill_mirror_then_pushpull(maps, known, *, smooth_iters: int = 0) -> torch.Tensor:
    """Mirror (``u -> 1 - u``) first, then push-pull: the cheap fill the inpainting network starts from."""
    m = fill_mirror(maps, known)
    return fill_pushpull(m, mirror_known(known), smooth_iters=smooth_iters)


def fill_mirror_then_membrane(maps, known, *, smooth_iters: int = 20) -> torch.Tensor:
    """Mirror, then the membrane fill (push-pull + Jacobi). Best on view-shaped holes of IDEAL maps (true geometry
    and light; 25.8 dB vs 25.3 mirror+OpenCV, 24.0 OpenCV NS, 25.2 the network after 400 CPU steps; see
    flamefit.texspace.measure), but 2-4 dB worse than OpenCV Telea on maps unwrapped from fits, where the mirrored
    side carries the other side's shading errors (``flamefit bench texspace``)."""
    return fill_mirror_then_pushpull(maps, known, smooth_iters=smooth_iters)



def fill_mean(maps, known) -> torch.Tensor:
    """Every unknown texel gets the mean known colour of its map."""
    m, k, single = _maps(maps, known)
    kf = k.to(m.dtype).unsqueeze(-1)
    mean = (m * kf).sum((1, 2)) / kf.sum((1, 2)).clamp_min(1.0)
    return _out(torch.where(k.unsqueeze(-1), m, mean[:, None, None, :].expand_as(m)), single)


def project_onto_space(maps, weight, mean: torch.Tensor, basis: torch.Tensor, *, ridge: float = 1e-3
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted least squares of maps (N,H,W,3) onto ``mean`` (H,W,3) + ``basis`` (K,H,W,3) @ code, with per-texel
    weights (N,H,W) (a bool mask works) and a ridge ``ridge * |code|^2`` (codes in the basis's units: sd for a
    space whose basis is scaled to 1 sd). -> (reconstruction (N,H,W,3), codes (N,K))."""
    m = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
    single = m.dim() == 3
    if single:
        m = m.unsqueeze(0)
    w = weight if isinstance(weight, torch.Tensor) else torch.as_tensor(np.asarray(weight))
    w = (w.unsqueeze(0) if w.dim() == 2 else w).to(device=m.device, dtype=torch.float64)
    N, H, W, _ = m.shape
    mu = mean.to(device=m.device, dtype=torch.float64).reshape(-1)
    Bm = basis.to(device=m.device, dtype=torch.float64).reshape(basis.shape[0], -1)  # (K,D)
    K = Bm.shape[0]
    if K == 0:
        rec = mu.view(1, H, W, 3).expand(N, H, W, 3)
        return _out(rec.to(m.dtype), single), m.new_zeros(N, 0)
    eye = torch.eye(K, dtype=torch.float64, device=m.device)
    codes = []
    for i in range(N):  # normal equations per map: (B W B^T + ridge I) c = B W r (one (K,D) temporary at a time)
        wt = w[i].unsqueeze(-1).expand(H, W, 3).reshape(-1)
        r = m[i].to(torch.float64).reshape(-1) - mu
        Bw = Bm * wt
        codes.append(torch.linalg.solve(Bw @ Bm.T + ridge * eye, Bw @ r))
    code = torch.stack(codes)
    rec = (mu + code @ Bm).view(N, H, W, 3)
    return _out(rec.to(m.dtype), single), code.to(m.dtype)


def fill_pca(maps, known, mean: torch.Tensor, basis: torch.Tensor, *, ridge: float = 1e-3) -> torch.Tensor:
    """Fill unknown texels with the projection of the known ones onto a linear space (e.g. the starting space)."""
    m, k, single = _maps(maps, known)
    rec, _ = project_onto_space(m, k, mean, basis, ridge=ridge)
    return _out(torch.where(k.unsqueeze(-1), m, rec.clamp(0.0, 1.0)), single)


def fill_mirror_then_pca(maps, known, mean: torch.Tensor, basis: torch.Tensor, mirror_uv: torch.Tensor | None = None,
                         **kwargs) -> torch.Tensor:
    """Mirror first (real observations beat a model), then the space's projection for the rest."""
    m = fill_mirror(maps, known, mirror_uv)
    return fill_pca(m, mirror_known(known, mirror_uv), mean, basis, **kwargs)


# ---------------------------------------------------------------------------------------------- evaluation


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, peak: float = 1.0) -> float:
    """PSNR (dB) over the texels of ``mask`` (N,H,W) between maps (N,H,W,3) in 0..peak."""
    mse = ((a.double() - b.double()) ** 2)[mask.bool()].mean()
    return float(10.0 * torch.log10(peak * peak / mse.clamp_min(1e-20)))


FillFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def held_out_masks(visible: torch.Tensor, seed: int, **stroke_kwargs) -> torch.Tensor:
    """Held-out strokes (N,H,W) bool inside ``visible``, reproducible from ``seed`` (the training stroke
    generator, :func:`flamefit.texspace.strokes.training_holes`)."""
    return training_holes(visible.bool(), torch.Generator().manual_seed(int(seed)), **stroke_kwargs)


def evaluate_fills(maps: torch.Tensor, visible: torch.Tensor, fills: dict[str, FillFn], *, seed: int = 1234,
                   holes: torch.Tensor | None = None, **stroke_kwargs) -> dict[str, dict]:
    """PSNR of each fill on held-out strokes: strokes inside the visible texels are hidden (``holes``, default
    :func:`held_out_masks` from ``seed``), each fill sees ``visible & ~holes`` and is scored on the holes only.

    -> {name: {"psnr_db": pooled PSNR over all hole texels, "psnr_db_per_map_mean": mean of per-map PSNRs,
    "hole_texels": count}}. Maps (N,H,W,3) RGB 0..1, visible (N,H,W) bool."""
    visible = visible.bool()
    if holes is None:
        holes = held_out_masks(visible, seed, **stroke_kwargs)
    holes = holes & visible
    known = visible & ~holes
    inp = maps * known.unsqueeze(-1).to(maps.dtype)  # fills never see the hidden texels
    out = {}
    for name, fn in fills.items():
        filled = fn(inp, known)
        per = [psnr(filled[i:i + 1], maps[i:i + 1], holes[i:i + 1]) for i in range(maps.shape[0]) if holes[i].any()]
        out[name] = {"psnr_db": psnr(filled, maps, holes), "psnr_db_per_map_mean": float(np.mean(per)),
                     "hole_texels": int(holes.sum())}
    return out
