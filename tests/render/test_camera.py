"""Cameras: pinhole/orthographic projection, OpenCV <-> OpenGL conversions, helpers."""

from __future__ import annotations

import math

import torch

from flamefit.render import (
    OrthographicCamera,
    PerspectiveCamera,
    camera_from_fov,
    extrinsics_to_matrix,
    intrinsics_from_opencv,
    intrinsics_to_opengl_projection,
    look_at,
    opencv_to_opengl_extrinsics,
    opengl_to_opencv_extrinsics,
)


def _random_camera(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(batch, 3, 3, generator=g, dtype=torch.float64))
    R = q * torch.sign(torch.linalg.det(q)).view(-1, 1, 1)
    t = torch.tensor([0.1, -0.05, 2.0], dtype=torch.float64) + 0.1 * torch.randn(batch, 3, generator=g,
                                                                                   dtype=torch.float64)
    K = torch.tensor([[500.0, 2.0, 130.0], [0.0, 480.0, 120.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return PerspectiveCamera(K=K.expand(batch, 3, 3).clone(), R=R, t=t, height=240, width=256)


def test_perspective_projection_is_the_pinhole_model():
    cam = _random_camera()
    pts = torch.randn(2, 7, 3, dtype=torch.float64) * 0.2
    out = cam.project(pts)
    pc = torch.einsum("bij,bnj->bni", cam.R, pts) + cam.t[:, None]
    uvw = torch.einsum("bij,bnj->bni", cam.K, pc)
    torch.testing.assert_close(out[..., :2], uvw[..., :2] / uvw[..., 2:])
    torch.testing.assert_close(out[..., 2], pc[..., 2])


def test_principal_point_is_the_image_centre_for_camera_from_fov():
    cam = camera_from_fov(math.radians(50), 100, 160)
    out = cam.project(torch.tensor([[[0.0, 0.0, 3.0], [0.0, math.tan(math.radians(25)) * 3.0, 3.0]]]))
    torch.testing.assert_close(out[0, 0], torch.tensor([80.0, 50.0, 3.0]))
    torch.testing.assert_close(out[0, 1, 1], torch.tensor(100.0))  # top of the fov lands on the bottom edge


def test_opengl_projection_matches_pixel_projection():
    cam = _random_camera()
    pts = torch.randn(2, 9, 3, dtype=torch.float64) * 0.2
    view, proj = cam.opengl_matrices(near=0.1, far=20.0)
    homog = torch.cat([pts, torch.ones_like(pts[..., :1])], -1)
    clip = torch.einsum("bij,bnj->bni", proj, torch.einsum("bij,bnj->bni", view, homog))
    ndc = clip[..., :3] / clip[..., 3:]
    x_px = (ndc[..., 0] + 1) * cam.width / 2
    y_px = (1 - ndc[..., 1]) * cam.height / 2
    ref = cam.project(pts)
    torch.testing.assert_close(x_px, ref[..., 0])
    torch.testing.assert_close(y_px, ref[..., 1])
    # near and far planes map to -1 and +1
    P = intrinsics_to_opengl_projection(cam.K, 240, 256, 0.1, 20.0)[0]
    for z, expected in ((0.1, -1.0), (20.0, 1.0)):
        c = P @ torch.tensor([0.0, 0.0, -z, 1.0], dtype=torch.float64)
        assert abs(c[2] / c[3] - expected) < 1e-9


def test_opencv_opengl_extrinsics_round_trip_and_axes():
    cam = _random_camera()
    R_gl, t_gl = opencv_to_opengl_extrinsics(cam.R, cam.t)
    R_cv, t_cv = opengl_to_opencv_extrinsics(R_gl, t_gl)
    torch.testing.assert_close(R_cv, cam.R)
    torch.testing.assert_close(t_cv, cam.t)
    p = torch.randn(2, 3, dtype=torch.float64)
    cv = torch.einsum("bij,bj->bi", cam.R, p) + cam.t
    gl = torch.einsum("bij,bj->bi", R_gl, p) + t_gl
    torch.testing.assert_close(gl, cv * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    M = extrinsics_to_matrix(cam.R, cam.t)
    torch.testing.assert_close(M[:, :3, :3], cam.R)
    torch.testing.assert_close(M[:, 3], torch.tensor([0.0, 0, 0, 1], dtype=torch.float64).expand(2, 4))


def test_look_at_centres_the_target_with_up_pointing_up():
    eye = torch.tensor([[0.3, 0.2, 1.5]])
    target = torch.tensor([[0.0, 0.05, 0.0]])
    R, t = look_at(eye, target)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3)[None], atol=1e-6, rtol=0)
    assert torch.linalg.det(R).item() > 0
    cam = camera_from_fov(math.radians(40), 64, 64, R=R, t=t)
    pts = torch.cat([target, target + torch.tensor([[0.0, 0.1, 0.0]])])[None]
    out = cam.project(pts)[0]
    torch.testing.assert_close(out[0, :2], torch.tensor([32.0, 32.0]), atol=1e-4, rtol=0)
    assert out[1, 1] < out[0, 1]  # world up is image up (smaller y)
    assert out[0, 2] > 0


def test_orthographic_camera_and_intrinsics_from_opencv():
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0]))[None]  # FLAME (y up, +z out of the face) looking at us
    cam = OrthographicCamera(scale=torch.tensor([[100.0]]), translation=torch.tensor([[32.0, 30.0]]), R=R,
                             height=64, width=64)
    out = cam.project(torch.tensor([[[0.1, 0.2, 0.05], [0.0, 0.0, 0.0]]]))[0]
    torch.testing.assert_close(out[0], torch.tensor([42.0, 10.0, -0.05]))
    torch.testing.assert_close(out[1], torch.tensor([32.0, 30.0, 0.0]))
    assert not cam.is_perspective and camera_from_fov(1.0, 8, 8).is_perspective
    K = intrinsics_from_opencv(torch.tensor([[100.0, 0, 31.5], [0, 100.0, 31.5], [0, 0, 1]]))
    torch.testing.assert_close(K[:2, 2], torch.tensor([32.0, 32.0]))
