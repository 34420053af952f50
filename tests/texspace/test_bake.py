"""UV bake (flamefit.render.bake) on analytic scenes: planes with known images, occluders, grazing angles."""

from __future__ import annotations

import math

import pytest
import torch

from flamefit.render import OrthographicCamera, PerspectiveCamera
from flamefit.render.bake import bake_uv, rasterize_uv
from flamefit.render.shade import face_normals


def quad(x0, x1, y0, y1, z, u0=0.0, u1=1.0):
    """A camera-facing quad (normal -z in the OpenCV frame) whose UV maps x -> u in [u0,u1], y (down) -> v
    from 1 (top, y0) to 0 (bottom, y1)."""
    v = torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=torch.float64)
    vt = torch.tensor([[u0, 1.0], [u1, 1.0], [u1, 0.0], [u0, 0.0]], dtype=torch.float64)
    f = torch.tensor([[0, 2, 1], [0, 3, 2]])
    return v, f, vt, f.clone()


def pinhole(H, W, f_px, batch=1):
    K = torch.tensor([[f_px, 0.0, W / 2], [0.0, f_px, H / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    return PerspectiveCamera(K=K.expand(batch, 3, 3).clone(), R=eye.expand(batch, 3, 3).clone(),
                             t=torch.zeros(batch, 3, dtype=torch.float64), height=H, width=W)


def test_quad_faces_camera():
    v, f, _, _ = quad(-1, 1, -1, 1, 1.0)
    n = face_normals(v[None], f)
    assert torch.allclose(n[0], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand(2, 3))


def test_rasterize_uv_covers_the_layout():
    _, _, vt, ft = quad(-1, 1, -1, 1, 1.0, u0=0.0, u1=0.5)
    uv = rasterize_uv(vt, ft, (16, 32))
    assert uv.mask.shape == (16, 32)
    assert uv.mask[:, :16].all() and not uv.mask[:, 16:].any()


@pytest.mark.parametrize("ortho", [False, True])
def test_plane_facing_camera_maps_back_exactly(ortho):
    H = W = 24
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, H, W, 3, generator=gen, dtype=torch.float64)
    if ortho:
        v, f, vt, ft = quad(-0.5, 0.5, -0.5, 0.5, 0.3)
        cam = OrthographicCamera(scale=torch.tensor([[float(W)]], dtype=torch.float64),
                                 translation=torch.tensor([[W / 2, H / 2]], dtype=torch.float64),
                                 R=torch.eye(3, dtype=torch.float64)[None], height=H, width=W)
    else:
        v, f, vt, ft = quad(-0.5, 0.5, -0.5, 0.5, 1.0)
        cam = pinhole(H, W, float(W))
    out = bake_uv(v[None], f, vt, ft, cam, image, size=(H, W))
    # texel (r, c) lands on pixel centre (r, c): the bake is the image itself
    assert out.visible.all()
    assert torch.allclose(out.color, image, atol=1e-9)
    assert torch.allclose(out.pixel_xy[0, 5, 7], torch.tensor([7.5, 5.5], dtype=torch.float64))
    if ortho:
        assert torch.allclose(out.cos_view, torch.ones_like(out.cos_view))
    else:  # cos between -z and the ray to the camera: z / |p|
        p = out.points_cam[0]
        assert torch.allclose(out.cos_view[0], p[..., 2] / p.norm(dim=-1), atol=1e-9)
    assert torch.allclose(out.weight, out.cos_view)


def test_texel_behind_another_surface_is_invisible():
    H = W = 40
    # back plane (u in [0, 0.5]) at z = 2 filling the view; a small front plane (u in [0.5, 1]) at z = 1
    vb, fb, vtb, ftb = quad(-1, 1, -1, 1, 2.0, 0.0, 0.5)
    vf, ff, vtf, ftf = quad(-0.25, 0.25, -0.25, 0.25, 1.0, 0.5, 1.0)
    v = torch.cat([vb, vf])[None]
    f = torch.cat([fb, ff + 4])
    vt = torch.cat([vtb, vtf])
    ft = torch.cat([ftb, ftf + 4])
    cam = pinhole(H, W, float(W))  # back plane spans x_px in [0, 40], front plane [10, 30]
    image = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = bake_uv(v, f, vt, ft, cam, image, size=(40, 40))
    vis = out.visible[0]
    back = vis[:, :20]
    # back texel (r, c) lands on pixel (x, y) = (2c + 1, r + 0.5); the front plane covers x, y in [10, 30]
    assert not back[11:29, 6:14].any()
    assert back[:9].all() and back[-9:].all() and back[:, :4].all() and back[:, 16:].all()
    assert vis[:, 20:].all()  # the front plane is fully visible
    assert (out.weight[0][~vis] == 0).all()


def test_grazing_angle_gets_low_confidence_and_back_faces_are_invisible():
    H = W = 32
    cam = OrthographicCamera(scale=torch.tensor([[20.0]], dtype=torch.float64),
                             translation=torch.tensor([[W / 2, H / 2]], dtype=torch.float64),
                             R=torch.eye(3, dtype=torch.float64)[None], height=H, width=W)
    image = torch.ones(1, H, W, 3, dtype=torch.float64)
    v, f, vt, ft = quad(-0.5, 0.5, -0.5, 0.5, 0.0)
    res = {}
    for deg in (0.0, 80.0, 180.0):
        a = math.radians(deg)
        Ry = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]],
                          dtype=torch.float64)
        out = bake_uv((v @ Ry.T)[None], f, vt, ft, cam, image, size=16)
        res[deg] = out
    assert torch.allclose(res[0.0].cos_view[res[0.0].uv_mask[None]], torch.tensor(1.0, dtype=torch.float64))
    c80 = res[80.0].cos_view[0][res[80.0].uv_mask]
    assert torch.allclose(c80, torch.tensor(math.cos(math.radians(80.0)), dtype=torch.float64), atol=1e-9)
    w80 = res[80.0].weight[0][res[80.0].visible[0]]
    assert w80.numel() > 0 and w80.max() < 0.2
    assert not res[180.0].visible.any() and (res[180.0].weight == 0).all()


