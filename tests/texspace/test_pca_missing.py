"""Missing-data PCA (EM-PCA) of unwrapped maps: recovery of a low-rank space from maps that each see only part of
the layout, outlier rejection, the albedo-vs-light gauge, the face region of the recovery benchmark."""

from __future__ import annotations

import json

import numpy as np
import torch

from flamefit.texspace.pca import fit_pca, fit_pca_missing


def _space(n=30, size=12, rank=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size, dtype=torch.float64),
                            torch.linspace(-1, 1, size, dtype=torch.float64), indexing="ij")
    mean = torch.stack([0.6 + 0.05 * xx, 0.45 + 0.05 * yy, 0.4 + 0 * xx], -1)
    dirs = torch.randn(rank, size, size, 3, generator=g, dtype=torch.float64) * 0.04
    code = torch.randn(n, rank, generator=g, dtype=torch.float64)
    return mean + torch.einsum("nk,khwc->nhwc", code, dirs), mean, dirs, g


def _holes(n, size, g, keep=0.5):
    """Each map sees a random half-plane of the layout (as a photo sees one side of a face)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size, dtype=torch.float64),
                            torch.linspace(-1, 1, size, dtype=torch.float64), indexing="ij")
    ang = torch.rand(n, generator=g, dtype=torch.float64) * 2 * np.pi
    off = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 0.4
    d = xx * ang.cos().view(-1, 1, 1) + yy * ang.sin().view(-1, 1, 1) - off.view(-1, 1, 1)
    return d < torch.quantile(d.reshape(n, -1), keep, dim=1).view(-1, 1, 1)


def _span_error(result, maps):
    """RMS residual of ``maps`` after least squares onto the result's mean + components."""
    k = result.components.shape[0]
    A = result.components.reshape(k, -1).T
    r = (maps - result.mean).reshape(maps.shape[0], -1).T
    sol = torch.linalg.lstsq(A, r).solution
    return float((r - A @ sol).pow(2).mean().sqrt())


def test_em_pca_recovers_the_space_that_filled_maps_distort():
    maps, mean, dirs, g = _space()
    known = _holes(maps.shape[0], maps.shape[1], g)
    # the unknown texels filled with the known texels' mean colour: PCA learns the holes as variance
    filled = torch.where(known.unsqueeze(-1), maps, maps[known].mean(0))
    plain = fit_pca(filled, 3)
    em, completed, info = fit_pca_missing(maps * known.unsqueeze(-1), known, 3, init=filled, iters=30, robust=None)
    held = mean + torch.einsum("nk,khwc->nhwc", torch.randn(10, 3, generator=g, dtype=torch.float64), dirs)
    assert _span_error(em, held) < 0.2 * _span_error(plain, held)
    assert _span_error(em, held) < 5e-3  # 1.3 in 0..255
    assert torch.allclose(completed[known], maps[known], atol=1e-6)  # observations are kept as they are
    assert info.iterations == 30 and info.last_change < 1e-2


def test_em_pca_sets_outliers_aside():
    maps, mean, dirs, g = _space(seed=1)
    known = _holes(maps.shape[0], maps.shape[1], g)
    bad = maps.clone()
    spots = (torch.rand(maps.shape[:3], generator=g, dtype=torch.float64) < 0.03) & known
    bad[spots] = 1.0  # specular spots / misregistered edges
    filled = torch.where(known.unsqueeze(-1), bad, bad[known].mean(0))
    robust, _, info = fit_pca_missing(bad, known, 3, init=filled, iters=20)
    plain, _, _ = fit_pca_missing(bad, known, 3, init=filled, iters=20, robust=None)
    held = mean + torch.einsum("nk,khwc->nhwc", torch.randn(10, 3, generator=g, dtype=torch.float64), dirs)
    assert _span_error(robust, held) < 0.5 * _span_error(plain, held)
    assert 0.02 < info.outlier_fraction < 0.2


def test_gauge_gains_from_the_fitted_ambient_light(tmp_path):
    from flamefit.texspace.pipeline import gauge_gains
    from flamefit.texspace.store import save_unwrapped

    z = np.zeros((4, 4, 3), np.float32)
    paths = []
    for i, dc in enumerate((1.0, 2.0, 4.0)):
        sh = [dc] + [0.1] * 8
        paths.append(save_unwrapped(tmp_path / f"m{i}.npz", z, z[..., 0], z[..., 0] > 0, z[..., 0] == 0,
                                    meta={"light_sh": sh}))
    gains, info = gauge_gains(paths, "light_dc")
    assert torch.allclose(gains, torch.tensor([[0.5] * 3, [1.0] * 3, [2.0] * 3], dtype=torch.float64))
    assert info["gauge"] == "light_dc" and info["median_dc"] == [2.0, 2.0, 2.0]
    assert gauge_gains(paths, "none")[0] is None
    old = save_unwrapped(tmp_path / "old.npz", z, z[..., 0], z[..., 0] > 0, z[..., 0] == 0, meta={})
    gains, info = gauge_gains([*paths, old], "light_dc")
    assert gains is None and "old.npz" in info["gauge_note"]
    assert json.loads(json.dumps(info))  # recordable


def test_face_texels_lie_in_the_layout(shared_assets):
    from flamefit.model.flame import load_flame
    from flamefit.model.landmarks import load_ringnet_68
    from flamefit.render.bake import rasterize_uv
    from flamefit.texspace.synthetic import face_texels

    root = shared_assets
    with np.load(root / "flame_standin" / "standin_texture.npz") as d:
        vt, ft = d["vt"], d["ft"].astype(np.int64)
    face = face_texels(load_flame(root / "flame_standin" / "standin_flame2023.pkl"),
                       load_ringnet_68(root / "flame_landmarks" / "flame_static_embedding.pkl",
                                       root / "flame_landmarks" / "flame_dynamic_embedding.npy"), vt, ft, 64)
    layout = rasterize_uv(torch.as_tensor(vt), torch.as_tensor(ft), 64).mask
    assert face.shape == (64, 64) and not (face & ~layout).any()
    assert 0.05 < float(face.sum() / layout.sum()) < 0.6




def test_em_pca_with_as_many_components_as_the_maps_allow_rejects_nothing():
    """K = N - 1 reproduces every map almost exactly: tiny residuals must not make sound texels outliers."""
    maps, _, _, g = _space(n=6, rank=5, seed=3)
    known = _holes(6, maps.shape[1], g)
    _, _, info = fit_pca_missing(maps, known, 5, iters=5)
    assert info.outlier_fraction == 0.0
