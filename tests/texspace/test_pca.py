"""PCA over maps and the FLAME_texture.npz writer (round trip through the model's loader)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamefit.errors import ConfigError
from flamefit.model.texture_space import load_texture_space
from flamefit.render import camera_from_fov, look_at
from flamefit.texspace.pca import fit_pca, preview_grid, save_pca, save_preview, save_texture_space


def low_rank_maps(n=40, size=8, rank=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = 0.5 + 0.1 * torch.rand(size, size, 3, generator=g, dtype=torch.float64)
    dirs = torch.randn(rank, size, size, 3, generator=g, dtype=torch.float64) * 0.05
    code = torch.randn(n, rank, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0][:rank],
                                                                                dtype=torch.float64)
    return mean + torch.einsum("nk,khwc->nhwc", code, dirs), mean, dirs


@pytest.mark.parametrize("method", ["gram", "cov", "randomized"])
def test_pca_recovers_a_low_rank_space(method):
    maps, mean, dirs = low_rank_maps()
    p = fit_pca(maps, 3, method=method)
    assert torch.allclose(p.mean, maps.mean(0), atol=1e-10)
    assert p.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-8)
    assert (p.explained_variance[:-1] >= p.explained_variance[1:]).all()
    # 1 unit = 1 sd: the codes of the data (orthogonal projections) have unit variance
    flat = p.components.reshape(3, -1)
    codes = (maps - p.mean).reshape(40, -1) @ flat.T / (flat * flat).sum(1)
    assert torch.allclose(codes.var(0), torch.ones(3, dtype=torch.float64), atol=1e-6)
    # the span equals the true one: the data are reconstructed exactly
    rec = p.mean + torch.einsum("nk,khwc->nhwc", codes, p.components)
    assert torch.allclose(rec, maps, atol=1e-8)


def test_methods_agree_and_sign_is_fixed():
    maps, _, _ = low_rank_maps(rank=3)
    a, b = fit_pca(maps, 2, method="gram"), fit_pca(maps, 2, method="cov")
    assert torch.allclose(a.components, b.components, atol=1e-6)


def test_region_and_weights():
    maps, _, _ = low_rank_maps()
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[2:6, 1:7] = True
    w = torch.linspace(0.1, 1.0, 40)
    p = fit_pca(maps, 2, region=region, weights=w)
    wm = (w / w.sum()).double()
    assert torch.allclose(p.mean[region], torch.einsum("n,nhwc->hwc", wm, maps)[region], atol=1e-10)
    assert (p.components[:, ~region] == 0).all()
    assert torch.allclose(p.mean[~region], p.mean[region].mean(0).expand(int((~region).sum()), 3))
    with pytest.raises(ConfigError, match="components"):
        fit_pca(maps, 40)
    with pytest.raises(ValueError, match="weights"):
        fit_pca(maps, 2, weights=-w)


def test_writer_round_trips_through_the_loader(tmp_path):
    maps, _, _ = low_rank_maps(size=8)
    p = fit_pca(maps.float(), 3)
    vt = np.random.default_rng(0).random((20, 2))
    ft = np.arange(30).reshape(10, 3) % 20
    path = save_pca(tmp_path / "space.npz", p, vt, ft)
    assert not list(tmp_path.glob(".*"))  # atomic write: no temp file left
    raw = np.load(path)
    assert raw["mean"].shape == (8, 8, 3) and raw["tex_dir"].shape == (8, 8, 3, 3)
    assert raw["mean"].dtype == np.float32 and raw["tex_dir"].dtype == np.float32
    assert np.allclose(raw["mean"][..., 2], p.mean[..., 0].numpy() * 255, atol=1e-3)  # BGR on disk, 0..255
    assert np.allclose(raw["explained_variance_ratio"], p.explained_variance_ratio.numpy())
    ts = load_texture_space(path)
    assert ts.n_components == 3 and ts.kind == "flame"
    assert torch.allclose(ts.mean, p.mean, atol=1e-6) and torch.allclose(ts.basis, p.components, atol=1e-6)
    assert np.array_equal(ts.ft.numpy(), ft) and np.allclose(ts.vt.numpy(), vt)
    with pytest.raises(ValueError, match="clashes"):
        save_texture_space(tmp_path / "x.npz", p.mean, p.components, vt, ft, extra={"mean": np.zeros(1)})


def test_preview_grid_uv_and_mesh(tmp_path):
    maps, _, _ = low_rank_maps(size=8, rank=3)
    p = fit_pca(maps.float(), 3)
    img = preview_grid(p.mean, p.components, n=5, tile=16)
    assert img.shape == (3 * 16, 3 * 16, 3) and img.dtype == np.uint8
    assert not np.array_equal(img[:16, :16], img[:16, 32:])  # -2 sd differs from +2 sd
    # on a mesh: a camera-facing quad covering the UV square
    v = torch.tensor([[-1, 1, 0], [1, 1, 0], [1, -1, 0], [-1, -1, 0]], dtype=torch.float32) * 0.1
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    vt = torch.tensor([[0, 1], [1, 1], [1, 0], [0, 0]], dtype=torch.float32)
    R, t = look_at(torch.tensor([[0.0, 0.0, 0.6]]), torch.zeros(1, 3))
    cam = camera_from_fov(0.5, 24, 24, R=R, t=t)
    img = preview_grid(p.mean, p.components, n=2, mesh=(v, f, vt, f, cam))
    assert img.shape == (2 * 24, 3 * 24, 3)
    assert (img[0, 0] == 255).all() and not (img[12, 12] == 255).all()  # white background, mesh in the middle
    out = save_preview(tmp_path / "prev.png", img)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(out)), img)
