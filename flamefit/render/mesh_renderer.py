"""``render_mesh``: the primitives composed into the usual analysis-by-synthesis renderer.

    out = render_mesh(verts_world, faces, camera, albedo=..., sh=..., background=...)
    loss = ((out.rgb - image) * out.alpha).abs().mean()

Pipeline: camera transform/projection -> :func:`rasterize` (perspective-correct for a perspective camera) ->
per-pixel albedo (per-vertex colours, or a UV texture ``(tex, vt, ft)``) and camera-frame normals on the covered
pixels only -> ``albedo * sh_shading(normal, sh)`` (no shading when ``sh`` is None) -> composite over the
background -> :func:`antialias` on colour and alpha together (silhouette gradients).

All images are channels-last (B,H,W,C) float tensors: ``rgb`` (B,H,W,3), ``alpha`` (B,H,W,1) (anti-aliased
coverage when ``antialias=True``), ``depth`` (B,H,W,1) camera z in metres (0 on background), ``normals``
(B,H,W,3) unit camera-frame (OpenCV) normals (0 on background), ``uv`` (B,H,W,2) or None without a texture;
``mask`` (B,H,W) bool and ``tri_id`` (B,H,W) int64 (-1 background) are the hard rasterization;
``vertex_visible`` (B,V) bool. ``depth``, ``normals``, ``uv`` and ``vertex_visible`` are built on first access.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from flamefit.render._backend import check_faces, check_float, check_image_size
from flamefit.render.antialias import Composite, _silhouette_pairs, pair_geometry
from flamefit.render.interpolate import _interpolate_t
from flamefit.render.rasterize import Fragments, _rasterize
from flamefit.render.shade import _vertex_normals, shade_albedo_packed
from flamefit.render.texture import texture_packed_t
from flamefit.render.visibility import vertex_visibility


@dataclass
class RenderOutput:
    """Render products (see module doc). ``frags`` and ``verts_px`` (B,V,3) are kept for further use."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    frags: Fragments
    verts_px: torch.Tensor
    faces: torch.Tensor
    _normals_raw: torch.Tensor | None = None
    _uv_t: torch.Tensor | None = None
    _verts_cam: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        return self.frags.mask

    @property
    def tri_id(self) -> torch.Tensor:
        return self.frags.tri_id

    @functools.cached_property
    def depth(self) -> torch.Tensor:
        return self.frags.unpack_t(self.frags.pix_depth.unsqueeze(0))

    @functools.cached_property
    def normals(self) -> torch.Tensor:
        n = self._normals_raw
        if n is None:
            n = _interpolate_t(_vertex_normals(self._verts_cam, self.faces), self.faces, self.frags)
        return self.frags.unpack_t(_normalize_t(n))

    @functools.cached_property
    def uv(self) -> torch.Tensor | None:
        return None if self._uv_t is None else self.frags.unpack_t(self._uv_t)

    @functools.cached_property
    def vertex_visible(self) -> torch.Tensor:
        return vertex_visibility(self.frags, self.faces, self.verts_px.shape[1], self.verts_px)


def _background_rows(background, B: int, H: int, W: int, like: torch.Tensor) -> torch.Tensor | None:
    """Background as (B*H*W, 3) rows (a broadcast view where possible), or None for black."""
    if background is None:
        return None
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.dim() == 1:  # (3,) colour
        bg = bg.view(1, 1, 1, -1)
    elif bg.dim() == 2:  # (B,3) colour per image
        bg = bg.view(bg.shape[0], 1, 1, -1)
    elif bg.dim() != 4:
        raise ValueError(f"background must be (3,), (B,3) or (B,H,W,3), got {tuple(bg.shape)}")
    return bg.expand(B, H, W, bg.shape[-1]).reshape(B * H * W, bg.shape[-1])


