"""Landmarks on the mesh: barycentric embeddings ``(face_idx, bary)``.

:class:`MeshLandmarks` evaluates any such set (e.g. MediaPipe's 478 points, see
:mod:`flamefit.fit.correspondence`). :class:`Landmarks68` is the RingNet/DECA 68-point scheme: 51 static
inner points plus 17 jaw-contour points picked from 79 yaw bins (0..39 degrees, then -1..-39), as the FLAME
authors do, so that the contour follows the silhouette when the head turns: :func:`model_landmarks_68` picks it
by the posed head's yaw relative to the camera (:func:`head_yaw_rad`; checked on the stand-in: the chosen far-side
points have normals perpendicular to the view, i.e. lie on the silhouette). Index groups are in
:mod:`flamefit.ibug68`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flamefit.errors import ModelFileError
from flamefit.model.lbs import axis_angle_to_matrix
from flamefit.model.safe_pickle import load_restricted


@dataclass
class MeshLandmarks:
    """Points given as barycentric coordinates inside mesh triangles."""

    face_idx: torch.Tensor  # (N,) int64
    bary: torch.Tensor  # (N,3) float

    def __post_init__(self) -> None:
        self.face_idx = torch.as_tensor(self.face_idx, dtype=torch.int64)
        self.bary = torch.as_tensor(self.bary, dtype=torch.float32)
        if self.face_idx.ndim != 1 or self.bary.shape != (self.face_idx.shape[0], 3):
            raise ValueError(f"face_idx (N,) and bary (N,3) expected, got {tuple(self.face_idx.shape)}, "
                             f"{tuple(self.bary.shape)}")

    def __len__(self) -> int:
        return self.face_idx.shape[0]

    def validate_against(self, n_faces: int, source: str = "landmark embedding") -> None:
        """ModelFileError unless every face index is in [0, n_faces) and the barycentrics are finite."""
        _check_embedding(self.face_idx, self.bary, n_faces, source)

    def project(self, vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """3D positions (B,N,3) of the landmarks on ``vertices`` (B,V,3)."""
        return barycentric_points(vertices, faces, self.face_idx, self.bary)


def barycentric_points(
    vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor, bary: torch.Tensor
) -> torch.Tensor:
    """Points (B,N,3) at ``bary`` (N,3) or (B,N,3) inside faces ``face_idx`` (N,) or (B,N) of ``vertices`` (B,V,3)."""
    face_idx = face_idx.to(vertices.device)
    bary = bary.to(device=vertices.device, dtype=vertices.dtype)
    corner_ids = faces.to(vertices.device)[face_idx]  # (N,3,) or (B,N,3)
    B = vertices.shape[0]
    if corner_ids.ndim == 2:
        corner_ids = corner_ids.unsqueeze(0).expand(B, -1, -1)
    if bary.ndim == 2:
        bary = bary.unsqueeze(0).expand(B, -1, -1)
    n = corner_ids.shape[1]
    corners = torch.gather(vertices, 1, corner_ids.reshape(B, -1, 1).expand(-1, -1, 3)).view(B, n, 3, 3)
    return (corners * bary.unsqueeze(-1)).sum(dim=2)


def landmark_vertex_matrix(face_idx: torch.Tensor, bary: torch.Tensor, faces: torch.Tensor,
                           num_vertices: int) -> torch.Tensor:
    """A dense (N,V) matrix W with landmarks = W @ vertices, for linear least-squares solves."""
    corner_ids = faces[face_idx]  # (N,3)
    W = torch.zeros(face_idx.shape[0], num_vertices, dtype=bary.dtype)
    W.scatter_add_(1, corner_ids, bary)
    return W


def yaw_bin(yaw_rad: torch.Tensor) -> torch.Tensor:
    """RingNet/DECA's dynamic-contour bin index (0..78) of a head yaw (radians, + = turned to its left)."""
    deg = torch.round(torch.rad2deg(yaw_rad)).clamp(-39, 39).long()
    return torch.where(deg < 0, 39 - deg, deg)


