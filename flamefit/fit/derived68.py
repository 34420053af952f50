"""The 68 iBUG model landmarks derived from the MediaPipe-478 correspondence (no RingNet embedding needed).

:func:`landmarks68_from_dense` returns a :class:`~flamefit.model.landmarks.Landmarks68`, the same class (and the
same 79 yaw bins) as RingNet/DECA's embedding, so the fitter treats both alike. Everything is computed on the
model's neutral template (zero shape, expression and pose):

* the 51 inner points (iBUG 17..67): flamefit's fixed 478 -> 68 map (:data:`flamefit.observe.mp68.MP_TO_68`)
  applied to the 478 correspondence points gives weighted means of surface points, which are not on the surface
  themselves; each becomes the closest point of the head's surface (the largest connected component);
* the 17 contour points (iBUG 0..16): annotators put them on the face's outline, which moves over the surface as
  the head turns, so they are not fixed surface points (nor are MediaPipe's oval points, whose positions on the
  mesh disagree between the views the correspondence is derived from). Seen from the front, rays leave a centre
  between the outer eye corners (at their height, on the head's mirror plane); each ray's plane (the ray and the
  viewing axis) cuts the head. Walking out along a cut from just outside the inner 51 points, the outline is the
  first place where the surface turns away to grazing (n . view = :data:`CONTOUR_LEVEL`), or bottoms out at a
  crease (cheek/ear, jaw/neck). This frontal outline, from :data:`CONTOUR_START_DEG` below the eye corners down
  round the chin and up the other side, is resampled in 8 equal steps a side (mirror-symmetric). For each of the
  79 yaw bins a contour point then moves along its own cut to where n . view(yaw) is again at that level: the far
  side forwards onto the silhouette (at most :data:`MAX_FORWARD_MM`), the near side back towards the ear (at most
  :data:`MAX_SHIFT_MM`, where RingNet's embedding also stops).

Deterministic; about a second, so it is cached next to the 478-point correspondence (which
:func:`flamefit.fit.correspondence.dense_correspondence` derives from renders and caches).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from flamefit._files import atomic_path
from flamefit.errors import ModelFileError
from flamefit.model.landmarks import Landmarks68, MeshLandmarks

ALGORITHM_VERSION = 1
N_YAW_BINS = 79  # RingNet/DECA: 0..39 degrees, then -1..-39 (see flamefit.model.landmarks.yaw_bin)
MAX_SHIFT_MM = 25.0  # how far a contour point may move back (towards the ear) along its cut
MAX_FORWARD_MM = 80.0  # ... and forwards (the far side of a turned head)
# The outline starts this far below the outer eye corners' level, seen from between them (iBUG's point 0 sits
# lower than MediaPipe's oval top) and is resampled in equal steps of image-plane length (annotators space the
# points evenly in the picture). Chosen on the 10 FFHQ images (jaw NME 0.150 -> 0.079, RingNet's 0.083, landmark
# stages only); independently, the contour also moved closer to RingNet's embedding (12.8 -> 8.9 mm over all bins).
CONTOUR_START_DEG = 10.0
CONTOUR_LEVEL = 0.15  # n . view at the outline: just short of grazing (perspective cameras see a little round it)
SOURCE = "derived from the MediaPipe-478 correspondence (flamefit)"


def bin_yaw_deg(b: int | np.ndarray) -> np.ndarray:
    """Head yaw (degrees) of RingNet's yaw bin(s) ``b``: the inverse of :func:`flamefit.model.landmarks.yaw_bin`."""
    b = np.asarray(b)
    return np.where(b < 40, b, 39 - b).astype(np.float64)


def view_direction(yaw_deg: np.ndarray) -> np.ndarray:
    """(N,3) unit vectors from the head towards the camera, in the model frame, for head yaws (degrees; + = the
    head turned to its left, so the camera sees more of the subject's right side, -x)."""
    a = np.radians(np.asarray(yaw_deg, dtype=np.float64))
    return np.stack([-np.sin(a), np.zeros_like(a), np.cos(a)], -1)


