"""Classical fills and the held-out-stroke evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamefit.texspace.fills import (
    evaluate_fills,
    fill_mean,
    fill_mirror,
    fill_mirror_then_opencv,
    fill_mirror_then_pca,
    fill_opencv,
    fill_pca,
    fill_pushpull,
    flip_u_map,
    held_out_masks,
    mirror_known,
    mirror_uv_error,
    mirror_uv_map,
    project_onto_space,
    psnr,
)


def gradient_map(size=32):
    r = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.2 * xx * yy], -1)


def symmetric_map(size=32):
    m = gradient_map(size)
    return 0.5 * (m + m.flip(1))


def hole(size=32):
    known = torch.ones(size, size, dtype=torch.bool)
    known[10:20, 4:12] = False
    return known


@pytest.mark.parametrize("fill", [fill_opencv, fill_pushpull,
                                  lambda m, k: fill_opencv(m, k, method="ns")])
def test_smooth_fills_restore_a_gradient(fill):
    m, k = gradient_map(), hole()
    out = fill(m * k.unsqueeze(-1), k)
    assert torch.equal(out[k], m[k])
    assert (out - m).abs()[~k].mean() < 0.03
    assert (fill_mean(m * k.unsqueeze(-1), k) - m).abs()[~k].mean() > 0.05  # the floor is worse


def test_mirror_fill_is_exact_on_a_symmetric_map():
    m, k = symmetric_map(), hole()
    out = fill_mirror(m * k.unsqueeze(-1), k)
    assert torch.allclose(out, m, atol=1e-6)
    k2 = k.clone()
    k2[10:20, 20:28] = False  # the mirror of the hole is unknown too: stays unfilled
    out2 = fill_mirror(m * k2.unsqueeze(-1), k2)
    assert (out2[10:20, 4:12] == 0).all()
    assert not mirror_known(k2)[12, 6] and mirror_known(k)[12, 6]
    both = fill_mirror_then_opencv(m * k2.unsqueeze(-1), k2)
    assert (both - m).abs()[~k2].mean() < 0.03


def test_pca_fill_and_projection_recover_a_map_of_the_space():
    g = torch.Generator().manual_seed(0)
    mean = torch.full((16, 16, 3), 0.5)
    basis = 0.03 * torch.randn(4, 16, 16, 3, generator=g)
    code = torch.tensor([[1.0, -0.5, 0.3, 2.0]])
    m = (mean + torch.einsum("nk,khwc->nhwc", code, basis))[0]
    assert 0 <= m.min() and m.max() <= 1
    k = torch.rand(16, 16, generator=g) > 0.6
    rec, c = project_onto_space(m, k, mean, basis, ridge=1e-9)
    assert torch.allclose(c, code, atol=1e-3) and torch.allclose(rec, m, atol=1e-4)
    out = fill_pca(m * k.unsqueeze(-1), k, mean, basis, ridge=1e-9)
    assert torch.allclose(out, m, atol=1e-4)
    sym = fill_mirror_then_pca(m * k.unsqueeze(-1), k, mean, basis, ridge=1e-9)
    assert torch.equal(sym[k], m[k])


def test_evaluate_fills_scores_on_held_out_strokes():
    maps = torch.stack([symmetric_map(), symmetric_map().flip(0)])
    vis = torch.ones(2, 32, 32, dtype=torch.bool)
    vis[:, :, 20:] = False  # right side never seen
    holes = held_out_masks(vis, seed=3)
    assert holes.any() and not (holes & ~vis).any()
    assert torch.equal(holes, held_out_masks(vis, seed=3))
    res = evaluate_fills(maps, vis, {"mean": fill_mean, "opencv": fill_opencv}, seed=3)
    assert res["opencv"]["psnr_db"] > res["mean"]["psnr_db"] + 5
    assert res["mean"]["hole_texels"] == int(holes.sum())
    seen = []

    def spy(m, k):
        seen.append((m.clone(), k.clone()))
        return m

    evaluate_fills(maps, vis, {"spy": spy}, holes=holes)
    m_in, k_in = seen[0]
    assert not (k_in & holes).any() and (m_in[holes] == 0).all()  # fills never see the held-out texels
    assert psnr(maps, maps + 0.1, vis) == pytest.approx(20.0, abs=1e-4)


def test_flip_map_and_mesh_mirror_on_a_symmetric_mesh():
    # a flat symmetric quad strip: x in [-1, 1] mapped to u in [0, 1]: the mirror is exactly u -> 1 - u
    xs = np.linspace(-1, 1, 9)
    ys = np.linspace(-1, 1, 5)
    V = np.array([[x, y, 0.0] for y in ys for x in xs])
    vt = np.array([[(x + 1) / 2, (y + 1) / 2] for y in ys for x in xs])
    F = []
    for j in range(4):
        for i in range(8):
            a = j * 9 + i
            F += [[a, a + 1, a + 10], [a, a + 10, a + 9]]
    F = np.array(F)
    uv, valid = mirror_uv_map(V, F, vt, F, 16)
    assert valid.float().mean() > 0.95
    assert mirror_uv_error(uv, valid) < 1e-6
    flip = flip_u_map(16, 16)
    assert torch.allclose(flip[0, 0], torch.tensor([1 - 1 / 32, 1 - 1 / 32]))


def test_standin_layout_is_nearly_u_symmetric(shared_assets):
    from flamefit.model.flame import load_flame

    model = load_flame(shared_assets / "flame_standin" / "standin_flame2023.pkl")
    tex = np.load(shared_assets / "flame_standin" / "standin_texture.npz")
    uv, valid = mirror_uv_map(model.v_template.numpy(), model.faces.numpy(), tex["vt"], tex["ft"], 64)
    assert valid.float().mean() > 0.5
    assert mirror_uv_error(uv, valid) < 0.01  # u -> 1 - u is a good mirror for FLAME's layout
