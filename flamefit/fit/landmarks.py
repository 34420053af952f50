"""The 68-point model landmarks whose contour follows the silhouette.

The 17 jaw-contour points of iBUG-68 annotations follow the visible silhouette, so in non-frontal views they are
not fixed mesh points: :func:`model_landmarks_68` picks the contour from the RingNet/DECA yaw-binned embedding
(:class:`flamefit.model.landmarks.Landmarks68`) by the head's yaw relative to the camera (checked on the stand-in:
the chosen far-side points have normals perpendicular to the view, i.e. lie on the silhouette). Index groups are
in :mod:`flamefit.ibug68`, projection is :func:`flamefit.render.camera.project_points`.
"""

from __future__ import annotations

import torch

from flamefit.model.landmarks import Landmarks68, yaw_from_rotation
from flamefit.model.lbs import axis_angle_to_matrix


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