def yaw_from_rotation(rotation: torch.Tensor) -> torch.Tensor:
    """Yaw (radians) of rotation matrices (B,3,3) as DECA's ``rot_mat_to_euler`` computes it.

    The rotation maps model coordinates to a view frame with FLAME's axes (y up, z towards the viewer).
    """
    sy = torch.sqrt(rotation[:, 0, 0] ** 2 + rotation[:, 1, 0] ** 2)
    return torch.atan2(-rotation[:, 2, 0], sy)


class Landmarks68:
    """The 68-point (iBUG order) RingNet/DECA embedding: 17 dynamic contour + 51 static points.

    ``static_mix`` (51,K) with ``mix_points`` (K mesh points): the 51 static points are these weighted means of
    mesh points instead of the surface points ``static_face_idx``/``static_bary`` (which then only describe them
    for display). A 68-point set derived from MediaPipe's 478 uses the detector's own 478 -> 68 map here, so the
    model's 68 points are exactly what the map makes of the model's 478: a mean of surface points lies off the
    surface, and moving it onto the surface biases the eyelid and lip gaps (measured: a larger, open-mouthed face
    fitted 1.1x too big)."""

    def __init__(self, static_face_idx, static_bary, dynamic_face_idx, dynamic_bary, source: str = "",
                 static_mix=None, mix_points: MeshLandmarks | None = None):
        self.static = MeshLandmarks(static_face_idx, static_bary)
        self.dynamic_face_idx = torch.as_tensor(np.asarray(dynamic_face_idx), dtype=torch.int64)  # (79,17)
        self.dynamic_bary = torch.as_tensor(np.asarray(dynamic_bary), dtype=torch.float32)  # (79,17,3)
        self.source = source
        if (static_mix is None) != (mix_points is None):
            raise ValueError("static_mix and mix_points go together")
        self.static_mix = None if static_mix is None else torch.tensor(np.array(static_mix), dtype=torch.float32)
        self.mix_points = mix_points
        if self.static_mix is not None and self.static_mix.shape != (len(self.static), len(mix_points)):
            raise ValueError(f"static_mix must be ({len(self.static)}, {len(mix_points)}), "
                             f"got {tuple(self.static_mix.shape)}")

    def face_indices(self) -> torch.Tensor:
        """Every face index the 68 points are computed from (for meshes restricted to the landmark faces)."""
        out = [self.static.face_idx.reshape(-1), self.dynamic_face_idx.reshape(-1)]
        if self.mix_points is not None:
            out.append(self.mix_points.face_idx.reshape(-1))
        return torch.cat(out)

    def validate_against(self, n_faces: int) -> None:
        """ModelFileError (naming the files) unless every face index, static and dynamic, is a face of a model
        with ``n_faces`` faces. Call it once the model is known (the fitter's build does)."""
        _check_embedding(self.static.face_idx, self.static.bary, n_faces, self.source or "68-point embedding")
        _check_embedding(self.dynamic_face_idx, self.dynamic_bary, n_faces, self.source or "68-point embedding")
        if self.mix_points is not None:
            self.mix_points.validate_against(n_faces, self.source or "68-point embedding")

    def embedding(self, yaw_rad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(face_idx (B,68), bary (B,68,3)) in iBUG order for head yaws ``yaw_rad`` (B,) (static points: their
        surface points, also where ``static_mix`` defines them)."""
        bins = yaw_bin(yaw_rad).to(self.dynamic_face_idx.device)
        B = bins.shape[0]
        face_idx = torch.cat([self.dynamic_face_idx[bins], self.static.face_idx.expand(B, -1)], dim=1)
        bary = torch.cat([self.dynamic_bary[bins], self.static.bary.expand(B, -1, -1)], dim=1)
        return face_idx, bary

    def project(self, vertices: torch.Tensor, faces: torch.Tensor, yaw_rad: torch.Tensor | None = None) -> torch.Tensor:
        """68 points (B,68,3) on ``vertices``; the contour is chosen by ``yaw_rad`` (B,) (frontal when None)."""
        if yaw_rad is None:
            yaw_rad = vertices.new_zeros(vertices.shape[0])
        if self.static_mix is None:
            face_idx, bary = self.embedding(yaw_rad)
            return barycentric_points(vertices, faces, face_idx.to(vertices.device), bary)
        bins = yaw_bin(yaw_rad).to(self.dynamic_face_idx.device)
        contour = barycentric_points(vertices, faces, self.dynamic_face_idx[bins].to(vertices.device),
                                     self.dynamic_bary[bins])
        mix = self.static_mix.to(vertices.device, vertices.dtype)
        inner = mix @ self.mix_points.project(vertices, faces)
        return torch.cat([contour, inner], dim=1)


def _check_embedding(face_idx, bary, n_faces: int | None, source: str) -> None:
    """Face indices in [0, n_faces) (>= 0 when n_faces is None), barycentrics finite with 3 columns."""
    face_idx = torch.as_tensor(face_idx)
    bary = torch.as_tensor(bary)
    if bary.shape[-1:] != (3,) or bary.shape[:-1] != face_idx.shape:
        raise ModelFileError(f"{source}: barycentric coordinates have shape {tuple(bary.shape)}, expected "
                             f"{tuple(face_idx.shape) + (3,)} (3 per landmark).")
    if not torch.isfinite(bary).all():
        raise ModelFileError(f"{source}: barycentric coordinates hold NaN or infinite values.")
    if face_idx.numel():
        lo, hi = int(face_idx.min()), int(face_idx.max())
        if lo < 0 or (n_faces is not None and hi >= n_faces):
            limit = f"the model has {n_faces} faces (0 to {n_faces - 1})" if n_faces is not None else "must be >= 0"
            raise ModelFileError(f"{source}: landmark face indices span {lo} to {hi}, but {limit}. Is this "
                                 "embedding for a different mesh?")


def load_ringnet_68(static_pkl: str | Path | None = None, dynamic_npy: str | Path | None = None) -> Landmarks68:
    """Load RingNet/DECA's ``flame_static_embedding.pkl`` and ``flame_dynamic_embedding.npy`` (safely)."""
    from flamefit.assets import resolve_asset

    static_path = resolve_asset("landmarks_static", static_pkl)
    dynamic_path = resolve_asset("landmarks_dynamic", dynamic_npy)
    static = load_restricted(static_path)
    dynamic = load_restricted(dynamic_path)
    try:
        s_idx = np.asarray(static["lmk_face_idx"], dtype=np.int64)
        s_bary = np.asarray(static["lmk_b_coords"], dtype=np.float64)
        d_idx = np.stack([np.asarray(a, dtype=np.int64) for a in dynamic["lmk_face_idx"]])
        d_bary = np.stack([np.asarray(a, dtype=np.float64) for a in dynamic["lmk_b_coords"]])
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise ModelFileError(
            f"{static_path} / {dynamic_path}: not RingNet landmark embeddings (need lmk_face_idx and "
            f"lmk_b_coords; {exc})."
        ) from exc
    if s_idx.shape != (51,) or s_bary.shape != (51, 3):
        raise ModelFileError(f"{static_path}: expected 51 static landmarks, found {s_idx.shape[0]}.")
    if d_idx.shape != (79, 17) or d_bary.shape != (79, 17, 3):
        raise ModelFileError(f"{dynamic_path}: expected 79 yaw bins x 17 contour points, found {d_idx.shape}.")
    _check_embedding(s_idx, s_bary, None, str(static_path))
    _check_embedding(d_idx, d_bary, None, str(dynamic_path))
    return Landmarks68(s_idx, s_bary, d_idx, d_bary, source=f"{static_path}, {dynamic_path}")


# -- the 68 points of a posed head (contour by the head's yaw) ----------------------------------------------

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