def landmarks68_from_dense(dense: MeshLandmarks, model, cache_dir: str | os.PathLike | None = None) -> Landmarks68:
    """68 model landmarks (RingNet's format: 51 static + 79 yaw bins x 17 contour points) from MediaPipe's 478.

    ``dense``: the 478-point correspondence (:func:`flamefit.fit.correspondence.dense_correspondence`);
    ``model``: the :class:`~flamefit.model.flame.FlameModel` it belongs to (its neutral template is used).
    Cached next to the correspondence (``cache_dir``, ``$FLAMEFIT_CACHE_DIR`` or the user cache dir), keyed by
    the template, the faces, the correspondence and :data:`ALGORITHM_VERSION`.
    """
    from flamefit.fit.correspondence import cache_directory
    from flamefit.observe.mp68 import MP_TO_68

    if len(dense) != MP_TO_68.shape[1]:
        raise ValueError(f"need the {MP_TO_68.shape[1]}-point MediaPipe correspondence, got {len(dense)} points")
    with torch.no_grad():
        verts = model().vertices[:1].detach().to("cpu", torch.float64)
    faces = model.faces.detach().cpu().to(torch.int64)
    if int(dense.face_idx.max()) >= faces.shape[0] or int(dense.face_idx.min()) < 0:
        raise ModelFileError(f"{getattr(model, 'source', 'the model')}: the 478-point correspondence indexes faces "
                             f"beyond the model's {faces.shape[0]}; it belongs to another mesh.")
    h = hashlib.sha256()
    for a in (verts.numpy(), faces.numpy(), dense.face_idx.numpy(), dense.bary.double().numpy()):
        h.update(np.ascontiguousarray(a).tobytes())
    path = cache_directory(cache_dir) / f"{h.hexdigest()}_landmarks68_v{ALGORITHM_VERSION}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = [z[k] for k in ("s_idx", "s_bary", "d_idx", "d_bary")]
            if arrays[2].shape == (N_YAW_BINS, 17) and int(max(arrays[0].max(), arrays[2].max())) < faces.shape[0]:
                return _with_mix(Landmarks68(*arrays, source=SOURCE), dense)
        except (OSError, KeyError, ValueError):
            pass  # damaged: recompute
    lmk = _derive(dense, verts, faces)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # atomic: concurrent runs never read half a file
            np.savez(fh, s_idx=lmk.static.face_idx.numpy(), s_bary=lmk.static.bary.numpy(),
                     d_idx=lmk.dynamic_face_idx.numpy(), d_bary=lmk.dynamic_bary.numpy())
    except OSError:  # an unwritable cache only costs time
        pass
    return lmk


def _derive(dense: MeshLandmarks, verts: torch.Tensor, faces: torch.Tensor) -> Landmarks68:
    from flamefit.observe.mp68 import MP_TO_68

    P = verts[0].numpy()
    F = faces.numpy()
    dense_pts = dense.project(verts, faces)[0].numpy()  # (478,3)
    means = MP_TO_68 @ dense_pts  # (68,3), not on the surface
    head_faces = _head_faces(F, len(P))
    s_idx, s_bary = _closest_on(means[17:], P, F, head_faces)
    inner = (P[F[s_idx]] * s_bary[..., None]).sum(1)
    d_idx, d_bary = contour_bins(P, F, head_faces, inner)
    return _with_mix(Landmarks68(s_idx, s_bary.astype(np.float32), d_idx, d_bary.astype(np.float32), source=SOURCE),
                     dense)


def _with_mix(lmk: Landmarks68, dense: MeshLandmarks) -> Landmarks68:
    """The 51 inner points as the detector's own 478 -> 68 map of the model's 478 points (see
    :class:`~flamefit.model.landmarks.Landmarks68`); their surface points stay for display."""
    from flamefit.observe.mp68 import MP_TO_68

    # only the 478 points the map uses (71 of them): the landmark stages and the tracker evaluate these per
    # residual call, and a restricted mesh then keeps only their faces
    mix = MP_TO_68[17:]
    used = np.flatnonzero(np.abs(mix).sum(0) > 0)
    points = MeshLandmarks(dense.face_idx[torch.as_tensor(used)], dense.bary[torch.as_tensor(used)])
    return Landmarks68(lmk.static.face_idx, lmk.static.bary, lmk.dynamic_face_idx, lmk.dynamic_bary,
                       source=lmk.source, static_mix=mix[:, used], mix_points=points)


