"""Where MediaPipe's 478 landmarks lie on a FLAME-topology mesh, derived automatically (no embedding files).

:func:`dense_correspondence` renders the loaded model's mean head (skin-coloured albedo, eyeballs with a dark
iris, eyebrows painted on the brow ridge after a quick first pass, SH lighting) from 13 views (yaw up to 45
degrees, pitch up to 12), detects the 478 points on every render with MediaPipe, and casts each
detected point back onto the mesh through the rasteriser's triangle ids (the ray through the landmark's pixel
position meets the plane of the triangle seen there). Views are combined per landmark: the median 3D point of
the views that see it frontally enough (surface normal within ~70 degrees of the view direction), snapped to
the closest point of the mesh surface (the head for the 468 face points, the eyeballs for the 10 iris points)
-> :class:`~flamefit.model.landmarks.MeshLandmarks` ``(face_idx (478,), bary (478, 3))``.

The result is cached per model in the user cache directory (``platformdirs.user_cache_dir('flamefit')``), keyed
by the model file's sha256 and this algorithm's version, so it is computed once per model (a few seconds).
Users with the RingNet/DECA 68-point embedding can still load it with
:func:`flamefit.model.landmarks.load_ringnet_68`; the 478 points map to those 68 through
:data:`flamefit.observe.mp68.MP_TO_68`.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from flamefit import _files
from flamefit.errors import FaceNotFound, ModelFileError
from flamefit.model.landmarks import MeshLandmarks

ALGORITHM_VERSION = 2
N_DENSE = 478
_IRIS = slice(468, 478)
# (yaw, pitch) in degrees; + yaw = the camera moves to the subject's left
DEFAULT_VIEWS: tuple[tuple[float, float], ...] = (
    (0, 0), (-15, 0), (15, 0), (-30, 0), (30, 0), (-45, 0), (45, 0),
    (0, -12), (0, 12), (-20, -10), (20, -10), (-20, 10), (20, 10),
)
_IMAGE_PX = 512
_FOCAL_PX = 1.6 * _IMAGE_PX  # ~35 degrees field of view
_DISTANCE_M = 0.6
_MIN_FACING = 0.35
# on FLAME heads the views agree to ~1.5 mm (median over the points); far more means no real face was found
_MAX_MEDIAN_SPREAD_MM = 5.0  # cos of the largest accepted angle between surface normal and view direction
_FIRST_PASS_VIEWS: tuple[tuple[float, float], ...] = ((0, 0), (-20, 0), (20, 0))
_BACKGROUND = (0.35, 0.45, 0.55)
_SKIN = (0.80, 0.62, 0.52)
_BROW_RGB = (0.22, 0.15, 0.10)
_BROW_SD_M = 0.003
_BROW_TAPER_M = 0.004
_IRIS_RGB = (0.18, 0.11, 0.07)
_SCLERA = (0.92, 0.90, 0.88)


@dataclass
class CorrespondenceReport:
    """What the derivation saw: per-view detections, per-landmark view counts, the spread of the views."""

    views: list[tuple[float, float]] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)
    n_views_used: np.ndarray | None = None  # (478,)
    spread_mm: np.ndarray | None = None  # (478,) median distance of the view points to the combined point
    samples: np.ndarray | None = field(default=None, repr=False)  # (n_detected_views, 478, 3) back-projections
    facing: np.ndarray | None = field(default=None, repr=False)  # (n_detected_views, 478) cos, -1 = not seen


def cache_directory(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where correspondences are cached: ``cache_dir``, ``$FLAMEFIT_CACHE_DIR``, or the user cache dir."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = _files.env_cache_dir()  # the variable's folder itself; only the default gets a subfolder
    return env if env is not None else _files.cache_dir() / "correspondence"


def _model_key(model, texture=None) -> str:
    sha = getattr(model, "sha256", None)
    if not sha:  # a model built in memory: hash its geometry
        h = hashlib.sha256()
        h.update(model.v_template.detach().cpu().double().numpy().tobytes())
        h.update(model.faces.detach().cpu().numpy().astype(np.int64).tobytes())
        sha = h.hexdigest()
    if texture is not None:
        h = hashlib.sha256()
        for a in texture:
            h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
        sha = f"{sha}_tex{h.hexdigest()[:16]}"
    return f"{sha}_mediapipe478_v{ALGORITHM_VERSION}"


def dense_correspondence(model, cache_dir: str | os.PathLike | None = None, *, refresh: bool = False,
                         detector=None, texture=None) -> MeshLandmarks:
    """MediaPipe's 478 landmarks on ``model``'s mesh (cached per model file; see the module docstring).

    ``model``: a :class:`~flamefit.model.flame.FlameModel` (or any module with ``faces`` and a ``__call__``
    returning ``.vertices``). ``refresh`` recomputes even when a cached result exists. ``texture``: optional
    ``(tex (H,W,3) RGB 0..1, vt, ft)`` to render the mean head with instead of the synthetic albedo (part of the
    cache key). Raises :class:`~flamefit.errors.ModelFileError` when MediaPipe finds no face on the renders.
    """
    path = cache_directory(cache_dir) / f"{_model_key(model, texture)}.npz"
    failed = path.with_suffix(".failed.txt")
    if not refresh:
        if path.is_file():
            try:
                with np.load(path) as data:
                    cached = MeshLandmarks(torch.as_tensor(data["face_idx"]), torch.as_tensor(data["bary"]))
                cached.validate_against(int(model.faces.shape[0]), str(path))  # never index past the mesh
                return cached
            except (OSError, KeyError, ValueError, TypeError, ModelFileError):
                pass  # a damaged cache file is recomputed
        if failed.is_file():  # this model has no derivable correspondence: say so at once, every time
            raise ModelFileError(f"{failed.read_text().strip()} (cached in {failed}; refresh=True retries)")
    with torch.no_grad():
        verts = model().vertices[0].detach().to("cpu", torch.float64)
    faces = model.faces.detach().cpu()
    try:
        face_idx, bary, report = derive_correspondence(verts, faces, detector=detector, texture=texture,
                                                       source=str(getattr(model, "source", "the model")))
    except ModelFileError as exc:
        try:
            failed.parent.mkdir(parents=True, exist_ok=True)
            failed.write_text(str(exc) + "\n")
        except OSError:
            pass
        raise
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _files.atomic_path(path, suffix=".npz") as tmp:  # atomic: parallel processes never read half a file
            np.savez(tmp, face_idx=face_idx, bary=bary, n_views_used=report.n_views_used,
                     spread_mm=report.spread_mm, version=ALGORITHM_VERSION)
        failed.unlink(missing_ok=True)
    except OSError:
        pass  # an unwritable cache only costs time
    return MeshLandmarks(torch.as_tensor(face_idx), torch.as_tensor(bary, dtype=torch.float32))


# ------------------------------------------------------------------------------------------------ derivation


def _components(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """Connected-component label per vertex (union-find over the faces' edges)."""
    parent = np.arange(n_vertices)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for f in faces:
        ra, rb, rc = find(f[0]), find(f[1]), find(f[2])
        parent[rb] = ra
        parent[find(rc)] = ra
    return np.array([find(i) for i in range(n_vertices)])


def _albedo(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex colours: skin on the largest component; the others (eyeballs) white with a dark iris.

    Returns (albedo (V,3), component label per vertex, with the head's label first in ``np.unique``).
    """
    labels = _components(faces, len(verts))
    ids, counts = np.unique(labels, return_counts=True)
    head = ids[np.argmax(counts)]
    albedo = np.tile(np.asarray(_SKIN), (len(verts), 1))
    for comp in ids:
        if comp == head:
            continue
        sel = labels == comp
        p = verts[sel]
        centre = p.mean(0)
        radius = np.linalg.norm(p - centre, axis=1).max()
        # the iris faces forward (+z in FLAME's rest pose): the front cap of the eyeball
        front = (p[:, 2] - centre[2]) / max(radius, 1e-9)
        albedo[sel] = np.where((front > 0.8)[:, None], _IRIS_RGB, _SCLERA)
    return albedo, (labels == head)


def _camera(centre: np.ndarray, yaw_deg: float, pitch_deg: float):
    from flamefit.render import PerspectiveCamera, look_at

    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    direction = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    eye = torch.tensor((centre + _DISTANCE_M * direction)[None], dtype=torch.float64)
    target = torch.tensor(centre[None], dtype=torch.float64)
    R, t = look_at(eye, target)
    K = torch.tensor([[[_FOCAL_PX, 0, _IMAGE_PX / 2], [0, _FOCAL_PX, _IMAGE_PX / 2], [0, 0, 1.0]]],
                     dtype=torch.float64)
    return PerspectiveCamera(K, R, t, _IMAGE_PX, _IMAGE_PX), eye[0].numpy()


def _lighting() -> torch.Tensor:
    # camera frame (OpenCV): the camera looks along +z, so surfaces facing it have n.z < 0; up is -y
    sh = torch.zeros(1, 9, 3, dtype=torch.float64)
    sh[:, 0] = 2.4  # ambient
    sh[:, 3] = -0.45  # from the camera (light from above casts brow-ridge shadows that MediaPipe takes for brows)
    return sh


def _backproject(pts_px: np.ndarray, tri_id: np.ndarray, cam, verts: np.ndarray, faces: np.ndarray,
                 eye: np.ndarray):
    """Landmark pixels -> (3D points (N,3), cos of the view angle (N,), valid (N,)) on the seen triangles."""
    h, w = tri_id.shape
    ix = np.clip(np.floor(pts_px[:, 0]).astype(int), 0, w - 1)
    iy = np.clip(np.floor(pts_px[:, 1]).astype(int), 0, h - 1)
    tri = tri_id[iy, ix]
    valid = tri >= 0
    K = cam.K[0].numpy()
    R = cam.R[0].numpy()
    # ray through the landmark's (sub-pixel) position, in world coordinates
    d_cam = np.linalg.solve(K, np.stack([pts_px[:, 0], pts_px[:, 1], np.ones(len(pts_px))]))
    d_world = (R.T @ d_cam).T
    d_world /= np.linalg.norm(d_world, axis=1, keepdims=True)
    corners = verts[faces[np.where(valid, tri, 0)]]  # (N,3,3)
    n = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
    denom = np.einsum("ij,ij->i", n, d_world)
    s = np.einsum("ij,ij->i", n, corners[:, 0] - eye) / np.where(np.abs(denom) > 1e-12, denom, 1e-12)
    points = eye + s[:, None] * d_world
    facing = np.abs(denom)  # |cos| between the ray and the normal (face winding does not matter)
    return points, facing, valid & (s > 0)


def _closest_points(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, chunk: int = 64):
    """Closest point on the triangles ``faces`` to each point: (face index (N,), barycentrics (N,3))."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    out_f = np.zeros(len(points), np.int64)
    out_b = np.zeros((len(points), 3))
    for start in range(0, len(points), chunk):
        p = points[start:start + chunk, None, :]  # (n,1,3)
        bary = _closest_bary(p, a[None], b[None], c[None])  # (n,F,3)
        q = bary[..., 0:1] * a[None] + bary[..., 1:2] * b[None] + bary[..., 2:3] * c[None]
        d = ((q - p) ** 2).sum(-1)
        best = d.argmin(1)
        out_f[start:start + chunk] = best
        out_b[start:start + chunk] = bary[np.arange(len(best)), best]
    return out_f, out_b


def _closest_bary(p, a, b, c):
    """Barycentrics of the closest point on triangle abc to p (Ericson, Real-Time Collision Detection 5.1.5)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    eps = 1e-30
    # interior
    denom = np.where(np.abs(va + vb + vc) > eps, va + vb + vc, eps)
    v = vb / denom
    w = vc / denom
    out = np.stack([1 - v - w, v, w], -1)
    # edges and vertices, applied from the lowest precedence up (Ericson tests A, B, AB, C, AC, BC in order)
    t_bc = (d4 - d3) / np.where(np.abs((d4 - d3) + (d5 - d6)) > eps, (d4 - d3) + (d5 - d6), eps)
    on_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
    out = np.where(on_bc[..., None], np.stack([np.zeros_like(t_bc), 1 - t_bc, t_bc], -1), out)
    t_ac = d2 / np.where(np.abs(d2 - d6) > eps, d2 - d6, eps)
    on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    out = np.where(on_ac[..., None], np.stack([1 - t_ac, np.zeros_like(t_ac), t_ac], -1), out)
    t_ab = d1 / np.where(np.abs(d1 - d3) > eps, d1 - d3, eps)
    on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    one = np.ones_like(d1)
    zero = np.zeros_like(d1)
    out = np.where(((d6 >= 0) & (d5 <= d6))[..., None], np.stack([zero, zero, one], -1), out)
    out = np.where(on_ab[..., None], np.stack([1 - t_ab, t_ab, np.zeros_like(t_ab)], -1), out)
    out = np.where(((d3 >= 0) & (d4 <= d3))[..., None], np.stack([zero, one, zero], -1), out)
    out = np.where(((d1 <= 0) & (d2 <= 0))[..., None], np.stack([one, zero, zero], -1), out)
    return out


def _observe_views(v, f, albedo, texture, centre, views, det, source, report=None):
    """Render each view, detect the 478 points, cast them onto the mesh: (samples (n,478,3), facing (n,478))."""
    from flamefit.render import render_mesh

    vn, fn = v.numpy(), f.numpy()
    look = {"albedo": torch.as_tensor(albedo)[None]} if texture is None else {
        "texture": tuple(torch.as_tensor(np.asarray(a)) for a in texture)}
    samples, facing = [], []
    for yaw, pitch in views:
        cam, eye = _camera(centre, yaw, pitch)
        out = render_mesh(v[None], f, cam, sh=_lighting(), antialias=False,
                          background=torch.tensor(_BACKGROUND, dtype=torch.float64), **look)
        rgb = out.rgb[0].clamp(0, 1).float().numpy()
        try:
            found = det.detect(rgb, source=f"render of {source} (yaw {yaw}, pitch {pitch})")
        except FaceNotFound:
            found = None
        if report is not None:
            report.views.append((yaw, pitch))
            report.detected.append(found is not None)
        if found is None:
            continue
        pts, cos, valid = _backproject(found.lmks_dense.astype(np.float64), out.tri_id[0].numpy(), cam, vn, fn, eye)
        samples.append(pts)
        facing.append(np.where(valid, cos, -1.0))
    if not samples:
        raise ModelFileError(
            f"MediaPipe found no face on renders of {source}: is it a FLAME-topology head model? "
            "(The landmark correspondence is derived from renders of the mean head.)"
        )
    return np.stack(samples), np.stack(facing)


def _combine(samples: np.ndarray, facing: np.ndarray, source: str):
    """Per landmark: the median of the views that see it frontally enough -> (points, views used, spread mm)."""
    combined = np.zeros((samples.shape[1], 3))
    used = np.zeros(samples.shape[1], np.int64)
    spread = np.zeros(samples.shape[1])
    for i in range(samples.shape[1]):
        ok = facing[:, i] >= _MIN_FACING
        if not ok.any():  # seen only obliquely: keep the most frontal view's point
            if facing[:, i].max() < 0:
                raise ModelFileError(f"landmark {i} was never seen on the renders of {source}.")
            ok = facing[:, i] == facing[:, i].max()
        pts = samples[ok, i]
        combined[i] = np.median(pts, axis=0)
        used[i] = ok.sum()
        spread[i] = 1000 * np.median(np.linalg.norm(pts - combined[i], axis=1))
    return combined, used, spread


def _paint_brows(verts: np.ndarray, on_head: np.ndarray, albedo: np.ndarray, first: np.ndarray,
                 front_z: float) -> np.ndarray:
    """Eyebrows along the brow ridge, over the extent where a first pass found them.

    On a head without brows MediaPipe puts them several millimetres too low. Eyebrows grow on the
    supraorbital ridge: per brow, the most forward surface point of each vertical strip above the first-pass
    brow is a ridge sample; a parabola through them is the brow's centre line, painted with a Gaussian
    profile (sd 3 mm) that fades out 4 mm beyond the brow's ends.
    """
    from flamefit.observe import topology

    weight = np.zeros(len(verts))
    front = on_head & (verts[:, 2] > front_z)
    for loop in (topology.RIGHT_BROW, topology.LEFT_BROW):
        pts = first[list(loop)]
        x0, x1 = pts[:, 0].min(), pts[:, 0].max()
        y_low = pts[:, 1].min() - 0.005
        band = front & (verts[:, 1] > y_low) & (verts[:, 1] < y_low + 0.035)
        xs, ys = [], []
        edges = np.linspace(x0, x1, 9)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            idx = np.flatnonzero(band & (verts[:, 0] >= lo) & (verts[:, 0] < hi))
            if len(idx) >= 3:
                xs.append(verts[idx, 0].mean())
                ys.append(verts[idx[np.argmax(verts[idx, 2])], 1])
        if len(xs) < 3:
            continue
        centre_y = np.polyval(np.polyfit(xs, ys, 2), verts[:, 0])
        taper = np.clip(1.0 - np.maximum(x0 - verts[:, 0], verts[:, 0] - x1) / _BROW_TAPER_M, 0.0, 1.0)
        w = np.exp(-0.5 * ((verts[:, 1] - centre_y) / _BROW_SD_M) ** 2) * taper * front
        weight = np.maximum(weight, w)
    return albedo * (1 - weight[:, None]) + np.asarray(_BROW_RGB) * weight[:, None]


def derive_correspondence(verts, faces, *, views=DEFAULT_VIEWS, detector=None, source: str = "the model",
                          texture=None, paint_brows: bool = True):
    """Compute the 478-point correspondence on one mesh (no cache): ``(face_idx (478,), bary (478,3), report)``.

    ``verts`` (V,3) metres in FLAME's frame (y up, +z out of the face), ``faces`` (F,3). ``texture``: optional
    ``(tex (Ht,Wt,3) RGB 0..1, vt (T,2), ft (F,3))`` to render instead of the synthetic albedo. With the synthetic
    albedo a quick first pass (3 views) locates the brows, which the main pass then sees painted (see
    :func:`_paint_brows`).
    """
    from flamefit.observe.landmarks import LandmarkDetector

    v = torch.as_tensor(verts, dtype=torch.float64).cpu()
    f = torch.as_tensor(faces).to(torch.int64).cpu()
    vn, fn = v.numpy(), f.numpy()
    albedo, on_head = _albedo(vn, fn)
    head_faces = np.flatnonzero(on_head[fn].all(axis=1))
    eye_faces = np.flatnonzero(~on_head[fn].all(axis=1))
    # look at the face: the middle of the head's front half
    front_z = float(np.median(vn[on_head, 2]))
    front = vn[on_head & (vn[:, 2] > front_z)]
    centre = np.array([front[:, 0].mean(), front[:, 1].mean(), vn[on_head, 2].mean()])
    report = CorrespondenceReport()
    own = detector is None
    det = detector or LandmarkDetector()
    try:
        if texture is None and paint_brows:
            first, _, _ = _combine(*_observe_views(v, f, albedo, None, centre, _FIRST_PASS_VIEWS, det, source),
                                   source)
            albedo = _paint_brows(vn, on_head, albedo, first, front_z)
        samples, facing = _observe_views(v, f, albedo, texture, centre, views, det, source, report)
    finally:
        if own:
            det.close()
    report.samples, report.facing = samples, facing
    combined, report.n_views_used, report.spread_mm = _combine(samples, facing, source)
    # a face-like pattern on something that is not a head gives points that disagree between views
    spread = float(np.median(report.spread_mm))
    if sum(report.detected) < len(report.detected) / 2 or spread > _MAX_MEDIAN_SPREAD_MM:
        raise ModelFileError(
            f"The landmarks MediaPipe found on renders of {source} do not form a consistent face "
            f"({sum(report.detected)}/{len(report.detected)} views, median disagreement between views "
            f"{spread:.1f} mm): no face on this mesh? Is it a FLAME-topology head model?"
        )
    face_idx = np.zeros(N_DENSE, np.int64)
    bary = np.zeros((N_DENSE, 3))
    face_pts = np.r_[0:468]
    fi, b = _closest_points(combined[face_pts], vn, fn[head_faces])
    face_idx[face_pts], bary[face_pts] = head_faces[fi], b
    iris_faces = eye_faces if len(eye_faces) else head_faces
    fi, b = _closest_points(combined[_IRIS], vn, fn[iris_faces])
    face_idx[_IRIS], bary[_IRIS] = iris_faces[fi], b
    return face_idx, bary.astype(np.float32), report
