"""Per-vertex visibility from a rasterization (not differentiable).

A vertex is visible if (a) a visible pixel's triangle uses it, or (b) — when ``verts_px`` is given — it projects
inside the image onto a covered pixel whose z-buffer depth is not nearer than the vertex by more than
``depth_tol`` (same units as the depth channel of ``verts_px``: metres for this library's cameras). (b) catches
vertices of triangles too small to cover a pixel centre; (a) catches vertices on the silhouette whose own pixel
is background. Used to unwrap textures and to weight landmark correspondences.
"""

from __future__ import annotations

import torch

from flamefit.render._backend import check_faces, check_frags_faces
from flamefit.render.rasterize import Fragments


def vertex_visibility(frags: Fragments, faces: torch.Tensor, num_verts: int, verts_px: torch.Tensor | None = None,
                      *, depth_tol: float = 0.005) -> torch.Tensor:
    """-> (B,V) bool."""
    B, H, W = frags.batch, frags.height, frags.width
    dev = frags.pix.device
    faces = check_faces(faces, num_verts, of="the mesh (num_verts)").to(device=dev)
    check_frags_faces(frags, faces)
    vis = torch.zeros(B * num_verts, dtype=torch.bool, device=dev)
    used = faces.index_select(0, frags.pix_tri) + (frags.pix_batch * num_verts).unsqueeze(1)
    vis[used.reshape(-1)] = True
    vis = vis.view(B, num_verts)
    if verts_px is None:
        return vis
    with torch.no_grad():
        v = verts_px.detach()
        ix = torch.floor(v[..., 0]).to(torch.int64)
        iy = torch.floor(v[..., 1]).to(torch.int64)
        inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H) & torch.isfinite(v).all(-1)
        b = torch.arange(B, device=dev).unsqueeze(1)
        flat = (b * H + iy.clamp(0, H - 1)) * W + ix.clamp(0, W - 1)
        z = frags.zbuf.reshape(-1)[flat]
        if frags.perspective_correct:
            inside &= v[..., 2] > 0
        ztest = inside & torch.isfinite(z) & (v[..., 2].to(z.dtype) <= z + depth_tol)
    return vis | ztest
