"""UV-space bake: photo colours -> texture maps, with per-texel visibility and confidence (texture-agnostic).

Built from the public primitives only (``rasterize``, ``vertex_normals``, the camera's projection, ``texture`` for
bilinear sampling), so it knows triangles, UVs and cameras, nothing about faces:

1. :func:`rasterize_uv`: the UV layout (``vt`` (T,2), ``ft`` (F,3)) rasterised as a flat 2D mesh on the texel grid
   -> per-texel face id and barycentrics (texel ``(r, c)`` has its centre at ``u = (c + 0.5) / Wt``,
   ``v = 1 - (r + 0.5) / Ht``: the convention of ``texture.py``, row 0 is ``v = 1``). Computed once per layout.
2. :func:`bake_uv`: per texel, the surface point and the (interpolated vertex) normal in the camera frame, its
   projection into the photo (``camera.project_camera_points``), the photo (and an optional image-space mask)
   sampled bilinearly there, and
   * ``visible``: the texel lies in the image, faces the camera and is not behind other geometry: its depth is at
     most ``depth_tol`` (camera-frame metres; the units of the camera's depth) behind the photo-space z-buffer
     (the mesh rasterised by the same camera) at the nearest pixel centre;
   * ``cos_view``: cosine between the normal and the direction to the camera (1 = facing, 0 = grazing);
   * ``weight`` = ``visible * clamp(cos_view, 0, 1) ** cos_power * mask`` (0 where ``cos_view < min_cos``).

Everything is batched (B meshes, B photos, one camera each); the UV layout and faces are shared. ``device`` and
``dtype`` follow the vertices. Not meant to be differentiated (texture building works on fixed fits), but nothing
is detached either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flamefit.render.rasterize import Fragments, rasterize
from flamefit.render.shade import vertex_normals
from flamefit.render.texture import texture_packed_t


@dataclass
class UVRaster:
    """The UV layout on a texel grid: ``frags`` (batch 1) covers the texels inside some UV triangle.

    ``texel`` (N,) flat texel index (row * Wt + col), ``face`` (N,) mesh face index, ``bary`` (N,3) barycentrics
    w.r.t. the face's corners (the same for the UV and the position corners), ``mask`` (Ht,Wt) bool coverage.
    """

    frags: Fragments
    height: int
    width: int

    @property
    def texel(self) -> torch.Tensor:
        return self.frags.pix

    @property
    def face(self) -> torch.Tensor:
        return self.frags.pix_tri

    @property
    def bary(self) -> torch.Tensor:
        return self.frags.pix_bary

    @property
    def mask(self) -> torch.Tensor:
        return self.frags.mask[0]

    def unpack(self, values: torch.Tensor, background: float = 0.0) -> torch.Tensor:
        """Per-texel values (B,N,...) -> maps (B,Ht,Wt,...)."""
        B, N = values.shape[:2]
        tail = values.shape[2:]
        out = values.new_full((B, self.height * self.width) + tail, float(background))
        out[:, self.texel.to(values.device)] = values
        return out.view((B, self.height, self.width) + tail)


def _size(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


def rasterize_uv(vt: torch.Tensor, ft: torch.Tensor, size: int | tuple[int, int], *,
                 backend: str = "auto") -> UVRaster:
    """Rasterise a UV layout on a (Ht,Wt) texel grid (``size`` int or (Ht,Wt)). ``vt`` (T,2) u right, v up."""
    Ht, Wt = _size(size)
    vt = torch.as_tensor(vt)
    if not vt.is_floating_point():
        vt = vt.to(torch.float32)
    ft = torch.as_tensor(ft).to(device=vt.device, dtype=torch.int64)
    if vt.dim() != 2 or vt.shape[1] != 2 or ft.dim() != 2 or ft.shape[1] != 3:
        raise ValueError(f"vt must be (T,2) and ft (F,3), got {tuple(vt.shape)} and {tuple(ft.shape)}")
    # UV -> texel-grid pixels (x right, y down, pixel centres at +0.5), flat depth: overlaps go to the lower face id
    xy = torch.stack([vt[:, 0] * Wt, (1.0 - vt[:, 1]) * Ht, torch.zeros_like(vt[:, 0])], -1)
    frags = rasterize(xy.unsqueeze(0), ft, Ht, Wt, perspective_correct=False, backend=backend)
    return UVRaster(frags=frags, height=Ht, width=Wt)


def texel_attributes(attr: torch.Tensor, faces: torch.Tensor, uv: UVRaster) -> torch.Tensor:
    """Barycentric interpolation of per-vertex ``attr`` (B,V,C) at the covered texels -> (B,N,C)."""
    faces = faces.to(device=attr.device, dtype=torch.int64)
    vidx = faces.index_select(0, uv.face.to(attr.device))  # (N,3)
    corners = attr[:, vidx.reshape(-1)].view(attr.shape[0], -1, 3, attr.shape[-1])  # (B,N,3,C)
    return (corners * uv.bary.to(device=attr.device, dtype=attr.dtype)[None, :, :, None]).sum(2)


@dataclass
class BakeOutput:
    """Per-texel bake of B photos onto a (Ht,Wt) texel grid. All maps are (B,Ht,Wt,...), zero off the layout.

    color (B,Ht,Wt,C) photo sampled at the texel's projection; mask_value (B,Ht,Wt) the image-space mask sampled
    there (1 without a mask); visible (B,Ht,Wt) bool; cos_view (B,Ht,Wt); weight (B,Ht,Wt) in [0,1];
    points_cam, normals_cam (B,Ht,Wt,3) camera frame (OpenCV), metres / unit; pixel_xy (B,Ht,Wt,2) projection in
    pixels; depth (B,Ht,Wt) camera-frame depth; uv_mask (Ht,Wt) bool texels covered by the layout.
    """

    color: torch.Tensor
    mask_value: torch.Tensor
    visible: torch.Tensor
    cos_view: torch.Tensor
    weight: torch.Tensor
    points_cam: torch.Tensor
    normals_cam: torch.Tensor
    pixel_xy: torch.Tensor
    depth: torch.Tensor
    uv_mask: torch.Tensor


def _sample_image(image: torch.Tensor, x_px: torch.Tensor, y_px: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of (B,H,W,C) images at pixel positions (B,N) (centres at +0.5) -> (B,N,C)."""
    B, H, W, C = image.shape
    N = x_px.shape[1]
    # the photo as a texture: u = x / W, v = 1 - y / H puts texel centres exactly on pixel centres
    uv_t = torch.stack([x_px / W, 1.0 - y_px / H], 0).reshape(2, B * N).to(image.dtype)
    bidx = torch.arange(B, device=image.device).repeat_interleave(N)
    return texture_packed_t(image.contiguous(), uv_t.contiguous(), bidx, mode="clamp").t().reshape(B, N, C)


