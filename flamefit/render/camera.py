"""Cameras and the one place where OpenCV and OpenGL conventions meet.

Conventions (see docs/ARCHITECTURE.md):

* **Camera frame: OpenCV** — x right, y down, z forward (into the scene). A point in front of the camera has
  ``z > 0``. Extrinsics ``R`` (B,3,3), ``t`` (B,3) map world to camera: ``X_cam = R @ X_world + t``.
* **Pixels**: x right, y down, origin at the top-left *corner* of the top-left pixel, pixel centres at
  ``i + 0.5``. The principal point ``(cx, cy)`` of ``K`` is in these coordinates, so a centred camera has
  ``cx = width / 2``. (OpenCV calibration puts pixel centres at integers: add 0.5 to its cx, cy —
  :func:`intrinsics_from_opencv` does that.)
* **OpenGL** (only for export/interop): camera x right, y up, z backward (looking down -z), NDC y up.
  ``opencv_to_opengl_extrinsics`` / ``opengl_to_opencv_extrinsics`` flip the camera's y and z axes, and
  ``intrinsics_to_opengl_projection`` builds the matching 4x4 projection. Nothing else flips axes.

:func:`project_points` is THE perspective projection of the library (camera-frame points and K -> pixels);
the cameras, the fitter's landmarks and its initialisation all use it. Depth is clamped to
``MIN_PROJECT_DEPTH_M`` before the division, so points at or behind the camera plane give finite (far away,
meaningless) pixels instead of inf/NaN, and no gradient through that clamp; callers that care test ``z > 0``
themselves (the rasterizer drops such triangles with ``perspective_correct=True``).

``project`` returns ``(x_px, y_px, depth)``: the pixel position and the camera-frame z in metres (smaller is
nearer, NOT clamped), which is exactly what :func:`flamefit.render.rasterize` takes.

Shapes are batched (B first); a batch of 1 broadcasts against any B of points. ``device``/``dtype`` follow the
tensors you build the camera from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from flamefit.render._backend import check_image_size

# diag(1, -1, -1): turns OpenCV camera axes into OpenGL camera axes and back (it is its own inverse).
_CV_GL_FLIP = (1.0, -1.0, -1.0)

# Depth (metres) below which project_points clamps z: 1 micrometre, far nearer than any real camera-to-face
# distance, so it only ever acts on degenerate points (z <= 0), keeping their pixels finite.
MIN_PROJECT_DEPTH_M = 1e-6


def project_points(points_cam: torch.Tensor, K: torch.Tensor, min_depth_m: float = MIN_PROJECT_DEPTH_M
                   ) -> torch.Tensor:
    """Perspective projection: camera-frame points (B,N,3) (OpenCV: x right, y down, z forward, metres) and
    pixel intrinsics K (B,3,3) ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` -> pixels (B,N,2).

    Pixels: x right, y down, origin at the top-left corner of the top-left pixel, pixel centres at +0.5.
    ``z`` is clamped to ``>= min_depth_m`` (default :data:`MIN_PROJECT_DEPTH_M`) before dividing: points at or
    behind the camera plane give finite but meaningless pixels (and no gradient w.r.t. z). A K of batch 1
    broadcasts against any B of points. dtype/device follow the inputs.
    """
    if points_cam.shape[-1] != 3 or K.shape[-2:] != (3, 3):
        raise ValueError(f"project_points needs points (B,N,3) and K (B,3,3), got {tuple(points_cam.shape)} and "
                         f"{tuple(K.shape)}")
    z = points_cam[..., 2].clamp(min=min_depth_m)
    x = points_cam[..., 0] / z
    y = points_cam[..., 1] / z
    fx, s, cx = K[..., 0, 0, None], K[..., 0, 1, None], K[..., 0, 2, None]
    fy, cy = K[..., 1, 1, None], K[..., 1, 2, None]
    return torch.stack([fx * x + s * y + cx, fy * y + cy], dim=-1)


def _check_size(height, width) -> tuple[int, int]:
    return check_image_size(height, width, "camera")


def _all_finite(t: torch.Tensor) -> bool:
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64):
        # small tensors, checked several times per fit iteration: numpy's reduction is ~10x cheaper than torch's
        return bool(np.isfinite(t.detach().numpy()).all())
    return bool(torch.isfinite(t.detach()).all())


def _check_finite(what: str, **tensors: torch.Tensor) -> None:
    """ValueError naming the first tensor that is not a finite float tensor of the right trailing shape."""
    for name, (t, tail) in tensors.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"{what}: {name} must be a float tensor, got {type(t).__name__}")
        if tuple(t.shape[len(t.shape) - len(tail):]) != tail or t.dim() < len(tail):
            raise ValueError(f"{what}: {name} must be (B,{','.join(map(str, tail))}), got {tuple(t.shape)}")
        if not _all_finite(t):
            raise ValueError(f"{what}: {name} holds NaN or inf")


def _flip_like(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(_CV_GL_FLIP, dtype=x.dtype, device=x.device)


def _apply_rt(R: torch.Tensor, t: torch.Tensor | None, points: torch.Tensor) -> torch.Tensor:
    # points (B,N,3) @ R^T (B,3,3): row-vector form avoids a transpose copy of the points.
    out = torch.matmul(points, R.transpose(-1, -2))
    if t is not None:
        out = out + t.unsqueeze(-2)
    return out


@dataclass
class PerspectiveCamera:
    """Pinhole camera with pixel intrinsics and OpenCV extrinsics.

    Attributes:
        K: (B,3,3) intrinsics in pixels ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` (pixel centres at +0.5).
        R: (B,3,3) world->camera rotation.
        t: (B,3) world->camera translation in metres.
        height, width: image size in pixels.
    """

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    height: int
    width: int

    is_perspective = True

    def __post_init__(self) -> None:
        # absurd cameras fail here, with what is wrong, instead of as inf/NaN pixels or a crash later
        self.height, self.width = _check_size(self.height, self.width)
        _check_finite("PerspectiveCamera", K=(self.K, (3, 3)), R=(self.R, (3, 3)), t=(self.t, (3,)))
        K = self.K.detach()
        if K.device.type == "cpu" and K.dtype in (torch.float32, torch.float64):
            f = K.numpy()[..., [0, 1], [0, 1]]
        else:
            f = torch.stack([K[..., 0, 0], K[..., 1, 1]])
        if not bool((f > 0).all()):
            raise ValueError(f"PerspectiveCamera: focal lengths fx, fy (pixels) must be > 0, got "
                             f"{f.flatten().tolist()[:8]}")

    def transform(self, points: torch.Tensor) -> torch.Tensor:
        """World (B,N,3) -> camera frame (B,N,3), metres."""
        return _apply_rt(self.R, self.t, points)

    def project_camera_points(self, points_cam: torch.Tensor) -> torch.Tensor:
        """Camera-frame points (B,N,3) -> (x_px, y_px, z_m) via :func:`project_points` (z itself unclamped).
        Points at z <= 0 give finite, meaningless pixels."""
        return torch.cat([project_points(points_cam, self.K), points_cam[..., 2:3]], dim=-1)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """World points (B,N,3) -> (B,N,3) = (x_px, y_px, z_cam_m)."""
        return self.project_camera_points(self.transform(points))

    def to(self, *args, **kwargs) -> PerspectiveCamera:
        return replace(self, K=self.K.to(*args, **kwargs), R=self.R.to(*args, **kwargs),
                       t=self.t.to(*args, **kwargs))

    def opengl_matrices(self, near: float = 0.01, far: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(view (B,4,4), projection (B,4,4)) in OpenGL conventions for this camera."""
        proj = intrinsics_to_opengl_projection(self.K, self.height, self.width, near, far)
        return opencv_to_opengl_view(self.R, self.t), proj