def test_image_mask_and_batch():
    H = W = 16
    v, f, vt, ft = quad(-0.5, 0.5, -0.5, 0.5, 1.0)
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(2, H, W, 3, generator=gen, dtype=torch.float64)
    mask = torch.zeros(2, H, W, dtype=torch.float64)
    mask[0, :, : W // 2] = 1.0
    mask[1, : H // 2] = 1.0
    verts = torch.stack([v, v * torch.tensor([1.0, 1.0, 1.25], dtype=torch.float64)])  # 2nd is further away
    cam = pinhole(H, W, float(W), batch=2)
    both = bake_uv(verts, f, vt, ft, cam, images, mask=mask, size=16)
    assert (both.weight[0][:, 10:] == 0).all() and (both.weight[0][:, :6] > 0.8).all()
    assert (both.weight[1][10:] == 0).all() and (both.weight[1][:6, 4:12] > 0.8).all()
    for b in range(2):
        one = bake_uv(verts[b:b + 1], f, vt, ft, pinhole(H, W, float(W)), images[b:b + 1], mask=mask[b:b + 1],
                      size=16)
        assert torch.allclose(one.color[0], both.color[b]) and torch.equal(one.visible[0], both.visible[b])
        assert torch.allclose(one.weight[0], both.weight[b])


def test_bad_shapes_raise():
    v, f, vt, ft = quad(-0.5, 0.5, -0.5, 0.5, 1.0)
    with pytest.raises(ValueError, match="does not match"):
        bake_uv(v[None], f, vt, ft, pinhole(8, 8, 8.0), torch.zeros(1, 9, 8, 3, dtype=torch.float64))