def _head_faces(F: np.ndarray, n_vertices: int) -> np.ndarray:
    """Indices of the faces of the largest connected component (the head; not the eyeballs)."""
    from flamefit.fit.eyes import face_components

    labels = face_components(F, n_vertices)
    ids, counts = np.unique(labels, return_counts=True)
    return np.flatnonzero(labels == ids[np.argmax(counts)])


def _closest_on(points: np.ndarray, P: np.ndarray, F: np.ndarray, face_ids: np.ndarray):
    """Closest surface point among ``face_ids`` for each point -> (face index (N,), barycentrics (N,3))."""
    from flamefit.fit.correspondence import _closest_points

    fi, bary = _closest_points(points, P, F[face_ids])
    return face_ids[fi], bary


def _vertex_normals(P: np.ndarray, F: np.ndarray) -> np.ndarray:
    fn = np.cross(P[F[:, 1]] - P[F[:, 0]], P[F[:, 2]] - P[F[:, 0]])  # area-weighted
    vn = np.zeros_like(P)
    for k in range(3):
        np.add.at(vn, F[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-30)


def contour_bins(P: np.ndarray, F: np.ndarray, head_faces: np.ndarray, inner_pts: np.ndarray,
                 level: float = CONTOUR_LEVEL, max_back_mm: float = MAX_SHIFT_MM,
                 max_forward_mm: float = MAX_FORWARD_MM, start_deg: float = CONTOUR_START_DEG,
                 image_arc: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The 17 contour points for each of the 79 yaw bins (see the module docstring) -> (face_idx (79,17),
    bary (79,17,3)). ``inner_pts`` (51,3): the static inner points (iBUG 17..67) on ``P``."""
    normals = _vertex_normals(P, F)
    corners = inner_pts[[36 - 17, 45 - 17]]  # outer eye corners
    mid_x = float(np.median(P[np.unique(F[head_faces]), 0]))  # the head's mirror plane
    centre = np.array([mid_x, corners[:, 1].mean()])  # in the frontal image plane (x, y)
    mirrored = inner_pts[:, :2] * np.array([-1.0, 1.0]) + np.array([2 * mid_x, 0.0])
    hull = _convex_hull_2d(np.concatenate([inner_pts[:, :2], mirrored]))  # symmetric: both sides alike
    z_axis = np.array([0.0, 0.0, 1.0])

    def frontal(gamma_deg):
        cut = _ray_cut(P, F, head_faces, normals, centre, hull, gamma_deg)
        if cut is None:
            return None, None
        return cut, cut.outline(cut.normal @ z_axis, level)

    # the outline seen from the front, from just below the outer eye corners on the subject's right (-x, image
    # left) down round the chin to the same height on the left; resampled in 8 equal steps a side
    gammas, pts = [], []
    for gamma in np.arange(180.0 + start_deg, 360.0 - start_deg + 1e-9, 2.0):
        cut, hit = frontal(gamma)
        if hit is not None:
            gammas.append(gamma)
            pts.append(cut.point(*hit))
    if len(gammas) < 20:
        raise ModelFileError("could not find the jaw outline on the model's mesh (is it a FLAME-topology head?)")
    gammas, pts = np.asarray(gammas), np.asarray(pts)
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts[:, :2] if image_arc else pts, axis=0), axis=1))]
    chin = int(np.argmin(pts[:, 1]))
    targets = np.r_[np.linspace(0, arc[chin], 9), np.linspace(arc[chin], arc[-1], 9)[1:]]
    gamma_i = np.interp(targets, arc, gammas)
    gamma_i = 0.5 * (gamma_i + (540.0 - gamma_i[::-1]))  # mirror-symmetric: point 16 - i mirrors point i
    views = view_direction(bin_yaw_deg(np.arange(N_YAW_BINS)))  # (79,3)
    out_idx = np.zeros((N_YAW_BINS, 17), np.int64)
    out_bary = np.zeros((N_YAW_BINS, 17, 3))
    for i, gamma in enumerate(gamma_i):
        cut, hit = frontal(gamma)
        if hit is None:
            raise ModelFileError(f"no jaw outline at contour point {i} on the model's mesh")
        s0 = cut.s_at(*hit)
        n0 = cut.normal[hit[0]] * (1 - hit[1]) + cut.normal[min(hit[0] + 1, len(cut.s) - 1)] * hit[1]
        for b in range(N_YAW_BINS):
            if b == 0:
                k, t = hit
            elif n0 @ views[b] < n0 @ z_axis:  # turned away (the far side): forwards, onto the silhouette
                k, t = cut.crossing(cut.normal @ views[b] - level, max(0.0, s0 - max_forward_mm * 1e-3), s0,
                                    near=s0)
            else:  # turned towards the camera (the near side): backwards, at most max_back_mm
                k, t = cut.crossing(cut.normal @ views[b] - level, s0, s0 + max_back_mm * 1e-3, near=s0)
            out_idx[b, i], out_bary[b, i] = cut.embed(k, t)
    return out_idx, out_bary


def _convex_hull_2d(pts: np.ndarray) -> np.ndarray:
    """Counter-clockwise hull vertices (H,2) of 2D points (monotone chain)."""
    p = sorted(map(tuple, np.asarray(pts, dtype=np.float64)))

    def half(seq):
        out = []
        for q in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (q[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(q)
        return out

    lower, upper = half(p), half(p[::-1])
    return np.asarray(lower[:-1] + upper[:-1])


def _ray_exit(hull: np.ndarray, centre: np.ndarray, direction: np.ndarray) -> float:
    """Distance from ``centre`` (inside the convex polygon ``hull``) along ``direction`` to its edge."""
    best = np.inf
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        e = b - a
        den = direction[0] * e[1] - direction[1] * e[0]
        if abs(den) < 1e-15:
            continue
        w = a - centre
        t = (w[0] * e[1] - w[1] * e[0]) / den
        u = (w[0] * direction[1] - w[1] * direction[0]) / den
        if t >= 0 and -1e-9 <= u <= 1 + 1e-9:
            best = min(best, t)
    return float(best) if np.isfinite(best) else 0.0


def _front_hit(P: np.ndarray, H: np.ndarray, xy: np.ndarray):
    """The front-most (largest z) point of the triangles ``H`` on the line through ``xy`` along z, as
    (row of H, barycentrics), or None."""
    a, b, c = P[H[:, 0]], P[H[:, 1]], P[H[:, 2]]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    ok = np.abs(den) > 1e-18
    den = np.where(ok, den, 1.0)
    l1 = ((b[:, 1] - c[:, 1]) * (xy[0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (xy[1] - c[:, 1])) / den
    l2 = ((c[:, 1] - a[:, 1]) * (xy[0] - c[:, 0]) + (a[:, 0] - c[:, 0]) * (xy[1] - c[:, 1])) / den
    l3 = 1 - l1 - l2
    inside = ok & (l1 >= 0) & (l2 >= 0) & (l3 >= 0)
    if not inside.any():
        return None
    z = l1 * a[:, 2] + l2 * b[:, 2] + l3 * c[:, 2]
    k = int(np.argmax(np.where(inside, z, -np.inf)))
    return k, np.array([l1[k], l2[k], l3[k]])


_CREASE_FACING = 0.25  # a local minimum of n . view below this counts as the outline (a crease, not grazing)
_CONTOUR_MARGIN_M = 0.003  # start the outline search this far outside the inner landmarks' hull


def _ray_cut(P, F, head_faces, normals, centre, hull, gamma_deg: float):
    """The cut of the head by the plane through the frontal image ray from ``centre`` at angle ``gamma_deg``
    (x right, y up) and the viewing axis z, starting just outside the inner landmarks and oriented outwards."""
    g = np.radians(gamma_deg)
    r = np.array([np.cos(g), np.sin(g)])
    start = centre + (_ray_exit(hull, centre, r) + _CONTOUR_MARGIN_M) * r
    H = F[head_faces]
    hit = _front_hit(P, H, start)
    if hit is None:
        return None
    row, bary = hit
    plane_normal = np.array([np.sin(g), -np.cos(g), 0.0])
    try:
        cut = _cut_polyline(P, F, head_faces, normals, (P[H[row]] * bary[:, None]).sum(0), plane_normal,
                            int(head_faces[row]), bary)
    except ModelFileError:
        return None
    return cut.outwards(np.array([r[0], r[1], 0.0]))


class _Cut:
    """A polyline where a plane cuts the mesh: nodes on mesh edges (plus the origin point itself), in order;
    ``s``: signed arc length from the origin."""

    def __init__(self, pos, normal, edge, edge_t, face, origin: int, origin_embedding, face_corners):
        self.pos, self.normal, self.edge, self.edge_t, self.face = pos, normal, edge, edge_t, face
        self.origin = origin
        self.origin_embedding = origin_embedding
        self.face_corners = face_corners
        seg = np.linalg.norm(np.diff(pos, axis=0), axis=1)
        s = np.r_[0.0, np.cumsum(seg)]
        self.s = s - s[origin]

    def outwards(self, direction: np.ndarray) -> _Cut:
        """This cut, ordered so that it leaves the origin along ``direction`` and keeping only that half."""
        o = self.origin
        ahead = self.pos[o + 1] - self.pos[o] if o + 1 < len(self.pos) else self.pos[o] - self.pos[o - 1]
        if ahead @ direction >= 0:
            sl = slice(o, None)
            return _Cut(self.pos[sl], self.normal[sl], self.edge[sl], self.edge_t[sl], self.face[o:], 0,
                        self.origin_embedding, self.face_corners)
        sl = slice(o, None, -1)
        face = self.face[:o][::-1]
        return _Cut(self.pos[sl], self.normal[sl], self.edge[sl], self.edge_t[sl], face, 0,
                    self.origin_embedding, self.face_corners)

    def crossing(self, g: np.ndarray, lo: float, hi: float, near: float = 0.0,
                 first: bool = False) -> tuple[int, float] | None:
        """A zero of ``g`` (per node, linear between nodes) with arc length in [lo, hi]: the first one, or the
        one nearest ``near``; without one, the node in range where |g| is smallest (None with ``first``)
        -> (node k, fraction t towards node k+1)."""
        reach = (self.s >= lo - 1e-12) & (self.s <= hi + 1e-12)
        k = np.flatnonzero(reach[:-1] & reach[1:] & ((g[:-1] > 0) != (g[1:] > 0)))
        if len(k):
            t = g[k] / (g[k] - g[k + 1])
            at = self.s[k] + t * (self.s[k + 1] - self.s[k])
            j = 0 if first else int(np.argmin(np.abs(at - near)))
            return int(k[j]), float(t[j])
        if first:
            return None
        cand = np.flatnonzero(reach)
        if len(cand) == 0:
            cand = np.array([int(np.argmin(np.abs(self.s - near)))])
        return int(cand[np.argmin(np.abs(g[cand]))]), 0.0

    def outline(self, facing: np.ndarray, level: float, crease: float = _CREASE_FACING,
                window_m: float = 0.005) -> tuple[int, float] | None:
        """Walking out from the origin, the first place where ``facing`` (n . view per node) drops to ``level``,
        or, if earlier, bottoms out below ``crease`` (a crease such as jaw/neck or cheek/ear that never reaches
        grazing): -> (node k, fraction t) or None."""
        hit = self.crossing(facing - level, 0.0, self.s[-1], first=True)
        s_hit = self.s_at(*hit) if hit is not None else np.inf
        for k in range(1, len(facing) - 1):
            if self.s[k] >= s_hit:
                break
            near = np.abs(self.s - self.s[k]) <= window_m
            if facing[k] < crease and facing[k] <= facing[near].min():
                return k, 0.0
        return hit

    def s_at(self, k: int, t: float) -> float:
        return float(self.s[k] + t * (self.s[min(k + 1, len(self.s) - 1)] - self.s[k]))

    def point(self, k: int, t: float) -> np.ndarray:
        return self.pos[k] + t * (self.pos[min(k + 1, len(self.pos) - 1)] - self.pos[k])

    def embed(self, k: int, t: float) -> tuple[int, np.ndarray]:
        """(face index, barycentrics) of the point a fraction t from node k to node k+1 (inside their face)."""
        if t <= 1e-9 and k == self.origin:
            return self.origin_embedding
        if t <= 1e-9 or k + 1 >= len(self.pos):
            t, k2 = 0.0, k
        else:
            k2 = k + 1
        face = self.face[k]  # the face the segment k -> k+1 runs through
        corners = self.face_corners[face]
        bary = np.zeros(3)
        for node, w in ((k, 1 - t), (k2, t)):
            if node == self.origin:
                o_face, o_bary = self.origin_embedding
                if o_face != face:
                    raise AssertionError("contour origin outside its segment's face")
                bary += w * o_bary
                continue
            a, b = self.edge[node]
            ta = self.edge_t[node]
            bary[list(corners).index(a)] += w * (1 - ta)
            bary[list(corners).index(b)] += w * ta
        return face, bary


def _cut_polyline(P, F, head_faces, normals, origin, plane_normal, origin_face: int, origin_bary) -> _Cut:
    """Cut the head (faces ``head_faces``) by the plane through ``origin`` with normal ``plane_normal``; keep the
    piece through the origin's face, as an ordered polyline with the origin inserted as a node."""
    H = F[head_faces]
    dist = (P - origin) @ plane_normal
    side = dist >= 0
    crossed = side[H] != side[H[:, [1, 2, 0]]]  # (Fh,3): edge k runs corner k -> k+1
    faces_cut = np.flatnonzero(crossed.sum(1) == 2)
    edge_node: dict[tuple[int, int], int] = {}
    nodes_edge, face_nodes = [], {}
    for fh in faces_cut.tolist():
        ids = []
        for k in np.flatnonzero(crossed[fh]).tolist():
            a, b = int(H[fh, k]), int(H[fh, (k + 1) % 3])
            key = (min(a, b), max(a, b))
            if key not in edge_node:
                edge_node[key] = len(nodes_edge)
                nodes_edge.append(key)
            ids.append(edge_node[key])
        face_nodes[int(head_faces[fh])] = ids
    if origin_face not in face_nodes:
        raise ModelFileError("a contour point's own triangle is not cut by its plane: degenerate mesh?")
    # walk from the origin's face both ways along the cut (node -> the two faces through it)
    node_faces: dict[int, list[int]] = {}
    for f, (u, v) in face_nodes.items():
        node_faces.setdefault(u, []).append(f)
        node_faces.setdefault(v, []).append(f)

    def walk(node: int, came_from_face: int, limit: int = 2000):
        seq_nodes, seq_faces = [node], []
        f = came_from_face
        for _ in range(limit):
            nxt = [g for g in node_faces[node] if g != f]
            if not nxt or nxt[0] == origin_face:  # the mesh's edge, or round the head back to the start
                break
            f = nxt[0]
            u, v = face_nodes[f]
            node = v if u == node else u
            seq_faces.append(f)
            seq_nodes.append(node)
            if node == seq_nodes[0]:
                break
        return seq_nodes, seq_faces

    u, v = face_nodes[origin_face]
    fwd_nodes, fwd_faces = walk(v, origin_face)
    back_nodes, back_faces = walk(u, origin_face)
    # ordered: back ... u, origin, v ... fwd ; face k is the face between node k and k+1
    order = back_nodes[::-1] + [-1] + fwd_nodes
    seg_faces = back_faces[::-1] + [origin_face, origin_face] + fwd_faces
    ab = np.array([nodes_edge[n] if n >= 0 else (0, 0) for n in order])
    t = np.where(np.asarray(order) >= 0, dist[ab[:, 0]] / np.where(dist[ab[:, 0]] != dist[ab[:, 1]],
                                                                      dist[ab[:, 0]] - dist[ab[:, 1]], 1.0), 0.0)
    pos = P[ab[:, 0]] * (1 - t[:, None]) + P[ab[:, 1]] * t[:, None]
    nrm = normals[ab[:, 0]] * (1 - t[:, None]) + normals[ab[:, 1]] * t[:, None]
    o = len(back_nodes)
    corners = F[origin_face]
    pos[o] = (P[corners] * origin_bary[:, None]).sum(0)
    nrm[o] = (normals[corners] * origin_bary[:, None]).sum(0)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-30)
    return _Cut(pos, nrm, ab, t, np.asarray(seg_faces), o, (origin_face, np.asarray(origin_bary, np.float64)),
                {f: F[f].tolist() for f in set(seg_faces)})
