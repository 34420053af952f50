"""Shading: vertex normals and 9-coefficient spherical-harmonics (SH) lighting.

``rgb = albedo * sh_shading(normals, sh)``. The SH basis is the real, order-2 basis in the form DECA and the
FLAME fitters use (Ramamoorthi & Hanrahan's irradiance approximation: the Lambertian convolution factors are
folded into the constants), in this order for a unit normal ``n = (x, y, z)``::

    c0 * 1, c1 * x, c1 * y, c1 * z, c2 * xy, c2 * xz, c2 * yz, c3 * (x^2 - y^2), c4 * (3 z^2 - 1)

    c0 = 1/sqrt(4 pi), c1 = (2 pi / 3) sqrt(3 / (4 pi)), c2 = (pi / 4) 3 sqrt(5 / (12 pi)),
    c3 = (pi / 4) (3 / 2) sqrt(5 / (12 pi)), c4 = (pi / 4) (1 / 2) sqrt(5 / (4 pi))

so lighting coefficients estimated by DECA-style code can be reused as is. The frame of the normals is the
caller's choice (``render_mesh`` uses the OpenCV camera frame: x right, y down, z forward, so a surface facing
the camera has z < 0). ``sh`` is (B,9) (one set shared by the colour channels) or (B,9,C) (one per channel).
"""

from __future__ import annotations

import torch

from flamefit.render._ops import SH_CONSTANTS, SHShading, VertexNormals, corner_index


def _face_corners(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B,V,3), (F,3) -> (B,F,3,3) corner positions (one index_select: faster than advanced indexing)."""
    B, V, C = verts.shape
    F = faces.shape[0]
    idx = faces.reshape(1, -1) + (torch.arange(B, device=verts.device) * V).unsqueeze(1)
    return verts.reshape(B * V, C).index_select(0, idx.reshape(-1)).view(B, F, 3, C)


def face_normals(verts: torch.Tensor, faces: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """(B,V,3), (F,3) -> (B,F,3) face normals (right-hand rule on the face's vertex order)."""
    faces = faces.to(device=verts.device, dtype=torch.int64)
    corners = _face_corners(verts, faces)
    v0, v1, v2 = corners.unbind(2)
    n = torch.linalg.cross(v1 - v0, v2 - v0)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-20) if normalize else n


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (B,V,3), unit length (zero for unused vertices)."""
    B, V, _ = verts.shape
    faces = faces.to(device=verts.device, dtype=torch.int64)
    return VertexNormals.apply(verts, corner_index(faces, B, V), faces).view(B, V, 3)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals (...,3) -> SH basis values (...,9) with the constants above."""
    x, y, z = normals.unbind(-1)
    c0, c1, c2, c3, c4 = SH_CONSTANTS
    return torch.stack([
        torch.full_like(x, c0), c1 * x, c1 * y, c1 * z,
        c2 * x * y, c2 * x * z, c2 * y * z, c3 * (x * x - y * y), c4 * (3.0 * z * z - 1.0),
    ], dim=-1)


def sh_shading(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Irradiance from SH lighting: normals (B,H,W,3) (or (B,N,3)), sh (B,9) or (B,9,C) -> (B,H,W,C)."""
    B = normals.shape[0]
    basis = sh_basis(normals)  # (B,...,9)
    sh = _as_sh9c(sh)
    flat = basis.reshape(B, -1, 9)
    out = torch.bmm(flat, sh.expand(B, 9, sh.shape[-1]))
    return out.view(normals.shape[:-1] + (sh.shape[-1],))


def _as_sh9c(sh: torch.Tensor) -> torch.Tensor:
    if sh.dim() == 2:
        sh = sh.unsqueeze(-1).expand(sh.shape[0], 9, 3)
    if sh.dim() != 3 or sh.shape[-2] != 9:
        raise ValueError(f"sh must be (B,9) or (B,9,C), got {tuple(sh.shape)}")
    return sh


def sh_shading_packed(normals: torch.Tensor, sh: torch.Tensor, counts: list[int],
                      batch_index: torch.Tensor | None = None) -> torch.Tensor:
    """Packed, structure-of-arrays variant: unit normals (3,N) whose pixels are grouped by image with
    ``counts[b]`` pixels for image b (``frags.counts``), sh (B,9) or (B,9,C) -> (C,N). ``batch_index`` (N,)
    (``frags.pix_batch``) is derived from ``counts`` when not given."""
    sh = _as_sh9c(sh).to(normals.dtype)
    if sh.shape[0] > 1 and len(counts) != sh.shape[0]:
        raise ValueError(f"sh has {sh.shape[0]} images but the pixels come from {len(counts)}")
    if batch_index is None:
        batch_index = torch.repeat_interleave(torch.arange(len(counts), device=normals.device),
                                              torch.tensor(counts, device=normals.device))
    return SHShading.apply(normals.contiguous(), sh, counts, batch_index)
