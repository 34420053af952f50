"""PCA over completed albedo maps -> a texture space in the official ``FLAME_texture.npz`` layout.

:func:`fit_pca` works inside a region (the texels the UV layout covers), with optional per-map weights (weighted
mean and covariance), in float64 via the Gram matrix (N x N, for N maps < D texel values: the usual case,
N up to thousands and D = H*W*3 ~ 2e5 at 256^2) or the covariance (D x D, when D <= N), or a randomized SVD
(``torch.svd_lowrank``) when only a few components of many maps are wanted. Components are scaled to 1 sd.

:func:`save_texture_space` writes ``mean`` (H,W,3), ``tex_dir`` (H,W,3,K) (1 unit = 1 sd), ``vt``, ``ft`` in BGR
0..255 float32 (converted from RGB 0..1 here, at the writer), plus ``explained_variance_ratio`` (K,) and
``explained_variance`` (K,) (RGB 0..1 units^2) and ``region`` (H,W) bool, atomically; it loads with
:func:`flamefit.model.texture_space.load_texture_space`. Texel row 0 is ``v = 1``, as in the files.

:func:`preview_grid` draws the first components at -2, 0, +2 sd (the figure FLAME's texture-space authors show),
as UV maps or rendered on a mesh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flamefit._files import atomic_path
from flamefit.errors import ConfigError


@dataclass
class PCAResult:
    """mean (H,W,3), components (K,H,W,3) scaled to 1 sd, RGB 0..1; explained_variance (K,) (sum of per-value
    variances along each component), explained_variance_ratio (K,) (of the total variance in the region);
    region (H,W) bool; n_maps."""

    mean: torch.Tensor
    components: torch.Tensor
    explained_variance: torch.Tensor
    explained_variance_ratio: torch.Tensor
    region: torch.Tensor
    n_maps: int


def fit_pca(maps: torch.Tensor, n_components: int, *, region: torch.Tensor | None = None,
            weights: torch.Tensor | None = None, method: str = "auto", outside: str = "region_mean",
            seed: int = 0, compute_dtype: torch.dtype | None = None) -> PCAResult:
    """PCA of maps (N,H,W,3) RGB 0..1 inside ``region`` (H,W) bool (default: all texels).

    Args:
        n_components: K <= min(N - 1, D) components kept.
        weights: (N,) non-negative per-map weights (e.g. fit quality); default equal.
        method: 'gram' (N x N eigendecomposition), 'cov' (D x D), 'randomized' (``torch.svd_lowrank``), or
            'auto' (gram when N <= D, else cov).
        outside: the mean outside the region: 'region_mean' (the average colour inside, so bilinear lookups at
            the layout's borders do not bleed black) or 'zero'. Components are zero outside the region.
        seed: for the randomized method only (a local generator).
        compute_dtype: float64 by default while the centred data stay under ~400 MB, else float32 (the Gram
            matrix is then accumulated in float64 from float32 blocks).
    """
    if maps.dim() != 4 or maps.shape[-1] != 3:
        raise ValueError(f"maps must be (N,H,W,3), got {tuple(maps.shape)}")
    N, H, W, _ = maps.shape
    dev = maps.device
    reg = torch.ones(H, W, dtype=torch.bool, device=dev) if region is None else region.to(dev).bool()
    if reg.shape != (H, W):
        raise ValueError(f"region {tuple(reg.shape)} does not match the maps ({H}x{W})")
    idx = torch.nonzero(reg.reshape(-1)).squeeze(1)
    D = int(idx.numel()) * 3
    if N < 2:
        raise ConfigError(f"PCA needs at least 2 maps, got {N}")
    K = int(n_components)
    if K < 1 or K > min(N - 1, D):
        raise ConfigError(f"cannot keep {K} components from {N} maps of {D} values (at most {min(N - 1, D)})")
    if compute_dtype is None:
        compute_dtype = torch.float64 if N * D <= 5e7 else torch.float32
    X = maps.reshape(N, H * W, 3).index_select(1, idx).reshape(N, D).to(compute_dtype)
    if weights is None:
        w = torch.full((N,), 1.0 / N, dtype=torch.float64, device=dev)
    else:
        w = torch.as_tensor(weights, dtype=torch.float64, device=dev).reshape(-1)
        if w.shape[0] != N or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be N non-negative numbers with a positive sum")
        w = w / w.sum()
    mu = (w.to(compute_dtype) @ X).to(torch.float64)  # (D,)
    # unbiased weighted covariance (reliability weights): sum w_i x_i x_i^T / (1 - sum w_i^2)
    scale = 1.0 / (1.0 - float((w * w).sum()))
    Xc = X.sub_(mu.to(compute_dtype)).mul_((w * scale).sqrt().to(compute_dtype).unsqueeze(1))  # cov = Xc^T Xc
    del X
    total_var = sum(float(b.double().pow(2).sum()) for b in Xc.split(16384, dim=1))
    if method == "auto":
        method = "gram" if N <= D else "cov"
    if method == "gram":
        G = torch.zeros(N, N, dtype=torch.float64, device=dev)
        for blk in Xc.split(16384, dim=1):  # float64 accumulation over blocks of values
            b = blk.double()
            G += b @ b.T
        evals, evecs = torch.linalg.eigh(G)
        evals, evecs = evals.flip(0)[:K], evecs.flip(1)[:, :K]
        comps = (evecs.T.to(compute_dtype) @ Xc).double()  # (K,D), norms sqrt(eval)
        comps = comps / comps.norm(dim=1, keepdim=True).clamp_min(1e-30)
    elif method == "cov":
        C = Xc.T.double() @ Xc.double()
        evals, evecs = torch.linalg.eigh(C)
        evals, comps = evals.flip(0)[:K], evecs.flip(1)[:, :K].T.contiguous()
    elif method == "randomized":
        evals, comps = _randomized_pca(Xc.double() if N * D <= 5e7 else Xc, K, seed)
        evals, comps = evals.double(), comps.double()
    else:
        raise ValueError(f"unknown PCA method {method!r}; use 'auto', 'gram', 'cov' or 'randomized'")
    evals = evals.clamp_min(0.0)
    # a sign convention makes repeated builds comparable: the largest-magnitude value of each component is positive
    sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True))).clamp_min(0) * 2 - 1
    comps = comps * sign
    sd_comps = comps * evals.sqrt().unsqueeze(1)
    mean_full = torch.zeros(H * W, 3, dtype=torch.float64, device=dev)
    if outside == "region_mean":
        mean_full[:] = mu.view(-1, 3).mean(0)
    elif outside != "zero":
        raise ValueError(f"outside must be 'region_mean' or 'zero', got {outside!r}")
    mean_full[idx] = mu.view(-1, 3)
    comp_full = torch.zeros(K, H * W, 3, dtype=torch.float64, device=dev)
    comp_full[:, idx] = sd_comps.view(K, -1, 3)
    dt = maps.dtype if maps.is_floating_point() else torch.float32
    return PCAResult(
        mean=mean_full.view(H, W, 3).to(dt), components=comp_full.view(K, H, W, 3).to(dt),
        explained_variance=evals.to(dt),
        explained_variance_ratio=(evals / max(total_var, 1e-30)).to(dt), region=reg, n_maps=N,
    )


def _randomized_pca(Xc: torch.Tensor, K: int, seed: int, oversample: int = 10, power_iters: int = 4
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Halko et al.'s randomized range finder on Xc (N,D) with a local generator -> (eigenvalues (K,), (K,D))."""
    N, D = Xc.shape
    q = min(K + oversample, N, D)
    gen = torch.Generator().manual_seed(int(seed))
    omega = torch.randn(N, q, generator=gen, dtype=Xc.dtype).to(Xc.device)
    Y = Xc.T @ omega  # (D,q): range of the row space
    for _ in range(power_iters):
        Y, _ = torch.linalg.qr(Y)
        Y = Xc.T @ (Xc @ Y)
    Q, _ = torch.linalg.qr(Y)  # (D,q)
    _, S, Vh = torch.linalg.svd(Xc @ Q, full_matrices=False)  # (N,q) small
    return S[:K] ** 2, (Vh[:K] @ Q.T).contiguous()


def _atomic_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def save_texture_space(path: str | Path, mean, components, vt, ft, *, explained_variance_ratio=None,
                       explained_variance=None, region=None, extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write a texture space as ``FLAME_texture.npz`` (see the module doc): ``mean`` (H,W,3) and ``components``
    (K,H,W,3) RGB 0..1, 1 unit = 1 sd -> BGR 0..255 ``mean`` and ``tex_dir`` (H,W,3,K); ``vt`` (T,2), ``ft`` (F,3).
    Returns the path. ``extra`` adds more arrays (keys must not clash)."""
    path = Path(path)

    def np_(x):
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    mean_rgb = np_(mean).astype(np.float64)
    comps = np_(components).astype(np.float64)
    if mean_rgb.ndim != 3 or mean_rgb.shape[-1] != 3 or comps.ndim != 4 or comps.shape[1:] != mean_rgb.shape:
        raise ValueError(f"mean must be (H,W,3) and components (K,H,W,3); got {mean_rgb.shape}, {comps.shape}")
    arrays = {
        "mean": (mean_rgb[..., ::-1] * 255.0).astype(np.float32),
        "tex_dir": (np.moveaxis(comps, 0, -1)[..., ::-1, :] * 255.0).astype(np.float32),  # (H,W,3,K) BGR
        "vt": np_(vt).astype(np.float64),
        "ft": np_(ft).astype(np.uint32),
    }
    if explained_variance_ratio is not None:
        arrays["explained_variance_ratio"] = np_(explained_variance_ratio).astype(np.float64)
    if explained_variance is not None:
        arrays["explained_variance"] = np_(explained_variance).astype(np.float64)
    if region is not None:
        arrays["region"] = np_(region).astype(bool)
    for k, v in (extra or {}).items():
        if k in arrays:
            raise ValueError(f"extra key {k!r} clashes with a texture-space key")
        arrays[k] = np.asarray(v)
    _atomic_npz(path, arrays)
    return path


def save_pca(path: str | Path, result: PCAResult, vt, ft) -> Path:
    """:func:`save_texture_space` for a :class:`PCAResult`."""
    return save_texture_space(path, result.mean, result.components, vt, ft,
                              explained_variance_ratio=result.explained_variance_ratio,
                              explained_variance=result.explained_variance, region=result.region,
                              extra={"n_maps": np.array(result.n_maps)})


def preview_grid(mean: torch.Tensor, components: torch.Tensor, *, n: int = 5, sd: float = 2.0,
                 mesh: tuple | None = None, tile: int | None = None) -> np.ndarray:
    """Preview of the first ``n`` components at (-sd, 0, +sd): rows = components, columns = -sd, mean, +sd.

    ``mesh`` = (vertices (V,3), faces (F,3), vt (T,2), ft (F,3), camera) renders each albedo on the mesh with
    :func:`flamefit.render.render_mesh` (unlit, white background); without it the UV maps are shown. ``tile``
    resizes UV maps to that many pixels (default: their size). -> (rows*h, 3*w, 3) uint8 RGB image.
    """
    K = min(int(n), int(components.shape[0]))
    if K == 0:
        raise ValueError("the texture space has no components to preview")
    rows = []
    for k in range(K):
        albedos = torch.stack([mean + s * sd * components[k] for s in (-1.0, 0.0, 1.0)]).clamp(0.0, 1.0)
        if mesh is not None:
            from flamefit.render import render_mesh

            verts, faces, vt, ft, camera = mesh
            v = torch.as_tensor(verts, dtype=albedos.dtype).reshape(1, -1, 3).expand(3, -1, -1)
            out = render_mesh(v, torch.as_tensor(faces), camera,
                              texture=(albedos, torch.as_tensor(vt, dtype=albedos.dtype), torch.as_tensor(ft)),
                              background=torch.ones(3, dtype=albedos.dtype))
            imgs = out.rgb.clamp(0, 1)
        else:
            imgs = albedos
            if tile is not None:
                from flamefit.model.texture_space import resize_map

                imgs = resize_map(imgs, (tile, tile))
        rows.append(torch.cat(list(imgs), dim=1))
    grid = torch.cat(rows, dim=0)
    return (grid.detach().cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def save_preview(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG, atomically."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:  # PNG whatever the name: PIL picks the format from the suffix
        Image.fromarray(image).save(tmp)
    return path


@dataclass
class MissingDataInfo:
    """What :func:`fit_pca_missing` did: iterations run, the relative change of the completed values in the last
    one, the fraction of known values it set aside as outliers, and the noise sd (RGB 0..1) of the last fit."""

    iterations: int
    last_change: float
    outlier_fraction: float
    noise_sd: float


def fit_pca_missing(maps: torch.Tensor, known: torch.Tensor, n_components: int, *, init: torch.Tensor | None = None,
                    region: torch.Tensor | None = None, iters: int = 10, robust: float | None = 3.0,
                    robust_after: int = 2, robust_floor: float = 0.05
                    ) -> tuple[PCAResult, torch.Tensor, MissingDataInfo]:
    """PCA of maps with missing texels (EM-PCA): the texels a photo did not see (``known`` False) are not data.

    Starting from ``init`` (N,H,W,3) (completed maps, e.g. a classical fill; default: the known texels' mean per
    texel), it alternates a PCA of the completed maps (:func:`fit_pca`) with a re-completion: each map's code is
    the MAP estimate from its known texels only (least squares on them + a unit Gaussian prior on the sd-scaled
    code, weighted by the noise variance of the fit), and its unknown texels become ``mean + basis @ code``.
    So the space is fitted to what was observed, and the fills no longer teach it their own texture. With
    ``robust`` (after ``robust_after`` iterations) a photo's known texels further than ``robust`` x its robust
    residual sd (1.4826 x median absolute residual, max over channels) from its reconstruction are treated as
    unknown in that iteration (misregistered edges, specular or shadowed spots of a fit), if also further than
    ``robust_floor`` (RGB 0..1): with nearly as many components as maps the fit is almost exact and the relative
    test alone would reject sound texels.

    -> (the PCA of the final completed maps, those maps (N,H,W,3), :class:`MissingDataInfo`).
    """
    if maps.dim() != 4 or maps.shape[-1] != 3 or known.shape != maps.shape[:3]:
        raise ValueError(f"maps must be (N,H,W,3) with known (N,H,W); got {tuple(maps.shape)}, {tuple(known.shape)}")
    N, H, W, _ = maps.shape
    reg = torch.ones(H, W, dtype=torch.bool, device=maps.device) if region is None else region.to(maps.device).bool()
    idx = torch.nonzero(reg.reshape(-1)).squeeze(1)
    X = maps.reshape(N, H * W, 3).index_select(1, idx).float()  # (N,T,3)
    kn0 = known.reshape(N, H * W).index_select(1, idx).bool()
    if init is None:
        cnt = kn0.float().sum(0).clamp_min(1.0)
        texel_mean = (X * kn0.unsqueeze(-1)).sum(0) / cnt.unsqueeze(-1)
        comp = torch.where(kn0.unsqueeze(-1), X, texel_mean.expand_as(X))
    else:
        comp = init.reshape(N, H * W, 3).index_select(1, idx).float().clone()
    K = int(n_components)
    rejected = torch.zeros_like(kn0)  # outliers of the previous iteration: not data for the next solve
    out_dtype = maps.dtype if maps.is_floating_point() else torch.float32
    full = torch.zeros(N, H * W, 3, dtype=out_dtype, device=maps.device)
    noise_var = float("nan")
    change, outliers, done = float("nan"), 0.0, 0
    for t in range(max(0, int(iters))):
        full[:, idx] = comp.to(out_dtype)
        res = fit_pca(full.view(N, H, W, 3), K, region=reg)
        mu = res.mean.reshape(H * W, 3).index_select(0, idx).double()  # (T,3)
        B = res.components.reshape(K, H * W, 3).index_select(1, idx).double()  # (K,T,3)
        # the noise variance per value: residual of the known texels after projection (first pass: the PCA's
        # residual variance of the completed maps, a fine start)
        if not math.isfinite(noise_var):
            total = float(res.explained_variance.double().sum() / max(1e-12, float(res.explained_variance_ratio.sum())))
            noise_var = max(1e-8, (total - float(res.explained_variance.sum())) / (idx.numel() * 3))
        # every photo's normal matrix G_i = sum over its known texels t of P_t = sum_c B_tc B_tc^T, as one
        # (N,T) x (T,K*K) product in chunks of texels (3x fewer flops than per-photo masked products)
        m = (kn0 & ~rejected).float()  # (N,T)
        Bt = B.float().permute(1, 2, 0)  # (T,3,K)
        G = torch.zeros(N, K * K, dtype=torch.float64, device=maps.device)
        for s0 in range(0, Bt.shape[0], 2048):
            blk = Bt[s0:s0 + 2048]
            P = torch.einsum("tck,tcl->tkl", blk, blk).reshape(blk.shape[0], K * K)
            G += (m[:, s0:s0 + 2048] @ P).double()
        R = X - mu.float()  # (N,T,3)
        rhs = ((R * m.unsqueeze(-1)).reshape(N, -1) @ B.float().reshape(K, -1).T).double()  # (N,K)
        eye = torch.eye(K, dtype=torch.float64, device=maps.device)
        code = torch.linalg.solve(G.view(N, K, K) + noise_var * eye, rhs.unsqueeze(-1)).squeeze(-1)
        rec = mu.float() + (code.float() @ B.float().reshape(K, -1)).view(N, -1, 3)  # (N,T,3)
        kn = kn0
        if robust is not None and t >= robust_after:
            err = (X - rec).abs().amax(-1)  # (N,T)
            med = torch.nanmedian(torch.where(kn0, err, torch.full_like(err, float("nan"))), dim=1).values
            limit = (robust * 1.4826 * torch.nan_to_num(med, nan=float("inf"))).clamp_min(robust_floor)
            rejected = kn0 & (err > limit.unsqueeze(1))
            kn = kn0 & ~rejected
        n_out = int(rejected.sum())
        sq = float(((X - rec).pow(2) * kn.unsqueeze(-1)).double().sum())
        n_known = int(kn.sum()) * 3
        new = torch.where(kn.unsqueeze(-1), X, rec)
        change = float((new - comp).norm() / comp.norm().clamp_min(1e-12))
        comp = new
        noise_var = max(1e-8, sq / max(1, n_known))
        outliers = n_out / max(1, int(kn0.sum()))
        done = t + 1
    full[:, idx] = comp.to(out_dtype)
    res = fit_pca(full.view(N, H, W, 3), K, region=reg)
    out = full.view(N, H, W, 3)
    return res, out, MissingDataInfo(iterations=done, last_change=change, outlier_fraction=outliers,
                                     noise_sd=math.sqrt(noise_var) if math.isfinite(noise_var) else float("nan"))
