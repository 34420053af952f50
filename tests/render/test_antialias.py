"""Anti-aliasing: silhouette gradients, numba/torch agreement, and a silhouette-driven optimisation."""

from __future__ import annotations

import math

import pytest
import torch
from render_meshes import icosphere, random_soup

from flamefit.render import (
    OrthographicCamera,
    antialias,
    edge_neighbours,
    rasterize,
    render_mesh,
    silhouette_pairs,
    soft_mask,
)
from flamefit.render._backend import numba_available as _numba_available


def _sphere_px(center=(16.0, 16.0), radius=9.0, dtype=torch.float64):
    v, f = icosphere(2, dtype=dtype)
    # a generic orientation: no vertex exactly on the outline
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(7), dtype=dtype))
    v = v @ (q * torch.sign(torch.linalg.det(q)))
    verts = torch.cat([v[:, :2] * radius + torch.tensor(center, dtype=dtype), v[:, 2:] + 5.0], -1)[None]
    return verts, f


def test_edge_neighbours_of_a_closed_mesh_and_of_a_boundary():
    _, f = icosphere(1)
    nbr = edge_neighbours(f.numpy())
    assert (nbr >= 0).all()  # closed: every edge has a neighbour
    nbr_open = edge_neighbours(f[:10].numpy())
    assert (nbr_open < 0).any()


def test_antialias_coverage_of_polygons_matches_their_area():
    # straight edges at sub-pixel positions: a square is exact up to its corners
    pts = torch.tensor([[3.3, 4.2], [20.7, 4.2], [20.7, 17.6], [3.3, 17.6]], dtype=torch.float64)
    verts = torch.cat([pts, torch.ones(4, 1, dtype=torch.float64)], 1)[None]
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    frags = rasterize(verts, faces, 24, 24)
    soft = soft_mask(frags, verts, faces)
    assert frags.mask.sum() == 252
    assert soft.sum().item() == pytest.approx(17.4 * 13.4, abs=0.5)  # corners: 1 - a - b instead of (1-a)(1-b)


def test_antialias_blends_only_at_the_silhouette():
    verts, f = _sphere_px()
    frags = rasterize(verts, f, 32, 32)
    mask = frags.mask.to(torch.float64).unsqueeze(-1)
    soft = antialias(mask, frags, verts, f)
    changed = (soft != mask)[0, ..., 0]
    assert changed.any()
    # only pixels next to the boundary change, and values stay in [0, 1]
    m = frags.mask[0]
    edge = m ^ torch.nn.functional.max_pool2d((~m)[None].float(), 3, 1, 1)[0].bool().logical_not()
    border = torch.nn.functional.max_pool2d(edge[None].float(), 3, 1, 1)[0].bool()
    assert not (changed & ~border).any()
    assert soft.min() >= 0 and soft.max() <= 1
    # the blended coverage approximates the area of the projected outline (a convex polygon)
    from scipy.spatial import ConvexHull

    area = ConvexHull(verts[0, :, :2].numpy()).volume
    assert abs(soft.sum().item() - area) < 0.025 * area
    torch.testing.assert_close(soft_mask(frags, verts, f), soft)


def test_antialias_gradients_match_finite_differences(kernels):
    verts, f = _sphere_px(center=(10.3, 9.6), radius=6.2)
    verts = verts.requires_grad_(True)
    frags = rasterize(verts.detach(), f, 20, 20)
    g = torch.Generator().manual_seed(0)
    color = torch.rand(1, 20, 20, 3, generator=g, dtype=torch.float64, requires_grad=True)
    pairs = silhouette_pairs(frags, verts.detach(), f)
    assert pairs[0].numel() > 10

    def fn(v, c):
        p = silhouette_pairs(frags, v.detach(), f)
        assert all(torch.equal(a, b) for a, b in zip(p, pairs, strict=True))
        return antialias(c, frags, v, f)

    assert torch.autograd.gradcheck(fn, (verts, color), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not _numba_available(), reason="numba is not installed")
def test_numba_and_torch_select_the_same_pairs():
    verts, f = _sphere_px(center=(20.0, 14.0), radius=11.0)
    soup, sf = random_soup(60, 28, 40, seed=3, size_px=10)
    allv = torch.cat([verts, soup], 1)
    allf = torch.cat([f, sf + verts.shape[1]])
    frags = rasterize(allv, allf, 28, 40)
    a = silhouette_pairs(frags, allv, allf, backend="numba")
    b = silhouette_pairs(frags, allv, allf, backend="torch")
    assert a[0].numel() > 50

    def key(p):
        rows = torch.stack(p, 1)
        order = torch.argsort(rows[:, 0] * 10 + rows[:, 4])
        return rows[order]

    assert torch.equal(key(a), key(b))


def test_hard_rasterization_alone_has_no_silhouette_gradient():
    verts, f = _sphere_px()
    shift = torch.zeros(1, 1, 3, dtype=torch.float64, requires_grad=True)
    frags = rasterize(verts + shift, f, 32, 32)
    mask = frags.mask.to(torch.float64)
    assert not mask.requires_grad  # nothing to differentiate: that is what antialias is for
    soft = soft_mask(frags, verts + shift, f)
    soft.sum().backward()
    assert shift.grad[0, 0, :2].abs().sum() > 0


def test_silhouette_driven_optimisation_converges(kernels):
    """Move and scale a sphere so that its anti-aliased silhouette matches a target mask."""
    v, f = icosphere(2, dtype=torch.float32)
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0]))[None]

    def render_alpha(offset_px, log_scale):
        cam = OrthographicCamera(scale=torch.exp(log_scale).view(1, 1) * 10.0,
                                 translation=(torch.tensor([32.0, 32.0]) + offset_px).view(1, 2),
                                 R=R, height=64, width=64)
        return render_mesh(v[None], f, cam).alpha

    with torch.no_grad():
        target = render_alpha(torch.tensor([5.0, -4.0]), torch.tensor(math.log(1.3)))
    offset = torch.zeros(2, requires_grad=True)
    log_scale = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([offset, log_scale], lr=0.3)
    for _ in range(120):
        opt.zero_grad()
        loss = (render_alpha(offset, log_scale) - target).square().sum()
        loss.backward()
        opt.step()
    torch.testing.assert_close(offset.detach(), torch.tensor([5.0, -4.0]), atol=0.15, rtol=0)
    assert abs(math.exp(log_scale.item()) - 1.3) < 0.02
