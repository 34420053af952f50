"""`flamefit bench render`: renderer forward+backward time on a FLAME-topology mesh.

Workload per step (what a photometric fitting iteration does): perspective camera, the head covering about
half of the frame, per-vertex albedo, 9x3 SH lighting, anti-aliased silhouettes, then an L1 photometric loss
plus a squared silhouette loss, backward to the vertex positions, albedo and lighting. Resolutions 224, 256,
512; batch 1 and 8 (``fwd_bwd_ms`` is the median wall time for the whole batch; ``per_image_ms`` divides it;
``fwd_bwd_cpu_ms`` is the process CPU time, all threads, which stays meaningful on a busy shared machine).
The mesh is a FLAME model file (``--flame``, or the one flamefit finds), else the development stand-in
(../shared/assets), else a synthetic sphere of FLAME's size. When pytorch3d is importable, the same workload
runs through its rasterizer in the same process for comparison.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import click


def _find_mesh(model_path: str | None):
    """(verts (V,3) float32, faces (F,3) int64, description)."""
    import numpy as np
    import torch

    candidates = []
    if model_path:
        candidates.append(Path(model_path))
    else:
        from flamefit.assets import resolve_asset

        try:
            found = resolve_asset("flame", None, required=False)
        except Exception:  # a misconfigured path must not stop a benchmark that can run without it
            found = None
        if found is not None:
            candidates.append(found)
        shared = os.environ.get("FLAMEFIT_SHARED_ASSETS")
        root = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared" / "assets"
        candidates.append(root / "flame_standin" / "standin_flame2023.pkl")
    for path in candidates:
        if path.exists():
            from flamefit.model.flame_file import read_flame_file

            data = read_flame_file(path)
            return (torch.tensor(data.v_template, dtype=torch.float32), torch.tensor(data.faces, dtype=torch.int64),
                    str(path))
    if model_path:
        from flamefit.errors import ModelFileError

        raise ModelFileError(f"{model_path}: FLAME model file not found. Check the path.")
    # synthetic: a UV sphere with about FLAME's vertex and face counts, head-sized
    n_lat, n_lon = 51, 100
    lat = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    ring = np.stack([np.outer(np.sin(lat), np.cos(lon)), np.outer(np.cos(lat), np.ones_like(lon)),
                     np.outer(np.sin(lat), np.sin(lon))], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * np.array([0.09, 0.12, 0.1])
    faces = []
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b = 1 + i * n_lon + j, 1 + i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [(a, c, b), (b, c, d)]
    last = 1 + (n_lat - 2) * n_lon
    for j in range(n_lon):
        faces += [(0, 1 + j, 1 + (j + 1) % n_lon), (len(verts) - 1, last + (j + 1) % n_lon, last + j)]
    return (torch.tensor(verts, dtype=torch.float32), torch.tensor(faces, dtype=torch.int64),
            "synthetic sphere (no FLAME model or stand-in found)")


def _scene(verts, batch: int, size: int, device: str):
    """Batch of slightly different poses, camera framing the head at about half coverage."""
    import torch

    from flamefit.render import camera_from_fov, look_at

    g = torch.Generator().manual_seed(0)
    yaw = 0.25 * (torch.rand(batch, generator=g) * 2 - 1) * (batch > 1)
    c, s = torch.cos(yaw), torch.sin(yaw)
    z, o = torch.zeros_like(yaw), torch.ones_like(yaw)
    Ry = torch.stack([torch.stack([c, z, s], -1), torch.stack([z, o, z], -1), torch.stack([-s, z, c], -1)], -2)
    centre = 0.5 * (verts.amin(0) + verts.amax(0))
    v = torch.matmul(verts - centre, Ry.transpose(1, 2))
    dist = _distance_for_coverage(verts - centre, 0.55)  # the hull overestimates the mesh a little
    R, t = look_at(torch.tensor([[0.0, 0.0, dist]]), torch.zeros(1, 3))
    cam = camera_from_fov(math.radians(30), size, size, R=R.expand(batch, 3, 3).contiguous(),
                          t=t.expand(batch, 3).contiguous())
    return v.to(device), cam.to(device)


def _distance_for_coverage(verts, target: float, faces=None) -> float:
    """Camera distance (30 degree fov, looking down -z at the origin) at which the mesh covers ``target`` of
    the frame; bisection on a 128x128 mask of the vertices' convex outline, which is close enough here."""
    import torch

    from flamefit.render import camera_from_fov, look_at

    lo, hi = 0.05, 50.0
    for _ in range(30):
        mid = math.sqrt(lo * hi)
        R, t = look_at(torch.tensor([[0.0, 0.0, mid]]), torch.zeros(1, 3))
        p = camera_from_fov(math.radians(30), 128, 128, R=R, t=t).project(verts[None])[0, :, :2]
        cov = _hull_coverage(p, 128)
        lo, hi = (mid, hi) if cov > target else (lo, mid)
    return math.sqrt(lo * hi)