@dataclass
class OrthographicCamera:
    """Weak-perspective / scaled orthographic camera (DECA-style), in pixels.

    ``X_cam = R @ X_world`` (OpenCV axes), ``x_px = scale * X_cam.x + tx``, ``y_px = scale * X_cam.y + ty``,
    depth = ``X_cam.z`` in metres (smaller is nearer; it may be negative, only the order matters).

    Attributes:
        scale: (B,1) pixels per metre.
        translation: (B,2) pixels.
        R: (B,3,3) world->camera rotation (for FLAME's y-up, +z-out-of-the-face model frame looking at the camera,
           use ``diag(1, -1, -1)``).
        height, width: image size in pixels.
    """

    scale: torch.Tensor
    translation: torch.Tensor
    R: torch.Tensor
    height: int
    width: int

    is_perspective = False

    def __post_init__(self) -> None:
        self.height, self.width = _check_size(self.height, self.width)
        _check_finite("OrthographicCamera", R=(self.R, (3, 3)), translation=(self.translation, (2,)))
        if not isinstance(self.scale, torch.Tensor) or not self.scale.is_floating_point():
            raise ValueError(f"OrthographicCamera: scale must be a float tensor, got {type(self.scale).__name__}")
        sc = self.scale.detach()
        if not bool((torch.isfinite(sc) & (sc > 0)).all()):
            raise ValueError(f"OrthographicCamera: scale (pixels per metre) must be finite and > 0, got "
                             f"{sc.flatten().tolist()[:8]}")

    def transform(self, points: torch.Tensor) -> torch.Tensor:
        """World (B,N,3) -> rotated camera frame (B,N,3), metres (no translation)."""
        return _apply_rt(self.R, None, points)

    def project_camera_points(self, points_cam: torch.Tensor) -> torch.Tensor:
        s = self.scale.reshape(-1, 1)
        tr = self.translation.reshape(-1, 1, 2)
        xy = points_cam[..., :2] * s.unsqueeze(-1) + tr
        return torch.cat([xy, points_cam[..., 2:3]], dim=-1)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """World points (B,N,3) -> (B,N,3) = (x_px, y_px, z_cam_m)."""
        return self.project_camera_points(self.transform(points))

    def to(self, *args, **kwargs) -> OrthographicCamera:
        return replace(self, scale=self.scale.to(*args, **kwargs),
                       translation=self.translation.to(*args, **kwargs), R=self.R.to(*args, **kwargs))


