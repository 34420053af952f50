import pytest
import torch

from flamefit.fit import losses as L


def test_landmark_loss_zero_at_target_and_grows():
    t = torch.rand(1, 68, 2) * 200
    assert float(L.landmark_loss(t, t, 224.0)) == 0.0
    small = L.landmark_loss(t + 1.0, t, 224.0)
    big = L.landmark_loss(t + 30.0, t, 224.0)
    assert 0 < float(small) < float(big)
    # Huber: an outlier grows linearly, not quadratically
    outl = t.clone()
    outl[0, 0] += 1000
    ratio = float(L.landmark_loss(outl, t, 224.0)) / float(L.landmark_loss(t + torch.tensor([0, 100.0]), t, 224.0))
    assert ratio < 1.0
    w = torch.zeros(68)
    w[5] = 1
    moved = t.clone()
    moved[0, 6] += 20  # point with zero weight
    assert float(L.landmark_loss(moved, t, 224.0, w)) == 0.0
    assert float(L.landmark_loss(t + 1, t, 224.0, 2 * torch.ones(68))) == 2 * float(small)


def test_eye_and_lip_terms_see_openings_only():
    t = torch.rand(1, 68, 2) * 200
    shifted = t + 5.0  # pure translation: openings unchanged
    assert float(L.eye_closure_loss(shifted, t, 224.0)) < 1e-10
    assert float(L.lip_distance_loss(shifted, t, 224.0)) < 1e-10
    closed = t.clone()
    closed[0, [37, 38, 43, 44]] = t[0, [41, 40, 47, 46]]
    assert float(L.eye_closure_loss(closed, t, 224.0)) > 0
    opened = t.clone()
    opened[0, [65, 66, 67], 1] += 20
    assert float(L.lip_distance_loss(opened, t, 224.0)) > 0


def test_photometric_robust_and_masked():
    img = torch.rand(1, 16, 16, 3)
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 4:12] = 1
    assert float(L.photometric_loss(img, img, mask)) == 0.0
    off = img.clone()
    off[:, :4] = 1 - off[:, :4]  # outside the mask: ignored
    assert float(L.photometric_loss(off, img, mask)) == 0.0
    bad = img + 10.0  # huge error saturates below 1
    val = float(L.photometric_loss(bad, img, mask))
    assert 0.99 < val < 1.0
    near = float(L.photometric_loss(img + 0.01, img, mask))
    assert 0 < near < 0.05


def test_priors():
    assert torch.equal(L.l2_prior(torch.zeros(2, 5)), torch.zeros(2))
    assert torch.equal(L.l2_prior(torch.ones(2, 5)), torch.full((2,), 5.0))  # one value per item
    assert L.l2_prior(torch.zeros(3, 0)).shape == (3,)
    light = torch.zeros(1, 9, 3)
    light[:, 0] = 3.0
    assert float(L.light_prior(light)) == 0  # ambient grey light costs nothing
    light[:, 1] = 1.0
    assert float(L.light_prior(light)) > 0


def test_losses_are_per_item_and_independent():
    """Every loss returns (B,) and item b's value does not depend on the other items (no batch normalisation)."""
    t = torch.rand(3, 68, 2) * 200
    pred = t + torch.randn(3, 68, 2)
    alone = L.landmark_loss(pred[1:2], t[1:2], 224.0)
    assert L.landmark_loss(pred, t, 224.0).shape == (3,)
    assert torch.allclose(L.landmark_loss(pred, t, 224.0)[1:2], alone)
    img, ren = torch.rand(3, 8, 8, 3), torch.rand(3, 8, 8, 3)
    mask = torch.rand(3, 8, 8)
    mask[0] *= 100  # a heavier mask on another item must not change item 1
    assert torch.allclose(L.photometric_loss(ren, img, mask)[1:2], L.photometric_loss(ren[1:2], img[1:2], mask[1:2]))
    tex = torch.rand(3, 4, 4, 3)
    for fn in (L.map_l2, L.map_smoothness, L.map_symmetry):
        assert torch.allclose(fn(tex)[1:2], fn(tex[1:2]))


