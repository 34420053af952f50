"""Bad inputs for every public render op, run in a subprocess by test_hardening.py (a kernel reading out of
bounds would kill the process, not raise). One JSON line per case: {"case", "outcome", "message"}; outcome
"ValueError" for the expected clear error, "ok" for cases that must simply run (then "message" holds details).
"""

from __future__ import annotations

import json
import math
import sys

import torch

from flamefit.render import (
    antialias,
    camera_from_fov,
    interpolate_t,
    rasterize,
    render_mesh,
    sh_shading_packed,
    silhouette_pairs,
    texture_packed_t,
    vertex_normals,
    vertex_visibility,
)


def _grid(n=6, size=32.0, dtype=torch.float64):
    """A flat (n+1)^2-vertex grid of 2 n^2 triangles covering [2, size-2]^2 in pixels, depth 1."""
    t = torch.linspace(2.0, size - 2.0, n + 1, dtype=dtype)
    y, x = torch.meshgrid(t, t, indexing="ij")
    v = torch.stack([x.reshape(-1), y.reshape(-1), torch.ones((n + 1) ** 2, dtype=dtype)], -1)
    faces = []
    for r in range(n):
        for c in range(n):
            a = r * (n + 1) + c
            faces += [[a, a + 1, a + n + 2], [a, a + n + 2, a + n + 1]]
    return v[None], torch.tensor(faces, dtype=torch.int64)


V, F = _grid()
NV = V.shape[1]
FR = rasterize(V, F, 32, 32)


def case(name, fn, expect="ValueError"):
    try:
        detail = fn()
    except ValueError as e:
        outcome, msg = "ValueError", str(e)
    except Exception as e:  # noqa: BLE001 - reported, the test decides
        outcome, msg = type(e).__name__, str(e)
    else:
        outcome, msg = "ok", "" if detail is None else str(detail)
    print(json.dumps({"case": name, "expect": expect, "outcome": outcome, "message": msg}), flush=True)


def bad_faces(value):
    f = F.clone()
    f[3, 1] = value
    return f