def _hull_coverage(points, size: int) -> float:
    import numpy as np
    from scipy.spatial import ConvexHull, QhullError

    pts = points.detach().numpy().astype(np.float64)
    try:
        hull = ConvexHull(pts)
    except QhullError:
        return 0.0
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    grid = np.stack([xs.ravel(), ys.ravel()], 1)
    inside = np.all(grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 0, axis=1)
    return float(inside.mean())


def _inputs(verts, device: str):
    """The optimised tensors both workloads share: per-vertex albedo, SH 9x3 light, vertices (seeded)."""
    import torch

    B, V, _ = verts.shape
    g = torch.Generator().manual_seed(1)
    albedo = (0.4 + 0.3 * torch.rand(B, V, 3, generator=g)).to(device).requires_grad_(True)
    sh = torch.zeros(B, 9, 3)
    sh[:, 0], sh[:, 3] = 3.0, -1.0
    sh = sh.to(device).requires_grad_(True)
    return g, albedo, sh, verts.clone().requires_grad_(True)


def _workload(verts, faces, cam, device: str, backend: str):
    import torch

    from flamefit.render import render_mesh

    _, albedo, sh, v = _inputs(verts, device)
    with torch.no_grad():
        ref = render_mesh(verts * 1.02, faces, cam, albedo=albedo * 0.9, sh=sh, backend=backend)
        target_rgb, target_alpha = ref.rgb.clone(), ref.alpha.clone()
        coverage = float(ref.mask.float().mean())

    def forward():
        out = render_mesh(v, faces, cam, albedo=albedo, sh=sh, backend=backend)
        return (out.rgb - target_rgb).abs().mean() + (out.alpha - target_alpha).square().mean()

    def fwd():
        with torch.no_grad():
            forward()

    def fwd_bwd():
        v.grad = albedo.grad = sh.grad = None
        forward().backward()

    return fwd, fwd_bwd, coverage


def _pytorch3d_workload(verts, faces, cam, device: str):
    """The same workload with pytorch3d's rasterizer (hard, 1 face per pixel) and SH shading."""
    import torch
    from pytorch3d.renderer import PerspectiveCameras
    from pytorch3d.renderer.mesh.rasterizer import MeshRasterizer, RasterizationSettings
    from pytorch3d.renderer.mesh.utils import interpolate_face_attributes
    from pytorch3d.structures import Meshes

    from flamefit.render import sh_shading, vertex_normals

    B, V, _ = verts.shape
    H, W = cam.height, cam.width
    # pytorch3d's screen convention: +x left, +y up; flip the OpenCV camera's x and y
    flip = torch.tensor([-1.0, -1.0, 1.0], device=device)
    R = (cam.R * flip[:, None]).transpose(1, 2)  # pytorch3d uses row vectors: X_cam = X R + T
    T = cam.t * flip
    K = cam.K
    p3_cam = PerspectiveCameras(focal_length=K[:, [0, 1], [0, 1]], principal_point=K[:, :2, 2], R=R, T=T,
                                in_ndc=False, image_size=torch.tensor([[H, W]] * B), device=device)
    raster = MeshRasterizer(cameras=p3_cam, raster_settings=RasterizationSettings(
        image_size=(H, W), blur_radius=0.0, faces_per_pixel=1, bin_size=0))
    g, albedo, sh, v = _inputs(verts, device)
    target = torch.rand(B, H, W, 3, generator=g).to(device)

    def forward():
        meshes = Meshes(verts=list(v), faces=[faces] * B)
        frags = raster(meshes)
        n = vertex_normals(torch.matmul(v, cam.R.transpose(1, 2)), faces)
        attrs = torch.cat([albedo, n], -1).reshape(B * V, 6)[meshes.faces_packed()]
        pix = interpolate_face_attributes(frags.pix_to_face, frags.bary_coords, attrs)[..., 0, :]
        rgb = pix[..., :3] * sh_shading(torch.nn.functional.normalize(pix[..., 3:], dim=-1), sh)
        return (rgb - target).abs().mean()

    def fwd_bwd():
        v.grad = albedo.grad = sh.grad = None
        forward().backward()

    return fwd_bwd


