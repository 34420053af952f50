"""Unwrapping recovers the albedo a lit, textured mesh was rendered with (render_mesh -> unwrap_albedo)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flamefit.render import PerspectiveCamera, render_mesh
from flamefit.texspace.unwrap import unwrap_albedo, unwrap_fit


def bumpy_grid(n=25):
    """Height field facing the camera (normal roughly -z), UV = its (x, y) extent, v up."""
    s = torch.linspace(-0.5, 0.5, n, dtype=torch.float64)
    y, x = torch.meshgrid(s, s, indexing="ij")
    z = 1.2 + 0.08 * torch.cos(3.0 * x) * torch.cos(2.0 * y) + 0.1 * x
    verts = torch.stack([x, y, z], -1).reshape(-1, 3)
    vt = torch.stack([x + 0.5, 0.5 - y], -1).reshape(-1, 2)
    idx = torch.arange(n * n).reshape(n, n)
    tl, tr, bl, br = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = torch.cat([torch.stack([tl, br, tr], -1).reshape(-1, 3), torch.stack([tl, bl, br], -1).reshape(-1, 3)])
    return verts, faces, vt


def smooth_texture(size=32):
    r = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    rr, cc = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([0.5 + 0.25 * torch.sin(2 * math.pi * cc), 0.4 + 0.2 * torch.cos(2 * math.pi * rr),
                        0.3 + 0.1 * cc + 0.1 * rr], -1)


def scene():
    verts, faces, vt = bumpy_grid()
    H = W = 96
    K = torch.tensor([[110.0, 0, W / 2], [0, 110.0, H / 2], [0, 0, 1]], dtype=torch.float64)
    R = torch.eye(3, dtype=torch.float64)
    t = torch.zeros(3, dtype=torch.float64)
    sh = torch.zeros(9, 3, dtype=torch.float64)
    sh[0] = torch.tensor([1.9, 1.8, 1.7])
    sh[1] = 0.15  # light from +x
    sh[3] = -0.2  # and from the camera side (-z)
    tex = smooth_texture()
    cam = PerspectiveCamera(K=K[None], R=R[None], t=t[None], height=H, width=W)
    out = render_mesh(verts[None], faces, cam, texture=(tex, vt, faces), sh=sh[None], antialias=False)
    return verts, faces, vt, K, R, t, sh, tex, out.rgb[0], out.mask[0]


def test_unwrap_recovers_albedo():
    verts, faces, vt, K, R, t, sh, tex, image, cover = scene()
    assert image.max() < 0.99  # no saturation in the test scene
    res = unwrap_albedo(verts.numpy(), faces.numpy(), vt.numpy(), faces.numpy(), K.numpy(), R.numpy(), t.numpy(),
                        sh.numpy(), image.numpy(), size=32, dtype=torch.float64)
    w = res.weight[0]
    good = w > 0
    assert good.float().mean() > 0.8
    err = (res.albedo[0] - tex).abs()[good]
    assert err.mean() < 0.01 and err.max() < 0.06
    # the photo itself is not albedo: without dividing by the shading the error would be large
    assert (res.color[0] - tex).abs()[good].mean() > 0.05
    assert (res.albedo[0][~good] == 0).all()


def test_skin_mask_axis_angle_and_adapter():
    verts, faces, vt, K, R, t, sh, tex, image, cover = scene()
    skin = np.zeros(image.shape[:2], dtype=np.uint8)
    skin[:, :48] = 1
    fit = SimpleNamespace(vertices=verts.numpy(), K=K.numpy(), cam=np.zeros(6), light=sh.numpy(), skin_mask=skin)
    res = unwrap_fit(fit, (image.numpy() * 255).round().astype(np.uint8), faces, vt, faces, size=32)
    w = res.weight[0]
    assert (w[:, 20:] == 0).all() and (w[:, 2:12] > 0.5).all()
    good = w > 0
    assert (res.albedo[0].double() - tex).abs()[good].mean() < 0.015  # uint8 photo: a little quantisation


def test_dark_shading_and_saturation_get_zero_weight():
    verts, faces, vt, K, R, t, sh, tex, image, cover = scene()
    img = image.clone()
    img[:, 48:] = 1.0  # blown-out right half
    res = unwrap_albedo(verts, faces, vt, faces, K, R, t, sh, img, size=32, dtype=torch.float64)
    assert (res.weight[0][:, 17:] == 0).all()
    dark = sh * 0.01
    res = unwrap_albedo(verts, faces, vt, faces, K, R, t, dark, image, size=32, dtype=torch.float64)
    assert (res.weight == 0).all()


def test_bad_light_shape():
    verts, faces, vt, K, R, t, sh, tex, image, cover = scene()
    with pytest.raises(ValueError, match="light"):
        unwrap_albedo(verts, faces, vt, faces, K, R, t, torch.zeros(4, 3), image, size=16)
