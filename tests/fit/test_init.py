import math

import numpy as np
import torch

from flamefit.fit.config import CameraConfig
from flamefit.fit.init import default_intrinsics, pose_to_camera, solve_pnp


def test_default_intrinsics():
    f, (cx, cy) = default_intrinsics(200, 400, CameraConfig(fov_deg=20))
    assert math.isclose(f, 200 / math.tan(math.radians(10)))
    assert (cx, cy) == (200, 100)
    f2, _ = default_intrinsics(200, 400, CameraConfig(focal_px=123.0))
    assert f2 == 123.0


def test_pnp_recovers_a_known_pose():
    import cv2

    rng = np.random.default_rng(0)
    pts = rng.normal(0, 0.05, (40, 3))
    R_true, _ = cv2.Rodrigues(np.array([math.pi + 0.1, 0.3, -0.05]))
    t_true = np.array([0.01, -0.02, 0.9])
    K = np.array([[900.0, 0, 112], [0, 900, 112], [0, 0, 1]])
    cam = pts @ R_true.T + t_true
    px = cam[:, :2] / cam[:, 2:] * 900 + 112
    R, t = solve_pnp(pts, px, K)
    assert np.allclose(R, R_true, atol=1e-6) and np.allclose(t, t_true, atol=1e-6)


def test_pose_split_keeps_the_projection():
    """global_pose about the root joint + camera translation reproduce the PnP pose exactly."""
    import cv2

    from flamefit.model.lbs import axis_angle_to_matrix

    R_pnp, _ = cv2.Rodrigues(np.array([math.pi - 0.2, 0.4, 0.1]))
    t_pnp = np.array([0.02, 0.01, 1.1])
    root = np.array([0.0, -0.03, -0.02])
    g, t_c = pose_to_camera(R_pnp, t_pnp, root)
    X = np.random.default_rng(1).normal(0, 0.1, (10, 3))
    R_g = axis_angle_to_matrix(torch.as_tensor(g)[None])[0].numpy()
    posed = (X - root) @ R_g.T + root  # FLAME rotates about the root joint
    cam = posed @ np.diag([1.0, -1, -1]).T + t_c
    assert np.allclose(cam, X @ R_pnp.T + t_pnp, atol=1e-9)


def test_video_focal_config_first_then_the_video_prior():
    from flamefit.fit.init import video_focal

    f, src = video_focal(480, 640, CameraConfig(video_fov_deg=60))
    assert math.isclose(f, 320 / math.tan(math.radians(30))) and src == "video_fov_deg prior (60 deg)"
    # the still-photo prior (fov_deg) does not apply to videos; an explicit focal does
    assert video_focal(480, 640, CameraConfig(fov_deg=20, video_fov_deg=60))[0] == f
    assert video_focal(480, 640, CameraConfig(focal_px=700.0)) == (700.0, "config")