def _cpu_ms(fn, repeats: int) -> float:
    """Median process CPU time (all threads) of ``fn`` in ms: unlike wall time, it does not grow when other
    programs take the cores (on a shared machine), so it tells what the work itself costs."""
    import time

    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000.0)
    times.sort()
    return times[len(times) // 2]


def run(model_path=None, resolutions=(224, 256, 512), batches=(1, 8), device: str = "cpu", repeats: int = 20,
        backend: str = "auto", threads: int | None = None, compare_pytorch3d: bool = True) -> dict:
    import torch

    from flamefit.bench.common import environment, time_ms
    from flamefit.render import rasterize
    from flamefit.render._backend import numba_available as _numba_available

    if threads:
        torch.set_num_threads(threads)
    verts, faces, source = _find_mesh(model_path)
    faces = faces.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    results = []
    for size in resolutions:
        for batch in batches:
            v, cam = _scene(verts, batch, size, device)
            fwd, fwd_bwd, coverage = _workload(v, faces, cam, device, backend)
            vis = time_ms(lambda v=v, cam=cam, size=size: rasterize(
                cam.project(v), faces, size, size, perspective_correct=True, backend=backend), repeats=repeats,
                sync=sync)
            f = time_ms(fwd, repeats=repeats, sync=sync)
            fb = time_ms(fwd_bwd, repeats=repeats, sync=sync)
            fb_cpu = _cpu_ms(fwd_bwd, repeats) if device == "cpu" else None
            row = {"resolution": size, "batch": batch, "coverage": round(coverage, 3),
                   "rasterize_ms": vis["median_ms"], "fwd_ms": f["median_ms"], "fwd_bwd_ms": fb["median_ms"],
                   "fwd_bwd_min_ms": fb["min_ms"], "fwd_bwd_cpu_ms": fb_cpu, "per_image_ms": fb["median_ms"] / batch}
            if compare_pytorch3d:
                try:
                    p3 = _pytorch3d_workload(v, faces, cam, device)
                except ImportError:
                    compare_pytorch3d = False
                else:
                    p3_reps = max(2, repeats // 5)
                    row["pytorch3d_fwd_bwd_ms"] = time_ms(p3, repeats=p3_reps, warmup=1, sync=sync)["median_ms"]
                    row["speedup_vs_pytorch3d"] = row["pytorch3d_fwd_bwd_ms"] / row["fwd_bwd_ms"]
            results.append(row)
    env = environment()
    env["numba"] = _numba_available() and backend in ("auto", "numba") and device == "cpu"
    if hasattr(os, "getloadavg"):  # other programs on the machine make wall times meaningless; say so
        env["load_average_1min"] = round(os.getloadavg()[0], 2)
    return {"benchmark": "render", "mesh": source, "vertices": int(verts.shape[0]), "faces": int(faces.shape[0]),
            "device": device, "dtype": "float32", "backend": backend, "repeats": repeats,
            "workload": "render_mesh (per-vertex albedo, SH 9x3, antialias) + L1 photometric + silhouette "
                        "loss, backward to vertices/albedo/SH",
            "results": results, "environment": env}


@click.command(name="render")
@click.option("--flame", "model_path", type=click.Path(dir_okay=False), help="FLAME model file (for the mesh).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--resolutions", default="224,256,512", show_default=True, help="Comma-separated image sizes.")
@click.option("--batches", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option("--repeats", default=20, show_default=True, help="Timed repeats per case (median reported).")
@click.option("--backend", type=click.Choice(["auto", "numba", "torch"]), default="auto", show_default=True,
              help="Non-differentiable passes: numba (CPU) or pure torch.")
@click.option("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(model_path, device, resolutions, batches, repeats, backend, threads, as_json):
    """Renderer forward+backward time (float32) at several resolutions and batch sizes."""
    from flamefit.bench.common import emit

    report = run(model_path, resolutions=tuple(int(r) for r in resolutions.split(",")),
                 batches=tuple(int(b) for b in batches.split(",")), device=device, repeats=repeats,
                 backend=backend, threads=threads)
    columns = ["resolution", "batch", "coverage", "rasterize_ms", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_min_ms",
               "fwd_bwd_cpu_ms", "per_image_ms"]
    if report["results"] and "pytorch3d_fwd_bwd_ms" in report["results"][0]:
        columns += ["pytorch3d_fwd_bwd_ms", "speedup_vs_pytorch3d"]
    emit(report, report["results"], columns,
         f"Renderer forward+backward ({report['device']}, float32, {report['vertices']} vertices, "
         f"{report['faces']} faces)", as_json)
