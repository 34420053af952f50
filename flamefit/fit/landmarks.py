"""Landmark plumbing for the fitter: iBUG-68 index groups, the 68-point model landmarks, projection.

The 17 jaw-contour points of iBUG-68 annotations follow the visible silhouette, so in non-frontal views they are
not fixed mesh points: :func:`model_landmarks_68` picks the contour from the RingNet/DECA yaw-binned embedding
(:class:`flamefit.model.landmarks.Landmarks68`) by the head's yaw relative to the camera (checked on the stand-in:
the chosen far-side points have normals perpendicular to the view, i.e. lie on the silhouette).
"""

from __future__ import annotations

import torch

from flamefit.model.landmarks import Landmarks68, yaw_from_rotation
from flamefit.model.lbs import axis_angle_to_matrix

# iBUG-68 index groups (0-based).
JAW = list(range(0, 17))
INNER = list(range(17, 68))
LEFT_EYE_UPPER, LEFT_EYE_LOWER = [37, 38], [41, 40]  # image-left eye (the subject's right)
RIGHT_EYE_UPPER, RIGHT_EYE_LOWER = [43, 44], [47, 46]
INNER_LIP_UPPER, INNER_LIP_LOWER = [61, 62, 63], [67, 66, 65]


def head_yaw_rad(global_pose: torch.Tensor, neck_pose: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) yaw of the head relative to a camera looking at FLAME's face (global then neck rotation)."""
    R = axis_angle_to_matrix(global_pose)
    if neck_pose is not None:
        R = R @ axis_angle_to_matrix(neck_pose)
    return yaw_from_rotation(R)


def model_landmarks_68(lmk: Landmarks68, vertices: torch.Tensor, faces: torch.Tensor,
                       global_pose: torch.Tensor, neck_pose: torch.Tensor | None = None) -> torch.Tensor:
    """(B,68,3) model-frame points in iBUG order, the contour chosen by the head's yaw (not differentiated)."""
    yaw = head_yaw_rad(global_pose.detach(), None if neck_pose is None else neck_pose.detach())
    return lmk.project(vertices, faces, yaw)


def project_points(points_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(B,N,3) camera-frame points (OpenCV) and (B,3,3) intrinsics -> (B,N,2) pixels (x right, y down)."""
    z = points_cam[..., 2:3].clamp(min=1e-6)
    xy = points_cam[..., :2] / z
    return xy * torch.stack([K[:, 0, 0], K[:, 1, 1]], -1).unsqueeze(1) + K[:, :2, 2].unsqueeze(1)
