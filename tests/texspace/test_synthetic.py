"""The made-up texture space of the recovery benchmark, and the reconstruction metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamefit.model.texture_space import load_texture_space, resize_map
from flamefit.texspace.pca import fit_pca
from flamefit.texspace.synthetic import make_synthetic_space, reconstruction_rms


def grid_layout(n=6):
    """A square UV layout covering most of [0, 1]^2 (no assets needed)."""
    s = np.linspace(0.05, 0.95, n)
    vt = np.array([[u, v] for v in s for u in s])
    ft = []
    for j in range(n - 1):
        for i in range(n - 1):
            a = j * n + i
            ft += [[a, a + 1, a + n + 1], [a, a + n + 1, a + n]]
    return vt, np.array(ft)


def test_space_is_reproducible_and_zero_outside_its_region():
    vt, ft = grid_layout()
    a = make_synthetic_space(vt, ft, 32, 6, seed=1)
    b = make_synthetic_space(vt, ft, 32, 6, seed=1)
    c = make_synthetic_space(vt, ft, 32, 6, seed=2)
    assert torch.equal(a.basis, b.basis) and not torch.allclose(a.basis, c.basis)
    assert a.basis.shape == (6, 32, 32, 3) and (a.basis[:, ~a.region] == 0).all()
    assert 0.7 < a.region.float().mean() < 0.9
    x, code = a.sample(50, torch.Generator().manual_seed(0))
    y, _ = a.sample(50, torch.Generator().manual_seed(0))
    assert torch.equal(x, y) and code.shape == (50, 6)
    inside = x[:, a.region]
    assert ((inside < 0) | (inside > 1)).float().mean() < 0.01  # plausible albedos, clipping is rare


def test_true_space_reconstructs_itself_and_pca_recovers_it(tmp_path):
    vt, ft = grid_layout()
    space = make_synthetic_space(vt, ft, 32, 8, seed=0, n_blobs=2)
    gen = torch.Generator().manual_seed(7)
    train, _ = space.sample(200, gen)
    held, _ = space.sample(30, gen)
    assert reconstruction_rms(space.mean, space.basis, held, space.region) < 1e-3
    built = fit_pca(train, 8, region=space.region)
    rms = [reconstruction_rms(built.mean, built.components, held, space.region, k) for k in (0, 4, 8)]
    assert rms[0] > 10 and rms[0] > rms[1] > rms[2]  # each component helps
    assert rms[2] < 0.05  # noise-free samples: the span is recovered exactly
    # too few maps cannot recover all 8 directions
    few = fit_pca(train[:5], 4, region=space.region)
    assert reconstruction_rms(few.mean, few.components, held, space.region) > 1.0
    per = reconstruction_rms(few.mean, few.components, held, space.region, per_map=True)
    assert per.shape == (30,)
    # and the space saves as a loadable FLAME_texture.npz
    ts = load_texture_space(space.save(tmp_path / "true.npz"))
    assert torch.allclose(ts.basis, space.basis, atol=1e-5) and torch.allclose(ts.mean, space.mean, atol=1e-5)


def test_differs_from_the_standin_space(shared_assets):
    path = shared_assets / "flame_standin" / "standin_texture.npz"
    standin = load_texture_space(path)
    raw = np.load(path)
    space = make_synthetic_space(raw["vt"], raw["ft"], 64, 10, seed=0)
    held, _ = space.sample(10, torch.Generator().manual_seed(3))
    own = reconstruction_rms(space.mean, space.basis, held, space.region)
    mean64 = resize_map(standin.mean[None], (64, 64))[0]
    basis64 = resize_map(standin.basis, (64, 64))
    other = reconstruction_rms(mean64, basis64, held, space.region)
    assert own < 1e-3 and other > 5.0


def test_reconstruction_rms_never_grows_with_k_on_a_rank_deficient_space():
    """A space can have components that are zero inside the scored region (they live elsewhere in the layout):
    least squares must then ignore them, not blow up."""
    from flamefit.texspace.synthetic import reconstruction_rms

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(6, 8, 8, 3, generator=g, dtype=torch.float64)
    basis[3:] = 0.0
    basis[4, 0, 0, 0] = 1e-9  # numerically zero
    albedos = torch.randn(4, 8, 8, 3, generator=g, dtype=torch.float64)
    region = torch.ones(8, 8, dtype=torch.bool)
    rms = [reconstruction_rms(torch.zeros(8, 8, 3, dtype=torch.float64), basis, albedos, region, k) for k in range(7)]
    assert all(b <= a + 1e-9 for a, b in zip(rms, rms[1:], strict=False))
    assert rms[6] == pytest.approx(rms[3], rel=1e-6)
