"""render_mesh end to end, vertex visibility, backends and devices."""

from __future__ import annotations

import math

import pytest
import torch
from render_meshes import icosphere, standin_mesh

from flamefit.render import (
    OrthographicCamera,
    camera_from_fov,
    look_at,
    rasterize,
    render_mesh,
    vertex_visibility,
)
from flamefit.render._backend import numba_available as _numba_available


def _sphere_scene(size=48, dtype=torch.float64, batch=1, subdivisions=3):
    v, f = icosphere(subdivisions, radius=0.1, dtype=dtype)
    R, t = look_at(torch.tensor([[0.0, 0.0, 0.5]], dtype=dtype), torch.zeros(1, 3, dtype=dtype))
    cam = camera_from_fov(math.radians(30), size, size, R=R.expand(batch, 3, 3), t=t.expand(batch, 3))
    return v[None].expand(batch, -1, -1).clone(), f, cam


def test_outputs_shapes_and_flat_colour():
    v, f, cam = _sphere_scene()
    albedo = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64).expand(v.shape[1], 3)
    out = render_mesh(v, f, cam, albedo=albedo, background=torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert out.rgb.shape == (1, 48, 48, 3) and out.alpha.shape == (1, 48, 48, 1)
    assert out.depth.shape == (1, 48, 48, 1) and out.normals.shape == (1, 48, 48, 3)
    assert out.tri_id.shape == (1, 48, 48) and out.mask.dtype == torch.bool and out.uv is None
    assert out.vertex_visible.shape == (1, v.shape[1])
    inner = torch.nn.functional.avg_pool2d(out.mask[None].double(), 3, 1, 1)[0] == 1  # away from the outline
    torch.testing.assert_close(out.rgb[inner], albedo[0].expand(int(inner.sum()), 3))
    torch.testing.assert_close(out.rgb[0, 0, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert (out.alpha[~out.mask] >= 0).all() and (out.alpha[inner] == 1).all()
    assert 0 < out.alpha[~out.mask].sum() < 0.5 * (~out.mask).sum()  # soft coverage just outside the edge


def test_normals_depth_and_lighting():
    v, f, cam = _sphere_scene()
    sh = torch.zeros(1, 9, dtype=torch.float64)
    sh[0, 0] = 1.0 / 0.2820947917738781  # DC only: shading == 1
    out = render_mesh(v, f, cam, sh=sh, antialias=False)
    m = out.mask[0]
    torch.testing.assert_close(out.rgb[0][m], torch.ones(int(m.sum()), 3, dtype=torch.float64))
    n = out.normals[0][m]
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(n.shape[0], dtype=torch.float64))
    assert (n[:, 2] < 0).all()  # facing the camera (OpenCV z forward)
    # the centre pixel sees the sphere's front pole at z = 0.5 - 0.1
    assert out.depth[0, 24, 24, 0].item() == pytest.approx(0.4, abs=2e-3)
    # light from the camera (-z in camera frame, linear band): brighter in the middle than at the rim
    sh_front = torch.zeros(1, 9, dtype=torch.float64)
    sh_front[0, 0], sh_front[0, 3] = 1.0, -1.0
    lit = render_mesh(v, f, cam, sh=sh_front, antialias=False).rgb[0, ..., 0]
    assert lit[24, 24] > lit[24, 14] > 0


def test_textured_render_uses_uvs(kernels):
    v, f, cam = _sphere_scene()
    vt = torch.stack([0.5 + 0.5 * v[0, :, 0] / 0.1, 0.5 + 0.5 * v[0, :, 1] / 0.1], -1)  # planar map
    tex = torch.zeros(2, 2, 3, dtype=torch.float64)
    tex[0, :, 0] = 1.0  # top row (v ~ 1, model +y up) red, bottom row green
    tex[1, :, 1] = 1.0
    out = render_mesh(v, f, cam, texture=(tex, vt, f), antialias=False)
    assert out.uv.shape == (1, 48, 48, 2)
    top, bottom = out.rgb[0, 14, 24], out.rgb[0, 34, 24]
    assert top[0] > 0.7 and top[1] < 0.3 and bottom[1] > 0.7 and bottom[0] < 0.3


def test_batch_renders_like_single_images(kernels):
    v, f, cam = _sphere_scene(batch=2)
    v = v.clone()
    v[1] = v[1] * 0.8 + torch.tensor([0.02, 0.0, 0.0], dtype=torch.float64)
    albedo = torch.rand(2, v.shape[1], 3, dtype=torch.float64)
    sh = torch.randn(2, 9, 3, dtype=torch.float64)
    both = render_mesh(v, f, cam, albedo=albedo, sh=sh)
    for b in range(2):
        cam_b = camera_from_fov(math.radians(30), 48, 48, R=cam.R[b : b + 1], t=cam.t[b : b + 1])
        one = render_mesh(v[b : b + 1], f, cam_b, albedo=albedo[b : b + 1], sh=sh[b : b + 1])
        torch.testing.assert_close(both.rgb[b : b + 1], one.rgb)
        torch.testing.assert_close(both.alpha[b : b + 1], one.alpha)


def test_render_gradients_reach_every_input():
    v, f, cam = _sphere_scene(size=32)
    v = v.clone().requires_grad_(True)
    albedo = torch.rand(1, v.shape[1], 3, dtype=torch.float64, requires_grad=True)
    sh = torch.randn(1, 9, 3, dtype=torch.float64, requires_grad=True)
    target = torch.rand(1, 32, 32, 3, dtype=torch.float64)
    out = render_mesh(v, f, cam, albedo=albedo, sh=sh)
    ((out.rgb - target).square().sum() + out.alpha.sum()).backward()
    for x in (v, albedo, sh):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_full_render_gradient_matches_finite_differences(kernels):
    v, f, cam = _sphere_scene(size=20, subdivisions=2)
    v = (v + 0.003 * torch.randn(v.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    v = v.requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    albedo = torch.rand(1, v.shape[1], 3, generator=g, dtype=torch.float64)
    sh = torch.randn(1, 9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 20, 20, 3, generator=g, dtype=torch.float64)
    ref = render_mesh(v.detach(), f, cam, albedo=albedo, sh=sh.detach())

    def fn(x, s):
        out = render_mesh(x, f, cam, albedo=albedo, sh=s)
        assert torch.equal(out.tri_id, ref.tri_id)
        return (out.rgb * w).sum()

    assert torch.autograd.gradcheck(fn, (v, sh), eps=1e-7, atol=1e-4, rtol=1e-3)


def test_vertex_visibility_front_and_back():
    v, f, cam = _sphere_scene(size=64)
    out = render_mesh(v, f, cam, antialias=False)
    vis = out.vertex_visible[0]
    z = v[0, :, 2]
    assert vis[z > 0.03].all()  # front cap (the camera is on +z)
    assert not vis[z < -0.01].any()  # back half
    # without the depth test, only vertices of rasterized triangles count
    only_tri = vertex_visibility(out.frags, f, v.shape[1])
    assert (only_tri <= vis).all()


def test_orthographic_render():
    v, f = icosphere(2, radius=0.1)
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))[None]
    cam = OrthographicCamera(scale=torch.tensor([[100.0]], dtype=torch.float64),
                             translation=torch.tensor([[16.0, 16.0]], dtype=torch.float64), R=R,
                             height=32, width=32)
    out = render_mesh(v[None], f, cam, antialias=False)
    assert out.mask[0, 16, 16] and not out.mask[0, 16, 28]
    assert out.depth[0, 16, 16, 0].item() == pytest.approx(-0.1, abs=2e-3)  # nearest point, z_cam = -0.1


@pytest.mark.skipif(not _numba_available(), reason="numba is not installed")
def test_numba_and_torch_backends_render_the_same(standin_2023, monkeypatch):
    """The CPU default (numba passes and kernels) against the all-torch path that CUDA runs."""
    import importlib

    verts, faces = standin_mesh(standin_2023)
    R, t = look_at(torch.tensor([[0.25, 0.05, 0.45]]), torch.tensor([[0.0, -0.02, 0.0]]))
    cam = camera_from_fov(math.radians(30), 96, 96, R=R, t=t)
    sh = torch.zeros(1, 9)
    sh[0, 0], sh[0, 3] = 3.0, -1.0
    a = render_mesh(verts[None], faces, cam, albedo=torch.full((5023, 3), 0.7), sh=sh, backend="numba")
    monkeypatch.setattr(importlib.import_module("flamefit.render._backend"), "NUMBA_KERNELS", False)
    b = render_mesh(verts[None], faces, cam, albedo=torch.full((5023, 3), 0.7), sh=sh, backend="torch")
    assert torch.equal(a.tri_id, b.tri_id)
    torch.testing.assert_close(a.rgb, b.rgb)
    torch.testing.assert_close(a.alpha, b.alpha)
    assert 0.15 < a.mask.float().mean() < 0.7


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree():
    v, f, cam = _sphere_scene(size=64, dtype=torch.float32)
    v = v + 0.002 * torch.randn(v.shape, generator=torch.Generator().manual_seed(0))
    albedo = torch.rand(1, v.shape[1], 3, generator=torch.Generator().manual_seed(1))
    sh = torch.randn(1, 9, 3, generator=torch.Generator().manual_seed(2))
    target = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    results = []
    for device in ("cpu", "cuda"):
        vd = v.to(device).requires_grad_(True)
        out = render_mesh(vd, f.to(device), cam.to(device), albedo=albedo.to(device), sh=sh.to(device))
        (out.rgb - target.to(device)).abs().mean().backward()
        results.append((out.tri_id.cpu(), out.rgb.detach().cpu(), out.alpha.detach().cpu(), vd.grad.cpu()))
    (ta, ra, aa, ga), (tb, rb, ab, gb) = results
    assert (ta != tb).float().mean() < 1e-3  # float32 on different hardware: allow a handful of edge pixels
    same = (ta == tb)[..., None]
    torch.testing.assert_close(ra * same, rb * same, atol=1e-4, rtol=1e-4)
    assert (aa - ab).abs().mean() < 1e-3
    assert torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), dim=0) > 0.99