def main() -> None:
    for backend in ("numba", "torch"):
        case(f"rasterize faces = V ({backend})", lambda b=backend: rasterize(V, bad_faces(NV), 32, 32, backend=b))
        case(f"rasterize faces < 0 ({backend})", lambda b=backend: rasterize(V, bad_faces(-1), 32, 32, backend=b))
        case(f"rasterize faces huge ({backend})",
             lambda b=backend: rasterize(V, bad_faces(2**40), 32, 32, backend=b))
    case("rasterize float faces", lambda: rasterize(V, F.double(), 32, 32))
    case("rasterize faces (F,2)", lambda: rasterize(V, F[:, :2], 32, 32))
    case("rasterize height 0", lambda: rasterize(V, F, 0, 32))
    case("rasterize width -5", lambda: rasterize(V, F, 32, -5))
    case("rasterize height 1e9", lambda: rasterize(V, F, 10**9, 32))
    case("rasterize height 2.5", lambda: rasterize(V, F, 2.5, 32))
    case("rasterize int verts", lambda: rasterize(V.long(), F, 32, 32))

    attr = torch.rand(NV, 3, dtype=torch.float64)
    case("interpolate faces beyond attr rows", lambda: interpolate_t(attr[:10], F, FR))
    case("interpolate faces of another mesh", lambda: interpolate_t(attr, F[:-2], FR))
    case("interpolate faces < 0", lambda: interpolate_t(attr, bad_faces(-3), FR))

    case("vertex_normals faces = V", lambda: vertex_normals(V, bad_faces(NV)))
    case("vertex_visibility faces = V", lambda: vertex_visibility(FR, bad_faces(NV), NV))

    normals = torch.nn.functional.normalize(torch.rand(3, FR.pix.shape[0], dtype=torch.float64), dim=0)
    sh = torch.rand(1, 9, 3, dtype=torch.float64)
    n_pix = FR.pix.shape[0]
    case("sh counts sum > N", lambda: sh_shading_packed(normals, sh, [n_pix + 100]))
    case("sh counts negative", lambda: sh_shading_packed(normals, sh, [-1, n_pix + 1]))
    case("sh normals (2,N)", lambda: sh_shading_packed(normals[:2], sh, [n_pix]))

    tex = torch.rand(2, 4, 5, 3, dtype=torch.float64)
    uv = torch.rand(2, 7, dtype=torch.float64)
    bidx = torch.tensor([0, 1, 0, 1, 0, 1, 1])
    case("texture uv (1,N) (a vt of shape (T,1))", lambda: texture_packed_t(tex, uv[:1], bidx))
    case("texture uv NaN", lambda: texture_packed_t(tex, uv.clone().index_fill_(1, torch.tensor([2]), math.nan),
                                                    bidx))
    case("texture uv inf", lambda: texture_packed_t(tex, uv.clone().index_fill_(1, torch.tensor([0]), math.inf),
                                                    bidx, mode="wrap"))
    case("texture uv 1e30", lambda: texture_packed_t(tex, uv * 1e30, bidx))
    case("texture batch_index = Bt", lambda: texture_packed_t(tex, uv, bidx.clone().fill_(2)))
    case("texture batch_index short", lambda: texture_packed_t(tex, uv, bidx[:3]))
    case("texture empty", lambda: texture_packed_t(tex[:, :0], uv, bidx))
    case("texture wrap uv 1e5 runs", lambda: texture_packed_t(tex, uv * 1e5, bidx, mode="wrap").isfinite().all()
         .item(), expect="ok")

    verts2 = torch.cat([V, V], 0)
    case("silhouette_pairs batch mismatch", lambda: silhouette_pairs(FR, verts2, F))
    case("silhouette_pairs faces = V", lambda: silhouette_pairs(FR, V, bad_faces(NV)))
    case("antialias color wrong size", lambda: antialias(torch.rand(1, 16, 16, 3, dtype=torch.float64), FR, V, F))
    case("unpack_t wrong N", lambda: FR.unpack_t(torch.rand(3, n_pix + 5, dtype=torch.float64)))

    # render_mesh with a texture-space layout of the wrong shape (used to abort the process)
    cam = camera_from_fov(math.radians(40), 32, 32, dtype=torch.float64)
    world = V.clone()
    world[..., 0] = (V[..., 0] - 16) / 40
    world[..., 1] = (V[..., 1] - 16) / 40
    world[..., 2] = 1.0
    tex1 = torch.rand(8, 8, 3, dtype=torch.float64)
    vt_bad = torch.rand(NV, 1, dtype=torch.float64)
    case("render_mesh vt (T,1)", lambda: render_mesh(world, F, cam, texture=(tex1, vt_bad, F)))
    vt = torch.rand(NV, 2, dtype=torch.float64)
    case("render_mesh ft = T", lambda: render_mesh(world, F, cam, texture=(tex1, vt[:NV - 1], F)))
    case("render_mesh ft fewer faces", lambda: render_mesh(world, F, cam, texture=(tex1, vt, F[:-1])))
    case("render_mesh faces = V", lambda: render_mesh(world, bad_faces(NV), cam))
    case("render_mesh albedo wrong V", lambda: render_mesh(world, F, cam, albedo=torch.rand(NV - 1, 3)))
    case("render_mesh textured runs",
         lambda: float(render_mesh(world, F, cam, texture=(tex1, vt, F), sh=torch.rand(1, 9)).alpha.mean()),
         expect="ok")

    # defined behaviour for non-finite and huge coordinates: runs, ids in range, both backends agree
    def huge(b):
        v = V.clone()
        v[0, 0, 0] = 1e30  # one vertex far right: its faces span the image to the right edge
        v[0, 9, 1] = -1e19  # beyond int64
        v[0, 20, :] = math.nan  # faces touching it cover nothing
        v[0, 30, 0] = -math.inf
        frags = rasterize(v, F, 32, 32, backend=b)
        tri = frags.tri_id
        assert int(tri.max()) < F.shape[0] and int(tri.min()) >= -1
        pairs = silhouette_pairs(frags, v, F, backend=b)
        assert all(int(p.max()) < 32 * 32 * NV for p in pairs if p.numel())
        return tri.flatten().tolist()

    results = {}
    for b in ("numba", "torch"):
        case(f"huge and NaN coordinates run ({b})", lambda b=b: results.__setitem__(b, huge(b)), expect="ok")
    case("huge coordinates: numba == torch ids",
         lambda: None if results.get("numba") == results.get("torch") and results.get("numba") else
         (_ for _ in ()).throw(AssertionError("ids differ")), expect="ok")
    print(json.dumps({"case": "__end__"}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