def render_mesh(verts_world: torch.Tensor, faces: torch.Tensor, camera, *, albedo: torch.Tensor | None = None,
                texture: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                sh: torch.Tensor | None = None, background=None, antialias: bool = True,
                texture_mode: str = "clamp", backend: str = "auto") -> RenderOutput:
    """Render a batch of meshes.

    Args:
        verts_world: (B,V,3) metres.
        faces: (F,3) int64, in [0, V).
        camera: :class:`PerspectiveCamera` or :class:`OrthographicCamera` (its height/width set the image size).
        albedo: per-vertex colours (B,V,3) or (V,3), 0..1; white when neither albedo nor texture is given.
        texture: ``(tex (B,Ht,Wt,3) or (Ht,Wt,3), vt (T,2), ft (F,3))``, UV convention of ``texture.py``.
        sh: lighting, (B,9) or (B,9,3) (see ``shade.py``); None = unlit (rgb = albedo).
        background: None (black), a colour (3,) or (B,3), or an image (B,H,W,3).
        antialias: blend across silhouettes (gives gradients at the contour).
        texture_mode: 'clamp' or 'wrap'.
        backend: 'auto', 'numba' or 'torch' for the non-differentiable passes.
    """
    if albedo is not None and texture is not None:
        raise ValueError("give either albedo (per-vertex colours) or texture=(tex, vt, ft), not both")
    check_float(verts_world, "verts_world")
    if verts_world.dim() != 3 or verts_world.shape[-1] != 3:
        raise ValueError(f"verts_world must be (B,V,3), got {tuple(verts_world.shape)}")
    B, V, _ = verts_world.shape
    H, W = check_image_size(camera.height, camera.width, "camera")
    # every check once, here, before any work; the internal ops below then skip theirs
    faces = check_faces(faces, V, of="verts_world").to(device=verts_world.device)
    if albedo is not None and (albedo.dim() not in (2, 3) or albedo.shape[-2] != V):
        raise ValueError(f"albedo must be per-vertex colours (B,V,C) or (V,C) with V = {V}, got "
                         f"{tuple(albedo.shape)}")
    if texture is not None:
        if not isinstance(texture, (tuple, list)) or len(texture) != 3:
            raise ValueError("texture must be a tuple (tex, vt, ft)")
        _, vt, ft = texture
        if vt.dim() not in (2, 3) or vt.shape[-1] != 2:
            raise ValueError(f"texture vt must be (T,2) or (B,T,2) UV coordinates, got {tuple(vt.shape)}")
        ft = check_faces(ft, vt.shape[-2], "texture ft", of="vt").to(device=verts_world.device)
        if ft.shape != faces.shape:
            raise ValueError(f"texture ft must have one UV face per face, (F,3) = {tuple(faces.shape)}, got "
                             f"{tuple(ft.shape)}")
    verts_cam = camera.transform(verts_world)
    verts_px = camera.project_camera_points(verts_cam)
    frags = _rasterize(verts_px, faces, H, W, camera.is_perspective, backend)

    # one gather for everything per-vertex; per-pixel values are (C,N) "structure of arrays"
    cols = []
    if albedo is not None:
        cols.append(albedo.to(verts_world.dtype).expand(B, V, albedo.shape[-1]))
    if sh is not None:
        cols.append(_vertex_normals(verts_cam, faces))
    normals_raw = None
    uv_t = None
    if cols:
        per_pix = _interpolate_t(torch.cat(cols, -1) if len(cols) > 1 else cols[0], faces, frags)
    if albedo is not None:
        color = per_pix[: albedo.shape[-1]]
    elif texture is not None:
        tex, vt, _ = texture
        uv_t = _interpolate_t(vt.to(verts_world.dtype), ft, frags)
        color = texture_packed_t(tex.to(verts_world.dtype), uv_t, frags.pix_batch, mode=texture_mode)
    else:
        color = verts_world.new_ones(3, frags.pix.shape[0])
    if sh is not None:
        normals_raw = per_pix[-3:]
        color = shade_albedo_packed(color, normals_raw, sh.to(verts_world.dtype), frags.counts, frags.pix_batch)

    # colour over the background and coverage, anti-aliased, in one pass (no full-image intermediates)
    P = B * H * W
    base = _background_rows(background, B, H, W, verts_world)
    if antialias:
        geo = pair_geometry(_silhouette_pairs(frags, verts_px, faces, backend), H, W, verts_px.dtype)
    else:
        empty = frags.pix[:0]
        geo = (empty, empty, empty, empty, empty.bool(), verts_px.new_zeros(0), verts_px.new_zeros(0),
               verts_px.new_zeros(0))
    rgb, alpha = Composite.apply(color, frags.pix, base, verts_px.reshape(-1, 3), *geo, P)
    return RenderOutput(rgb=rgb.view(B, H, W, -1), alpha=alpha.view(B, H, W, 1), frags=frags, verts_px=verts_px,
                        faces=faces, _normals_raw=normals_raw, _uv_t=uv_t, _verts_cam=verts_cam)


def _normalize_t(n: torch.Tensor) -> torch.Tensor:
    """(3,N) -> unit length columns (explicit sums: reductions over a size-3 axis are slow on CPU)."""
    sq = n * n
    inv = torch.rsqrt((sq[0] + sq[1] + sq[2]).clamp_min(1e-24))
    return n * inv