# ---------------------------------------------------------------------------------------------- conversions


def opencv_to_opengl_extrinsics(R: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World->camera (R, t) with an OpenCV camera (y down, z forward) -> the same camera in OpenGL axes
    (y up, z backward): ``R_gl = diag(1,-1,-1) R``, ``t_gl = diag(1,-1,-1) t``."""
    flip = _flip_like(R)
    return R * flip[:, None], t * flip


def opengl_to_opencv_extrinsics(R: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`opencv_to_opengl_extrinsics` (the flip is its own inverse)."""
    return opencv_to_opengl_extrinsics(R, t)


def opencv_to_opengl_view(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """OpenCV world->camera (R (...,3,3), t (...,3)) -> OpenGL view matrix (...,4,4): ``[diag(1,-1,-1) R |
    diag(1,-1,-1) t]`` (the same camera with y up and looking down -z). Batched or not."""
    return extrinsics_to_matrix(*opencv_to_opengl_extrinsics(R, t))


def extrinsics_to_matrix(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B,3,3), (B,3) -> (B,4,4) homogeneous world->camera matrix."""
    M = torch.zeros(R.shape[:-2] + (4, 4), dtype=R.dtype, device=R.device)
    M[..., :3, :3] = R
    M[..., :3, 3] = t
    M[..., 3, 3] = 1.0
    return M


def intrinsics_to_opengl_projection(K: torch.Tensor, height: int, width: int, near: float = 0.01,
                                    far: float = 10.0) -> torch.Tensor:
    """Pixel intrinsics K (B,3,3) -> OpenGL projection (B,4,4) for an OpenGL camera (looks down -z).

    Clip -> NDC maps x_ndc = 2 x_px / width - 1 and y_ndc = 1 - 2 y_px / height (NDC y up, pixel y down), with
    pixel coordinates in this library's convention (centres at +0.5), and z to [-1, 1] between near and far.
    """
    height, width = _check_size(height, width)
    if not (0.0 < near < far < math.inf):
        raise ValueError(f"OpenGL projection needs 0 < near < far < inf, got near={near!r}, far={far!r}")
    fx, s, cx = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2]
    fy, cy = K[..., 1, 1], K[..., 1, 2]
    P = torch.zeros(K.shape[:-2] + (4, 4), dtype=K.dtype, device=K.device)
    P[..., 0, 0] = 2.0 * fx / width
    P[..., 0, 1] = -2.0 * s / width
    P[..., 0, 2] = 1.0 - 2.0 * cx / width
    P[..., 1, 1] = 2.0 * fy / height
    P[..., 1, 2] = 2.0 * cy / height - 1.0
    P[..., 2, 2] = -(far + near) / (far - near)
    P[..., 2, 3] = -2.0 * far * near / (far - near)
    P[..., 3, 2] = -1.0
    return P


def intrinsics_from_opencv(K_opencv: torch.Tensor) -> torch.Tensor:
    """K from OpenCV calibration (pixel centres at integers) -> this library's K (centres at +0.5)."""
    K = K_opencv.clone()
    K[..., 0, 2] = K[..., 0, 2] + 0.5
    K[..., 1, 2] = K[..., 1, 2] + 0.5
    return K


# ---------------------------------------------------------------------------------------------- helpers


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV world->camera (R (B,3,3), t (B,3)) for a camera at ``eye`` (B,3) looking at ``target`` (B,3).

    ``up`` (B,3) is the world direction that appears upwards in the image (default +y, FLAME's up).
    """
    if up is None:
        up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    d = target - eye
    z = torch.nn.functional.normalize(d, dim=-1)
    side = torch.cross(z, up, dim=-1)
    # a camera needs a direction to look in and an up that is not along it
    ok = torch.isfinite(d).all() & (d.norm(dim=-1) > 0).all() & (side.norm(dim=-1) > 1e-9).all()
    if not bool(ok):
        raise ValueError("look_at needs finite eye != target and an up direction not parallel to target - eye")
    x = torch.nn.functional.normalize(side, dim=-1)
    y = torch.cross(z, x, dim=-1)  # points down in the image because up is "not y"
    R = torch.stack([x, y, z], dim=-2)
    t = -torch.matmul(R, eye.unsqueeze(-1)).squeeze(-1)
    return R, t


def camera_from_fov(fov_y_rad: float, height: int, width: int, R: torch.Tensor | None = None,
                    t: torch.Tensor | None = None, batch: int = 1, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> PerspectiveCamera:
    """Centred pinhole camera with vertical field of view ``fov_y_rad`` in (0, pi) and square pixels.

    R, t default to identity / zero (camera at the origin looking down +z); when given they set B, dtype, device.
    """
    height, width = _check_size(height, width)
    try:
        fov_ok = 0.0 < float(fov_y_rad) < math.pi
    except (TypeError, ValueError):
        fov_ok = False
    if not fov_ok:
        raise ValueError(f"field of view must be in (0, pi) radians, i.e. (0, 180) degrees, got {fov_y_rad!r}")
    if R is not None:
        batch, dtype, device = R.shape[0], R.dtype, R.device
    f = 0.5 * height / math.tan(0.5 * float(fov_y_rad))
    K = torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
    K = K.expand(batch, 3, 3).clone()
    if R is None:
        R = torch.eye(3, dtype=dtype, device=device).expand(batch, 3, 3).clone()
    if t is None:
        t = torch.zeros(batch, 3, dtype=dtype, device=device)
    return PerspectiveCamera(K=K, R=R, t=t, height=height, width=width)