def _photometric_case(dtype, B=2, small_mass_item=True):
    g = torch.Generator().manual_seed(3)
    rgb = torch.rand(B, 9, 7, 3, generator=g, dtype=dtype) * 1.4 - 0.2  # some channels clipped at 0 and 1
    img = torch.rand(B, 9, 7, 3, generator=g, dtype=dtype)
    skin = (torch.rand(B, 9, 7, generator=g, dtype=dtype) > 0.3).to(dtype) * 0.8
    alpha = torch.rand(B, 9, 7, 1, generator=g, dtype=dtype)
    if small_mass_item:
        alpha[-1] *= 0.01  # mass below 1: the normalisation's clamp passes no gradient
    return rgb, img, skin, alpha


@pytest.mark.parametrize("numba_kernels", [True, False])
def test_photometric_clipped_matches_the_composed_loss(monkeypatch, numba_kernels):
    """The fused op gives the values and gradients of photometric_loss(rgb.clamp(0, 1), image, skin * alpha)
    (numba kernels and the torch path), w.r.t. the render, the coverage and the skin weights."""
    import flamefit.render._backend as backend

    monkeypatch.setattr(backend, "NUMBA_KERNELS", numba_kernels)
    rgb, img, skin, alpha = _photometric_case(torch.float64)
    weights = torch.tensor([1.0, 2.5], dtype=torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in (rgb, skin, alpha)]
    ref = L.photometric_loss(leaves[0].clamp(0, 1), img, leaves[1] * leaves[2][..., 0], 0.1)
    g_ref = torch.autograd.grad((ref * weights).sum(), leaves)
    new_leaves = [t.clone().requires_grad_(True) for t in (rgb, skin, alpha)]
    new = L.photometric_loss_clipped(new_leaves[0], img, new_leaves[1], new_leaves[2], 0.1)
    g_new = torch.autograd.grad((new * weights).sum(), new_leaves)
    assert new.shape == (2,)
    assert torch.allclose(new, ref, rtol=1e-12, atol=1e-14)
    for a, b in zip(g_new, g_ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
    assert float(g_new[0].abs().max()) > 0 and float(g_new[2].abs().max()) > 0
    # clipped channels pass no gradient, as with clamp
    outside = (rgb < 0) | (rgb > 1)
    assert bool(outside.any()) and float(g_new[0][outside].abs().max()) == 0.0
    # coverage as (B,H,W) gives the same
    a3 = alpha[..., 0].clone().requires_grad_(True)
    v3 = L.photometric_loss_clipped(rgb, img, skin, a3, 0.1)
    assert torch.allclose(v3, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.autograd.grad((v3 * weights).sum(), a3)[0], g_ref[2][..., 0])
    # float32 agrees too (the kernels accumulate in float64)
    r32 = L.photometric_loss_clipped(*(t.float() for t in (rgb, img, skin, alpha)), 0.1)
    assert torch.allclose(r32.double(), ref.detach(), rtol=1e-5)


def test_photometric_clipped_gradcheck():
    rgb, img, skin, alpha = _photometric_case(torch.float64, B=1, small_mass_item=False)
    rgb = rgb.clamp(-0.1, 1.1)
    rgb = torch.where((rgb - 0.0).abs() < 1e-3, rgb + 0.01, rgb)  # keep finite differences off the clip kinks
    rgb = torch.where((rgb - 1.0).abs() < 1e-3, rgb - 0.01, rgb)

    def fn(r, a):
        return L.photometric_loss_clipped(r, img, skin, a, 0.1)

    assert torch.autograd.gradcheck(fn, (rgb.requires_grad_(True), alpha.requires_grad_(True)), eps=1e-6,
                                    atol=1e-7)