def bake_uv(verts_world: torch.Tensor, faces: torch.Tensor, vt: torch.Tensor, ft: torch.Tensor, camera,
            image: torch.Tensor, *, mask: torch.Tensor | None = None, size: int | tuple[int, int] = 256,
            uv: UVRaster | None = None, depth_tol: float = 0.005, min_cos: float = 0.0, cos_power: float = 1.0,
            backend: str = "auto") -> BakeOutput:
    """Bake photos into UV space (see the module doc).

    Args:
        verts_world: (B,V,3) mesh vertices (world frame of ``camera``).
        faces: (F,3) position faces; ``ft`` (F,3) the UV faces in the same order, ``vt`` (T,2) u right, v up.
        camera: :class:`PerspectiveCamera` or :class:`OrthographicCamera` with B (or 1) cameras; its
            height/width must match the image.
        image: (B,H,W,C) float photos (any range; sampled as is).
        mask: optional image-space weight (B,H,W) or (B,H,W,1) in [0,1] (e.g. a skin mask), sampled bilinearly.
        size: texel grid (Ht,Wt) or int; ignored when ``uv`` (a precomputed :func:`rasterize_uv`) is given.
        depth_tol: how far behind the z-buffer a texel may lie and still count as visible (camera depth units).
        min_cos: texels whose ``cos_view`` is below this get weight 0 (and are not visible).
        cos_power: confidence = ``cos_view ** cos_power``.
    """
    if verts_world.dim() != 3 or verts_world.shape[-1] != 3:
        raise ValueError(f"verts_world must be (B,V,3), got {tuple(verts_world.shape)}")
    if image.dim() != 4:
        raise ValueError(f"image must be (B,H,W,C), got {tuple(image.shape)}")
    B = verts_world.shape[0]
    H, W = camera.height, camera.width
    if image.shape[0] != B or tuple(image.shape[1:3]) != (H, W):
        raise ValueError(f"image {tuple(image.shape)} does not match B={B} meshes and the camera's {H}x{W} pixels")
    dev, dt = verts_world.device, verts_world.dtype
    faces = faces.to(device=dev, dtype=torch.int64)
    if uv is None:
        uv = rasterize_uv(torch.as_tensor(vt).to(device=dev, dtype=dt), ft, size, backend=backend)
    image = image.to(device=dev, dtype=dt)

    verts_cam = camera.transform(verts_world)
    # z-buffer of the photo: the same mesh rasterised by the same camera
    verts_px = camera.project_camera_points(verts_cam)
    frags = rasterize(verts_px, faces, H, W, perspective_correct=camera.is_perspective, backend=backend)
    zbuf = frags.zbuf.to(dt)  # (B,H,W), +inf on background

    nrm = vertex_normals(verts_cam, faces)
    both = texel_attributes(torch.cat([verts_cam, nrm], -1), faces, uv)  # (B,N,6)
    p_cam = both[..., :3]
    n_cam = torch.nn.functional.normalize(both[..., 3:], dim=-1, eps=1e-12)
    proj = camera.project_camera_points(p_cam)  # (B,N,3) x_px, y_px, depth
    x, y, z = proj.unbind(-1)

    if camera.is_perspective:
        to_cam = torch.nn.functional.normalize(-p_cam, dim=-1, eps=1e-12)
        in_front = z > 0
    else:  # orthographic: the camera looks along +z everywhere
        to_cam = torch.tensor([0.0, 0.0, -1.0], dtype=dt, device=dev).expand_as(p_cam)
        in_front = torch.ones_like(z, dtype=torch.bool)
    cos_view = (n_cam * to_cam).sum(-1)

    inside = in_front & (x >= 0) & (x < W) & (y >= 0) & (y < H) & torch.isfinite(proj).all(-1)
    ix = torch.floor(x.detach()).clamp(0, W - 1).to(torch.int64)
    iy = torch.floor(y.detach()).clamp(0, H - 1).to(torch.int64)
    bidx = torch.arange(B, device=dev).unsqueeze(1)
    z_front = zbuf.reshape(-1)[((bidx * H + iy) * W + ix).reshape(-1)].view(B, -1)
    visible = inside & torch.isfinite(z_front) & (z <= z_front + depth_tol) & (cos_view > min_cos)

    color = _sample_image(image, x, y)
    if mask is not None:
        m = mask.to(device=dev, dtype=dt)
        if m.dim() == 3:
            m = m.unsqueeze(-1)
        if m.shape[:3] != (B, H, W):
            raise ValueError(f"mask {tuple(mask.shape)} does not match the images (B={B}, {H}x{W})")
        mask_value = _sample_image(m, x, y)[..., 0]
    else:
        mask_value = torch.ones_like(z)
    conf = cos_view.clamp(0.0, 1.0)
    if cos_power != 1.0:
        conf = conf.pow(cos_power)
    weight = visible.to(dt) * conf * mask_value.clamp(0.0, 1.0)

    return BakeOutput(
        color=uv.unpack(color), mask_value=uv.unpack(mask_value), visible=uv.unpack(visible),
        cos_view=uv.unpack(cos_view), weight=uv.unpack(weight), points_cam=uv.unpack(p_cam),
        normals_cam=uv.unpack(n_cam), pixel_xy=uv.unpack(torch.stack([x, y], -1)), depth=uv.unpack(z),
        uv_mask=uv.mask.to(dev),
    )
