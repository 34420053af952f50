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
    opencv_to_opengl_view,
    opengl_to_opencv_extrinsics,
    project_points,
)
from flamefit.render.camera import MIN_PROJECT_DEPTH_M


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


def test_project_points_is_the_one_pinhole_projection_with_skew_and_pixel_centres():
    cam = _random_camera(batch=3)
    pc = cam.transform(torch.randn(3, 7, 3, dtype=torch.float64) * 0.1)
    uv = project_points(pc, cam.K)
    K = cam.K
    x, y = pc[..., 0] / pc[..., 2], pc[..., 1] / pc[..., 2]
    expect_u = K[:, 0, 0, None] * x + K[:, 0, 1, None] * y + K[:, 0, 2, None]
    expect_v = K[:, 1, 1, None] * y + K[:, 1, 2, None]
    assert uv.shape == (3, 7, 2) and uv.dtype == torch.float64
    torch.testing.assert_close(uv, torch.stack([expect_u, expect_v], -1))
    # the camera classes use it: same pixels, unclamped depth appended
    torch.testing.assert_close(cam.project_camera_points(pc), torch.cat([uv, pc[..., 2:]], -1))
    # a point on the optical axis lands on the principal point (pixel-corner origin, centres at +0.5)
    on_axis = torch.tensor([[[0.0, 0.0, 2.0]]], dtype=torch.float64)
    torch.testing.assert_close(project_points(on_axis, K[:1]), K[:1, :2, 2].unsqueeze(1))
    # K of batch 1 broadcasts over B points
    torch.testing.assert_close(project_points(pc, K[:1]), project_points(pc, K[:1].expand(3, 3, 3)))


def test_project_points_clamps_depth_so_points_behind_the_camera_stay_finite():
    K = torch.tensor([[[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]]])
    pts = torch.tensor([[[0.1, 0.2, 0.0], [0.1, -0.2, -1.0], [0.0, 0.0, -3.0]]], requires_grad=True)
    uv = project_points(pts, K)
    assert torch.isfinite(uv).all()
    # the clamp divides by MIN_PROJECT_DEPTH_M exactly
    torch.testing.assert_close(uv[0, 0], torch.tensor([50.0 + 100.0 * 0.1 / MIN_PROJECT_DEPTH_M,
                                                       40.0 + 100.0 * 0.2 / MIN_PROJECT_DEPTH_M]))
    uv.sum().backward()
    assert torch.isfinite(pts.grad).all() and (pts.grad[:, :, 2] == 0).all()


def test_opencv_to_opengl_view_flips_y_and_z_of_the_camera():
    cam = _random_camera(batch=2)
    view = opencv_to_opengl_view(cam.R, cam.t)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    assert view.shape == (2, 4, 4)
    torch.testing.assert_close(view[:, :3, :3], flip @ cam.R)
    torch.testing.assert_close(view[:, :3, 3], (flip @ cam.t.unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(view[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand(2, 4))
    # unbatched inputs give one (4,4); a point in front of the camera (z > 0 in OpenCV) has z < 0 in OpenGL
    v1 = opencv_to_opengl_view(cam.R[0], cam.t[0])
    torch.testing.assert_close(v1, view[0])
    X = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert cam.transform(X[None, None, :3])[0, 0, 2] > 0 and (v1 @ X)[2] < 0
    torch.testing.assert_close(cam.opengl_matrices()[0], view)
