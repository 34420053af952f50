"""Differentiable mesh rendering in plain PyTorch (CPU and CUDA from one code path, no compiled extension).

Orthogonal, batched primitives in the spirit of nvdiffrast:

* cameras (``camera.py``): :class:`PerspectiveCamera` (pixel K, OpenCV R, t), :class:`OrthographicCamera`
  (weak perspective), the one projection :func:`project_points`, OpenCV <-> OpenGL conversions
  (``opencv_to_opengl_view`` ...), ``look_at``, ``camera_from_fov``;
* :func:`rasterize` (``rasterize.py``): pixels -> :class:`Fragments` (triangle id, differentiable barycentrics
  and depth); numba z-buffer on CPU, pure torch elsewhere;
* :func:`interpolate`, :func:`interpolate_uv` (``interpolate.py``): per-vertex attributes -> images;
* :func:`texture` (``texture.py``): bilinear UV lookup (u right, v up);
* :func:`vertex_normals`, :func:`sh_basis`, :func:`sh_shading` (``shade.py``): DECA-convention SH lighting;
* :func:`antialias`, :func:`soft_mask` (``antialias.py``): silhouette gradients by edge blending;
* :func:`vertex_visibility` (``visibility.py``): per-vertex visibility;
* :func:`render_mesh` (``mesh_renderer.py``): all of the above composed -> :class:`RenderOutput`.

Knows triangles and cameras, nothing about faces. Conventions: see each module's docstring and
docs/ARCHITECTURE.md.

Inputs: every public op checks, on the torch side and before any kernel, whatever a kernel would index with
(faces in [0, V), UV faces in [0, T), batch indices, pixel counts, texture and image sizes >= 1), so that no input
makes a kernel read out of bounds; misuse raises ValueError saying what is wrong. Cameras reject zero, negative or
non-finite focal lengths and scales, image sizes outside [1, 32768] and fields of view outside (0, pi). Non-finite
values: a face with a NaN/inf vertex covers no pixel; NaN/inf attributes or lighting propagate to the output;
texture lookups reject NaN/inf/absurd uvs. Points at or behind the camera plane project to finite, meaningless
pixels, and ``perspective_correct`` rasterization drops their triangles.

Speed: per-pixel work runs on the covered pixels only, "packed" as (C,N) arrays (``Fragments.pix*``,
``interpolate_t``, ``sh_shading_packed``, ``texture_packed_t``); the hot paths are autograd Functions with
hand-written backward passes (each next to its op; the numba switch, constants and
shared helpers in ``_backend.py``), executed by numba kernels on CPU (``_pixel_numba.py``,
``_raster_numba.py``, ``_aa_numba.py``) and by plain torch on other devices or without numba. Both paths are
tested against each other and against finite differences.
"""

from flamefit.render.antialias import antialias, edge_neighbours, silhouette_pairs, soft_mask
from flamefit.render.camera import (
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
from flamefit.render.interpolate import interpolate, interpolate_t, interpolate_uv
from flamefit.render.mesh_renderer import RenderOutput, render_mesh
from flamefit.render.rasterize import Fragments, rasterize
from flamefit.render.shade import (
    SH_CONSTANTS,
    face_normals,
    sh_basis,
    sh_shading,
    sh_shading_packed,
    vertex_normals,
)
from flamefit.render.texture import texture, texture_packed, texture_packed_t
from flamefit.render.visibility import vertex_visibility

__all__ = [
    "SH_CONSTANTS",
    "Fragments",
    "OrthographicCamera",
    "PerspectiveCamera",
    "RenderOutput",
    "antialias",
    "camera_from_fov",
    "edge_neighbours",
    "extrinsics_to_matrix",
    "face_normals",
    "interpolate",
    "interpolate_t",
    "interpolate_uv",
    "intrinsics_from_opencv",
    "intrinsics_to_opengl_projection",
    "look_at",
    "opencv_to_opengl_extrinsics",
    "opencv_to_opengl_view",
    "opengl_to_opencv_extrinsics",
    "project_points",
    "rasterize",
    "render_mesh",
    "sh_basis",
    "sh_shading",
    "sh_shading_packed",
    "silhouette_pairs",
    "soft_mask",
    "texture",
    "texture_packed",
    "texture_packed_t",
    "vertex_normals",
    "vertex_visibility",
]