def test_float32_inputs_give_float32_fragments():
    v, f, cam = _sphere_scene(size=16, dtype=torch.float32)
    frags = rasterize(cam.project(v), f, 16, 16, perspective_correct=True)
    assert frags.pix_bary_t.dtype == torch.float32 and frags.pix_depth.dtype == torch.float32


def test_numba_and_torch_kernels_give_the_same_render_and_gradients(monkeypatch):
    import importlib

    if not _numba_available():
        pytest.skip("numba is not installed")
    ops = importlib.import_module("flamefit.render._backend")
    v, f, cam = _sphere_scene(size=40, batch=2)
    v = v + 0.004 * torch.randn(v.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    g = torch.Generator().manual_seed(6)
    albedo = torch.rand(2, v.shape[1], 3, generator=g, dtype=torch.float64)
    sh = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    bg = torch.rand(2, 40, 40, 3, generator=g, dtype=torch.float64)
    w = torch.randn(2, 40, 40, 3, generator=g, dtype=torch.float64)
    results = []
    for flag in (True, False):
        monkeypatch.setattr(ops, "NUMBA_KERNELS", flag)
        inputs = [x.clone().requires_grad_(True) for x in (v, albedo, sh, bg)]
        out = render_mesh(inputs[0], f, cam, albedo=inputs[1], sh=inputs[2], background=inputs[3])
        ((out.rgb * w).sum() + out.alpha.sum()).backward()
        results.append([out.rgb.detach(), out.alpha.detach()] + [x.grad for x in inputs])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
