"""A made-up texture space with known truth, for the recovery benchmark of texture-space building.

:func:`make_synthetic_space` builds a linear albedo space on a given UV layout that has nothing to do with the
stand-in's (smooth random colour fields at several scales + a few localized blobs: freckle/blush/stubble-like
patches), with 1 unit = 1 sd, zero outside its region. :meth:`SyntheticSpace.sample` draws albedos from it
(reproducibly, from a local generator), :func:`reconstruction_rms` measures how well any space (mean + first k
components) reconstructs albedos: the RMS residual in 0..255 units within a region after least squares, the
figure of the issue's recovery benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flamefit.render.bake import rasterize_uv


@dataclass
class SyntheticSpace:
    """mean (H,W,3) RGB 0..1, basis (K,H,W,3) (1 unit = 1 sd), region (H,W) bool, the layout ``vt``, ``ft``."""

    mean: torch.Tensor
    basis: torch.Tensor
    region: torch.Tensor
    vt: torch.Tensor
    ft: torch.Tensor

    @property
    def n_components(self) -> int:
        return int(self.basis.shape[0])

    def sample(self, n: int, generator: torch.Generator, *, clip: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """n albedos (n,H,W,3) with codes (n,K) ~ N(0, 1) (``clip`` to [0,1] if asked; the space is designed so
        that clipping is rare)."""
        code = torch.randn(n, self.n_components, generator=generator, dtype=torch.float64).to(self.mean.dtype)
        out = self.mean + torch.einsum("nk,khwc->nhwc", code, self.basis)
        return (out.clamp(0.0, 1.0) if clip else out), code

    def save(self, path: str | Path) -> Path:
        """As a ``FLAME_texture.npz`` (BGR 0..255), loadable by ``load_texture_space``."""
        from flamefit.texspace.pca import save_texture_space

        return save_texture_space(path, self.mean, self.basis, self.vt, self.ft, region=self.region)


def _smooth_field(gen: torch.Generator, cells: int, H: int, W: int) -> torch.Tensor:
    """Unit-RMS smooth random field (H,W): white noise on a cells x cells grid, bicubic upsampling."""
    noise = torch.randn(1, 1, cells, cells, generator=gen, dtype=torch.float64)
    f = F.interpolate(noise, size=(H, W), mode="bicubic", align_corners=False)[0, 0]
    return f / f.pow(2).mean().sqrt()


def make_synthetic_space(vt, ft, size: int | tuple[int, int] = 256, n_components: int = 10, *, seed: int = 0,
                         n_blobs: int = 3, region: torch.Tensor | None = None, sd_first: float = 0.05,
                         decay: float = 0.8, asymmetry: float = 0.3) -> SyntheticSpace:
    """A known texture space on the layout (``vt`` (T,2), ``ft`` (F,3)) at ``size`` texels.

    ``n_components - n_blobs`` smooth colour fields (two colour directions each, coarse to fine) and ``n_blobs``
    localized Gaussian patches; field k has sd ``sd_first * decay**k`` (RMS over the region, RGB 0..1), blob k a
    peak of ``2 * sd_first * decay**k``.
    The mean is a warm skin tone with a smooth variation. ``region`` (H,W) bool defaults to the layout coverage.
    Faces are nearly left-right symmetric, and so is FLAME's layout about u = 1/2: each field is its mirror-symmetric
    part (under u -> 1 - u) plus ``asymmetry`` times its antisymmetric part (the mean's variation too), and every
    other blob comes with its mirror twin.
    """
    H, W = (size, size) if isinstance(size, int) else size
    vt_t = torch.as_tensor(np.asarray(vt), dtype=torch.float64)
    ft_t = torch.as_tensor(np.asarray(ft).astype(np.int64))
    if region is None:
        region = rasterize_uv(vt_t, ft_t, (H, W)).mask
    reg = region.to(torch.float64).unsqueeze(-1)
    K = int(n_components)
    if K < 1 or n_blobs < 0 or n_blobs > K:
        raise ValueError(f"need 1 <= n_components and 0 <= n_blobs <= n_components, got {K}, {n_blobs}")
    gen = torch.Generator().manual_seed(int(seed))
    base = torch.tensor([0.70, 0.52, 0.43], dtype=torch.float64)
    mf = _smooth_field(gen, 4, H, W)
    mf = 0.5 * (mf + mf.flip(1)) + asymmetry * 0.5 * (mf - mf.flip(1))
    mean = base + 0.04 * mf.unsqueeze(-1) * torch.tensor([1.0, 0.8, 0.7], dtype=torch.float64)
    comps = []
    n_fields = K - n_blobs
    for k in range(n_fields):
        cells = 3 + 2 * k  # coarse first
        c1 = torch.nn.functional.normalize(torch.randn(3, generator=gen, dtype=torch.float64) + 1.0, dim=0)
        c2 = torch.nn.functional.normalize(torch.randn(3, generator=gen, dtype=torch.float64), dim=0)
        f = (_smooth_field(gen, cells, H, W).unsqueeze(-1) * c1
             + 0.5 * _smooth_field(gen, cells, H, W).unsqueeze(-1) * c2)
        sym, anti = 0.5 * (f + f.flip(1)), 0.5 * (f - f.flip(1))
        comps.append(sym + asymmetry * anti)
    # blobs inside the region: centres drawn among region texels
    idx = torch.nonzero(region.reshape(-1)).squeeze(1)
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    for j in range(n_blobs):
        centre = idx[int(torch.randint(0, idx.numel(), (1,), generator=gen))]
        cy, cx = float(centre // W), float(centre % W)
        radius = float(0.04 + 0.06 * torch.rand(1, generator=gen, dtype=torch.float64)) * min(H, W)
        col = torch.nn.functional.normalize(torch.randn(3, generator=gen, dtype=torch.float64), dim=0)
        g = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius * radius))
        if j % 2 == 0:
            g = g + g.flip(1)  # a symmetric pair (e.g. both cheeks)
        comps.append(g.unsqueeze(-1) * col)
    basis = []
    for k, c in enumerate(comps):
        c = c * reg
        if k < n_fields:  # smooth fields: RMS over the region = the component's sd
            norm = (c.pow(2).sum() / (reg.sum() * 3)).sqrt()
        else:  # blobs are local: their peak (not their RMS over the whole region) gets 2 sd_first
            norm = c.abs().max() / 2.0
        basis.append(c / norm.clamp_min(1e-12) * sd_first * decay ** k)
    mean = torch.where(reg.bool(), mean, base.expand_as(mean))
    return SyntheticSpace(mean=mean.float(), basis=torch.stack(basis).float(), region=region.bool(),
                          vt=vt_t, ft=ft_t)


def reconstruction_rms(mean: torch.Tensor, basis: torch.Tensor, albedos: torch.Tensor, region: torch.Tensor,
                       k: int | None = None, *, per_map: bool = False) -> float | torch.Tensor:
    """RMS residual (0..255 units) of albedos (N,H,W,3) after least squares onto ``mean`` (H,W,3) + the first
    ``k`` of ``basis`` (K,H,W,3) (all when None), over the texels of ``region`` (H,W) and the 3 channels.
    ``per_map`` returns (N,) RMS values instead of the pooled one."""
    reg = region.reshape(-1).bool().to(albedos.device)
    N = albedos.shape[0]
    X = albedos.reshape(N, -1, 3)[:, reg].reshape(N, -1).to(torch.float64)  # (N,D)
    mu = mean.reshape(-1, 3)[reg].reshape(-1).to(X)
    kk = basis.shape[0] if k is None else min(int(k), basis.shape[0])
    R = X - mu
    if kk > 0:
        A = basis[:kk].reshape(kk, -1, 3)[:, reg].reshape(kk, -1).to(X).T  # (D,k)
        # gelsd (SVD) with a cutoff: a space can be rank-deficient inside the region (components living elsewhere)
        sol = torch.linalg.lstsq(A, R.T, rcond=1e-10, driver="gelsd").solution  # (k,N)
        R = R - (A @ sol).T
    rms = R.pow(2).mean(1).sqrt() * 255.0
    return rms if per_map else float(R.pow(2).mean().sqrt() * 255.0)


def face_texels(model, landmarks68, vt, ft, size: int | tuple[int, int] = 256) -> torch.Tensor:
    """(H,W) bool: the texels of the face skin (forehead to chin, ear to ear, no eyeballs:
    :func:`flamefit.fit.synthetic.face_region`, the region the synthetic photos' skin masks show), i.e. the texels
    of layout triangles whose three corners lie in that vertex region. The recovery benchmark's "face region":
    texels outside it (scalp, neck, ears, eyeballs) are never in a skin mask, so no build can learn them."""
    from flamefit.fit.synthetic import face_region

    vreg = face_region(model, landmarks68).cpu()
    faces = model.faces.cpu().long()
    tri_in = vreg[faces].all(-1)  # (F,)
    uv = rasterize_uv(torch.as_tensor(np.asarray(vt), dtype=torch.float64),
                      torch.as_tensor(np.asarray(ft).astype(np.int64)), size)
    H, W = uv.height, uv.width
    out = torch.zeros(H * W, dtype=torch.bool)
    out[uv.texel] = tri_in[uv.face]
    return out.view(H, W) & uv.mask
