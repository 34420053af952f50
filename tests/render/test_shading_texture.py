"""interpolate, texture, normals and SH shading: analytic cases and finite-difference gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from render_meshes import icosphere, random_soup

from flamefit.render import (
    SH_CONSTANTS,
    interpolate,
    interpolate_uv,
    rasterize,
    sh_basis,
    sh_shading,
    texture,
    vertex_normals,
)
from flamefit.render.shade import sh_shading_packed


def _frags(seed=5, n=6, size=24, perspective=True):
    verts, faces = random_soup(n, size, size, seed=seed, size_px=18)
    return verts, faces, rasterize(verts, faces, size, size, perspective_correct=perspective)


def test_interpolate_reproduces_linear_attributes_and_zero_background():
    verts, faces, frags = _frags(perspective=False)
    # an attribute that is an affine function of screen position interpolates exactly (linear barycentrics)
    attr = torch.cat([verts[..., :2] * torch.tensor([2.0, -1.0], dtype=torch.float64) + 3.0,
                      torch.ones_like(verts[..., :1])], -1)
    img = interpolate(attr, faces, frags)
    ys, xs = torch.meshgrid(torch.arange(24.0) + 0.5, torch.arange(24.0) + 0.5, indexing="ij")
    m = frags.mask[0]
    torch.testing.assert_close(img[0, ..., 0][m], (2 * xs + 3).double()[m])
    torch.testing.assert_close(img[0, ..., 1][m], (-ys + 3).double()[m])
    assert torch.all(img[0][~m] == 0)
    torch.testing.assert_close(interpolate(attr[0], faces, frags), img)  # unbatched attribute
    torch.testing.assert_close(interpolate(attr, faces, frags, packed=True), frags.pack(img))


def test_interpolate_gradients_match_finite_differences(kernels):
    verts, faces = random_soup(6, 24, 24, seed=5, size_px=18)
    verts = verts.requires_grad_(True)
    attr = torch.randn(1, verts.shape[1], 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 24, 24, 4, dtype=torch.float64)

    def fn(v, a):
        fr = rasterize(v, faces, 24, 24, perspective_correct=True)
        return (interpolate(a, faces, fr) * w).sum()

    assert torch.autograd.gradcheck(fn, (verts, attr), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_interpolate_batched_attributes():
    v1, faces = random_soup(20, 16, 16, seed=1)
    v2, _ = random_soup(20, 16, 16, seed=2)
    verts = torch.cat([v1, v2])
    attr = torch.randn(2, verts.shape[1], 2, dtype=torch.float64)
    both = interpolate(attr, faces, rasterize(verts, faces, 16, 16))
    for b in range(2):
        one = interpolate(attr[b : b + 1], faces, rasterize(verts[b : b + 1], faces, 16, 16))
        torch.testing.assert_close(both[b : b + 1], one)


def test_texture_kernels_agree(monkeypatch):
    import importlib

    ops = importlib.import_module("flamefit.render._backend")
    g = torch.Generator().manual_seed(3)
    tex = torch.rand(2, 7, 9, 3, generator=g, dtype=torch.float64)
    uv = torch.rand(2, 5, 6, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3
    w = torch.randn(2, 5, 6, 3, generator=g, dtype=torch.float64)
    results = []
    for flag in (True, False):
        monkeypatch.setattr(ops, "NUMBA_KERNELS", flag)
        for mode in ("clamp", "wrap"):
            t, u = tex.clone().requires_grad_(True), uv.clone().requires_grad_(True)
            out = texture(t, u, mode=mode)
            (out * w).sum().backward()
            results.append((out.detach(), t.grad, u.grad))
    for a, b in zip(results[:2], results[2:], strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y)


def test_constant_texture_renders_constant_colour():
    _, faces, frags = _frags()
    vt = torch.rand(3 * 6, 2, dtype=torch.float64) * 1.4 - 0.2  # also outside [0, 1]
    uv = interpolate_uv(vt, faces, frags)
    tex = torch.empty(7, 5, 3, dtype=torch.float64)
    tex[:] = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    for mode in ("clamp", "wrap"):
        out = texture(tex, uv, mode=mode)
        m = frags.mask[0]
        torch.testing.assert_close(out[0][m], tex[0, 0].expand(int(m.sum()), 3))


def test_uv_lookup_hits_known_texels():
    Ht, Wt = 4, 8
    tex = torch.arange(Ht * Wt * 2, dtype=torch.float64).view(Ht, Wt, 2)
    # texel (row r, col c) centre: u = (c + 0.5) / Wt, v = 1 - (r + 0.5) / Ht  (v up: row 0 is v ~ 1)
    rows, cols = torch.tensor([0, 3, 1, 2]), torch.tensor([0, 7, 5, 2])
    uv = torch.stack([(cols + 0.5) / Wt, 1 - (rows + 0.5) / Ht], -1).double().view(1, 1, 4, 2)
    out = texture(tex, uv)[0, 0]
    torch.testing.assert_close(out, tex[rows, cols])
    # halfway between two texel centres horizontally: the mean of both
    uv_mid = torch.tensor([[[[(2 + 1.0) / Wt, 1 - 0.5 / Ht]]]], dtype=torch.float64)
    torch.testing.assert_close(texture(tex, uv_mid)[0, 0, 0], 0.5 * (tex[0, 2] + tex[0, 3]))
    # the top-left corner (u=0, v=1) clamps to texel (0, 0); wrap blends with the opposite edges
    corner = torch.tensor([[[[0.0, 1.0]]]], dtype=torch.float64)
    torch.testing.assert_close(texture(tex, corner)[0, 0, 0], tex[0, 0])
    wrapped = texture(tex, corner, mode="wrap")[0, 0, 0]
    torch.testing.assert_close(wrapped, 0.25 * (tex[0, 0] + tex[0, -1] + tex[-1, 0] + tex[-1, -1]))


def test_texture_gradients_match_finite_differences(kernels):
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(2, 5, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    uv = (torch.rand(2, 3, 4, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    for mode in ("clamp", "wrap"):
        assert torch.autograd.gradcheck(lambda t, u, m=mode: texture(t, u, mode=m), (tex, uv), eps=1e-6, atol=1e-5)


def test_vertex_normals_of_a_sphere_point_outwards():
    v, f = icosphere(2)
    n = vertex_normals(v[None] * 2.0 + 1.0, f)[0]
    radial = v / v.norm(dim=-1, keepdim=True)
    assert (n * radial).sum(-1).min() > 0.999  # area-weighted normals of a sphere: radial to 1e-3
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(v.shape[0], dtype=torch.float64))


def test_vertex_normal_gradients_match_finite_differences(kernels):
    v, f = icosphere(1)
    v = (v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    v = v[None].requires_grad_(True)
    w = torch.randn(1, v.shape[1], 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: (vertex_normals(x, f) * w).sum(), (v,), eps=1e-6, atol=1e-5)


def test_sh_with_only_the_dc_term_is_flat_shading():
    n = torch.nn.functional.normalize(torch.randn(2, 5, 7, 3, dtype=torch.float64), dim=-1)
    sh = torch.zeros(2, 9, 3, dtype=torch.float64)
    sh[:, 0] = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    out = sh_shading(n, sh)
    expected = SH_CONSTANTS[0] * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(out, expected.expand_as(out))
    # shared coefficients (B,9) light all channels alike
    out_shared = sh_shading(n, sh[:, :, 1])
    torch.testing.assert_close(out_shared, out[..., 1:2].expand_as(out_shared))


def test_sh_basis_matches_the_deca_formula():
    n = torch.nn.functional.normalize(torch.randn(11, 3, dtype=torch.float64), dim=-1)
    x, y, z = n.unbind(-1)
    pi = math.pi
    c = [1 / math.sqrt(4 * pi), (2 * pi / 3) * math.sqrt(3 / (4 * pi)), (pi / 4) * 3 * math.sqrt(5 / (12 * pi)),
         (pi / 4) * 1.5 * math.sqrt(5 / (12 * pi)), (pi / 4) * 0.5 * math.sqrt(5 / (4 * pi))]
    ref = torch.stack([torch.full_like(x, c[0]), c[1] * x, c[1] * y, c[1] * z, c[2] * x * y, c[2] * x * z,
                       c[2] * y * z, c[3] * (x * x - y * y), c[4] * (3 * z * z - 1)], -1)
    torch.testing.assert_close(sh_basis(n), ref)


@pytest.mark.parametrize("batch", [1, 3])
def test_sh_shading_gradients_and_packed_variant(batch, kernels):
    g = torch.Generator().manual_seed(2)
    counts = [5, 0, 7][:batch] if batch > 1 else [9]
    N = sum(counts)
    n = torch.nn.functional.normalize(torch.randn(3, N, generator=g, dtype=torch.float64), dim=0)
    n.requires_grad_(True)
    sh = torch.randn(batch, 9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: sh_shading_packed(a, b, counts), (n, sh), eps=1e-6, atol=1e-6)
    # packed == dense formula per image
    packed = sh_shading_packed(n, sh, counts)
    start = 0
    for b, k in enumerate(counts):
        dense = sh_shading(n[:, start : start + k].t()[None], sh[b : b + 1])[0]
        torch.testing.assert_close(packed[:, start : start + k].t(), dense)
        start += k


def test_sh_gradient_matches_finite_differences_through_rendering():
    # d(rendered shading)/d(sh) along a random direction, with the full image path
    verts, faces = random_soup(6, 20, 20, seed=4, size_px=16)
    normals = torch.nn.functional.normalize(torch.randn(1, verts.shape[1], 3, dtype=torch.float64), dim=-1)
    frags = rasterize(verts, faces, 20, 20)
    n_img = torch.nn.functional.normalize(interpolate(normals, faces, frags), dim=-1)
    sh = torch.randn(1, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: sh_shading(n_img, s), (sh,), eps=1e-6, atol=1e-6)
    assert np.isfinite(sh_shading(n_img, sh).detach().numpy()).all()


@pytest.mark.parametrize("batch,sh_channels", [(1, 3), (3, 3), (3, 1)])
def test_shade_albedo_fused_equals_composed_and_finite_differences(monkeypatch, batch, sh_channels):
    """The renderer's fused shading (numba) equals colour * SH(normalised raw normals) composed of the public
    ops, values and gradients (colour, raw normals, light), and its gradients match finite differences."""
    import flamefit.render._backend as backend
    from flamefit.render.shade import shade_albedo_packed

    g = torch.Generator().manual_seed(7)
    counts = [5, 0, 7][:batch] if batch > 1 else [9]
    N = sum(counts)
    bidx = torch.repeat_interleave(torch.arange(batch), torch.tensor(counts))
    color = torch.rand(3, N, generator=g, dtype=torch.float64)
    raw = torch.randn(3, N, generator=g, dtype=torch.float64) * 0.3  # unnormalised, as interpolated
    sh = torch.randn(batch, 9, sh_channels, generator=g, dtype=torch.float64)
    sh_in = sh if sh_channels == 3 else sh[..., 0]  # (B,9): one set shared by the channels
    go = torch.randn(3, N, generator=g, dtype=torch.float64)
    results = []
    for numba_on in (True, False):
        monkeypatch.setattr(backend, "NUMBA_KERNELS", numba_on)
        leaves = [t.clone().requires_grad_(True) for t in (color, raw, sh_in)]
        out = shade_albedo_packed(leaves[0], leaves[1], leaves[2], counts, bidx)
        results.append((out, *torch.autograd.grad(out, leaves, go)))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
    sq = raw * raw
    unit = raw / (sq[0] + sq[1] + sq[2]).sqrt()
    torch.testing.assert_close(results[0][0], color * sh_shading_packed(unit, sh_in, counts))
    monkeypatch.setattr(backend, "NUMBA_KERNELS", True)
    assert torch.autograd.gradcheck(lambda c, r, s: shade_albedo_packed(c, r, s, counts, bidx),
                                    tuple(t.clone().requires_grad_(True) for t in (color, raw, sh_in)), eps=1e-6,
                                    atol=1e-6)
