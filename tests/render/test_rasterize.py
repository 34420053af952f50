"""Rasterizer: coverage, depth order, numba/torch agreement, barycentric gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from render_meshes import icosphere, random_soup

from flamefit.render import camera_from_fov, look_at, rasterize
from flamefit.render._backend import numba_available as _numba_available

BACKENDS = ["torch"] + (["numba"] if _numba_available() else [])
needs_numba = pytest.mark.skipif(not _numba_available(), reason="numba is not installed")


def _inside_reference(tri_xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Independent point-in-triangle test at pixel centres (same-side test with cross products)."""
    ys, xs = np.mgrid[0:height, 0:width]
    p = np.stack([xs + 0.5, ys + 0.5], -1).astype(np.float64)
    a, b, c = tri_xy
    def side(p0, p1):
        return (p1[0] - p0[0]) * (p[..., 1] - p0[1]) - (p1[1] - p0[1]) * (p[..., 0] - p0[0])
    s0, s1, s2 = side(a, b), side(b, c), side(c, a)
    return ((s0 >= 0) & (s1 >= 0) & (s2 >= 0)) | ((s0 <= 0) & (s1 <= 0) & (s2 <= 0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_triangle_covers_exactly_the_expected_pixels(backend):
    # right triangle with legs along the pixel grid: covers pixel centres (x+0.5, y+0.5) with x + y <= 6
    # inside the 8x8 corner at (2, 3)
    verts = torch.tensor([[[2.0, 3.0, 1.0], [10.0, 3.0, 1.0], [2.0, 11.0, 1.0]]])
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize(verts, faces, 16, 16, backend=backend)
    expected = np.zeros((16, 16), dtype=bool)
    for y in range(16):
        for x in range(16):
            u, v = x + 0.5 - 2.0, y + 0.5 - 3.0
            expected[y, x] = u >= 0 and v >= 0 and u + v <= 8.0
    assert expected.sum() == 36  # 8 + 7 + ... + 1
    np.testing.assert_array_equal(frags.mask[0].numpy(), expected)
    assert (frags.tri_id[0][frags.mask[0]] == 0).all()
    assert (frags.tri_id[0][~frags.mask[0]] == -1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_triangles_match_reference_coverage(backend):
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        xy = torch.rand(3, 2, generator=g, dtype=torch.float64) * 30 - 5  # partly outside the image
        verts = torch.cat([xy, torch.ones(3, 1, dtype=torch.float64)], -1)[None]
        frags = rasterize(verts, torch.tensor([[0, 1, 2]]), 20, 24, backend=backend)
        np.testing.assert_array_equal(frags.mask[0].numpy(), _inside_reference(xy.numpy(), 20, 24))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_of_two_overlapping_triangles_wins(backend, near_first):
    near = [[4.0, 4.0, 2.0], [28.0, 4.0, 2.0], [4.0, 28.0, 2.0]]
    far = [[2.0, 2.0, 5.0], [30.0, 2.0, 5.0], [2.0, 30.0, 5.0]]
    verts = torch.tensor([(near + far) if near_first else (far + near)])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(verts, faces, 32, 32, backend=backend)
    near_id = 0 if near_first else 1
    # pixel (10, 10) is inside both: the near one wins; pixel (2, 2) only in the far one
    assert frags.tri_id[0, 10, 10] == near_id
    assert frags.tri_id[0, 2, 2] == 1 - near_id
    assert frags.depth[0, 10, 10].item() == pytest.approx(2.0)
    assert frags.depth[0, 2, 2].item() == pytest.approx(5.0)


def test_perspective_correct_depth_and_barycentrics():
    # a tilted plane seen by a pinhole camera: depth at each pixel must be the ray-plane intersection
    cam = camera_from_fov(math.radians(60), 32, 32, dtype=torch.float64)
    world = torch.tensor([[[-1.0, -1.0, 2.0], [1.0, -1.0, 4.0], [-1.0, 1.0, 2.0], [1.0, 1.0, 4.0]]],
                         dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [2, 1, 3]])
    frags = rasterize(cam.project(world), faces, 32, 32, perspective_correct=True)
    K = cam.K[0]
    xs = frags.pix_x.double() + 0.5
    rx = (xs - K[0, 2]) / K[0, 0]
    # plane z = 3 + x (x in [-1, 1]); along the ray (rx z, ry z, z): z = 3 + rx z -> z = 3 / (1 - rx)
    np.testing.assert_allclose(frags.pix_depth.numpy(), (3.0 / (1.0 - rx)).numpy(), rtol=1e-9)
    # interpolating the world positions with the barycentrics gives points on the rays
    pos = (frags.pix_bary.unsqueeze(-1) * world[0][faces[frags.pix_tri]]).sum(1)
    np.testing.assert_allclose(pos[:, 2].numpy(), frags.pix_depth.numpy(), rtol=1e-9)
    np.testing.assert_allclose((pos[:, 0] / pos[:, 2]).numpy(), rx.numpy(), atol=1e-9)
    np.testing.assert_allclose(frags.pix_bary.sum(1).numpy(), 1.0, atol=1e-12)


def test_triangles_behind_the_camera_are_dropped_with_perspective():
    verts = torch.tensor([[[2.0, 2.0, -1.0], [14.0, 2.0, 1.0], [2.0, 14.0, 1.0]]])
    faces = torch.tensor([[0, 1, 2]])
    assert rasterize(verts, faces, 16, 16, perspective_correct=True).pix.numel() == 0
    assert rasterize(verts, faces, 16, 16, perspective_correct=False).pix.numel() > 0


@needs_numba
@pytest.mark.parametrize("perspective", [False, True])
def test_numba_and_torch_visibility_agree_exactly(perspective):
    verts, faces = random_soup(400, 61, 83, seed=1, size_px=15)
    verts = torch.cat([verts, random_soup(400, 61, 83, seed=2, size_px=15)[0]], 0)  # batch of 2
    a = rasterize(verts, faces, 61, 83, perspective_correct=perspective, backend="numba")
    b = rasterize(verts, faces, 61, 83, perspective_correct=perspective, backend="torch")
    assert a.pix.numel() > 3000
    assert torch.equal(a.tri_id, b.tri_id)
    assert torch.equal(a.zbuf, b.zbuf)
    torch.testing.assert_close(a.pix_bary_t, b.pix_bary_t)
    torch.testing.assert_close(a.pix_depth, b.pix_depth)


@needs_numba
def test_numba_and_torch_agree_on_a_closed_mesh_with_shared_edges():
    v, f = icosphere(3)
    R, t = look_at(torch.tensor([[0.3, 0.2, 3.0]], dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64))
    cam = camera_from_fov(math.radians(40), 96, 128, R=R, t=t)
    vp = cam.project(v[None])
    a = rasterize(vp, f, 96, 128, perspective_correct=True, backend="numba")
    b = rasterize(vp, f, 96, 128, perspective_correct=True, backend="torch")
    assert torch.equal(a.tri_id, b.tri_id)
    # a closed mesh has no cracks: the covered region is a filled disc
    mask = a.mask[0].numpy()
    assert mask[48, 64] and mask.sum() > 0.1 * mask.size
    rows = np.flatnonzero(mask.any(1))
    for r in rows[2:-2]:
        cols = np.flatnonzero(mask[r])
        assert cols[-1] - cols[0] + 1 == cols.size, f"hole in row {r}"


@pytest.mark.parametrize("perspective", [False, True])
def test_barycentric_and_depth_gradients_match_finite_differences(perspective, kernels):
    verts, faces = random_soup(6, 24, 24, seed=5, size_px=18)
    verts = verts.clone().requires_grad_(True)
    frags = rasterize(verts, faces, 24, 24, perspective_correct=perspective)
    assert frags.pix.numel() > 50
    g = torch.Generator().manual_seed(0)
    wb = torch.randn(frags.pix_bary_t.shape, generator=g, dtype=torch.float64)
    wd = torch.randn(frags.pix_depth.shape, generator=g, dtype=torch.float64)

    def fn(v):
        fr = rasterize(v, faces, 24, 24, perspective_correct=perspective)
        assert torch.equal(fr.pix, frags.pix)  # the perturbation must not move any pixel
        return (fr.pix_bary_t * wb).sum() + (fr.pix_depth * wd).sum()

    assert torch.autograd.gradcheck(fn, (verts,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_barycentrics_are_float32_accurate_far_from_the_origin():
    # small triangle at x ~ 1000 px: relative-to-corner coefficients keep float32 error small
    v64 = torch.tensor([[[1000.2, 500.3, 1.0], [1003.9, 500.1, 1.0], [1001.0, 503.7, 1.0]]], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2]])
    a = rasterize(v64, f, 520, 1010)
    b = rasterize(v64.float(), f, 520, 1010)
    assert torch.equal(a.pix, b.pix)
    assert (a.pix_bary_t - b.pix_bary_t.double()).abs().max() < 1e-4


def test_fragments_full_images_and_unpack():
    verts, faces = random_soup(30, 20, 20, seed=9)
    frags = rasterize(verts, faces, 20, 20)
    assert frags.tri_id.shape == (1, 20, 20) and frags.tri_id.dtype == torch.int64
    assert frags.bary.shape == (1, 20, 20, 3) and frags.depth.shape == (1, 20, 20)
    assert torch.all(frags.bary[~frags.mask] == 0)
    np.testing.assert_allclose(frags.bary[frags.mask].sum(-1).numpy(), 1.0, atol=1e-9)
    assert torch.isinf(frags.zbuf[~frags.mask]).all()
    assert torch.equal(frags.pack(frags.bary), frags.pix_bary)
