"""Interpolate per-vertex attributes over the rasterized pixels (differentiable w.r.t. the attribute and the
barycentrics, hence the vertex positions).

``interpolate(attr, faces, frags)`` -> (B,H,W,C), zeros on background; ``packed=True`` returns (N,C) for the
covered pixels only (cheaper; ``frags.unpack`` turns it into an image with any background), and
``interpolate_t`` returns the packed values as (C,N), the layout the fast per-pixel code works in.
``interpolate_uv(vt, ft, frags)`` does the same for texture coordinates indexed by their own UV faces (FLAME's
``vt``/``ft``: a seam vertex has several UVs, so UV faces differ from position faces).
"""

from __future__ import annotations

import torch

from flamefit.render._ops import Interpolate
from flamefit.render.rasterize import Fragments


def interpolate_t(attr: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """Packed, structure-of-arrays result (C,N) (the fastest form to keep computing on)."""
    faces = faces.to(device=frags.pix.device, dtype=torch.int64)
    vidx = faces.t().index_select(1, frags.pix_tri)  # (3,N)
    if attr.dim() == 3 and attr.shape[0] == 1:
        attr = attr[0]
    if attr.dim() == 3:
        if attr.shape[0] != frags.batch:
            raise ValueError(f"attribute batch {attr.shape[0]} does not match the rasterized batch {frags.batch}")
        vidx = vidx + frags.pix_batch * attr.shape[1]
        attr = attr.reshape(-1, attr.shape[-1])
    elif attr.dim() != 2:
        raise ValueError(f"attribute must be (B,V,C) or (V,C), got {tuple(attr.shape)}")
    return Interpolate.apply(attr, vidx, frags.pix_bary_t.to(attr.dtype))


def interpolate(attr: torch.Tensor, faces: torch.Tensor, frags: Fragments, *, packed: bool = False
                ) -> torch.Tensor:
    """Barycentric interpolation of per-vertex ``attr`` (B,V,C) or (V,C) -> (B,H,W,C) (or packed (N,C))."""
    out_t = interpolate_t(attr, faces, frags)
    return out_t.t() if packed else frags.unpack_t(out_t)


def interpolate_uv(vt: torch.Tensor, ft: torch.Tensor, frags: Fragments, *, packed: bool = False
                   ) -> torch.Tensor:
    """UV image from a UV layout: ``vt`` (T,2) or (B,T,2), ``ft`` (F,3) with the same face order as the
    rasterized faces -> (B,H,W,2) (or packed (N,2)); zeros on background."""
    return interpolate(vt, ft, frags, packed=packed)
