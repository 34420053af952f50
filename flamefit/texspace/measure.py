"""Measurements for texture-space building that need no fitting: inpainting (network vs classical fills on held-out
strokes) and the recovery of a known space through render -> unwrap -> complete -> PCA with the true geometry,
camera and light standing in for a fit. The numbers the issue asks for; ``flamefit bench texspace`` can wrap these.

    python -m flamefit.texspace.measure --model standin_flame2023.pkl --texture standin_texture.npz --json out.json

Everything is seeded (local generators); times are wall-clock seconds at ``torch.get_num_threads()`` threads.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from flamefit.model.lbs import axis_angle_to_matrix
from flamefit.model.texture_space import load_texture_space, resize_map
from flamefit.render import camera_from_fov, look_at, render_mesh
from flamefit.render.bake import bake_uv, rasterize_uv
from flamefit.texspace import fills
from flamefit.texspace.inpaint import InpaintConfig, inpaint_maps, train_inpainter
from flamefit.texspace.pca import fit_pca
from flamefit.texspace.synthetic import make_synthetic_space, reconstruction_rms
from flamefit.texspace.unwrap import unwrap_albedo


def random_views(n: int, gen: torch.Generator, *, yaw_deg: float = 45.0, pitch_deg: float = 20.0,
                 dtype=torch.float64) -> torch.Tensor:
    """(n,3,3) head rotations: yaw uniform in +-yaw_deg, pitch in +-pitch_deg, small roll."""
    r = torch.rand(n, 3, generator=gen, dtype=dtype) * 2 - 1
    aa = torch.stack([r[:, 1] * math.radians(pitch_deg), r[:, 0] * math.radians(yaw_deg),
                      r[:, 2] * math.radians(5.0)], -1)
    return axis_angle_to_matrix(aa)


def random_lights(n: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """(n,9,3) SH lights: a bright ambient term, a random directional part, mild colour."""
    sh = torch.randn(n, 9, 3, generator=gen, dtype=dtype) * 0.08
    sh[:, 0] = 2.9 + 0.3 * torch.randn(n, 1, generator=gen, dtype=dtype) + 0.1 * torch.randn(n, 3, generator=gen,
                                                                                           dtype=dtype)
    d = torch.randn(n, 3, 1, generator=gen, dtype=dtype) * 0.35
    sh[:, 1:4] = d.expand(n, 3, 3)
    sh[:, 3] -= 0.3  # more light from the camera side (normals facing the camera have z < 0)
    return sh


def _scene_camera(n: int, image_px: int, dtype=torch.float64):
    R, t = look_at(torch.tensor([[0.0, 0.0, 0.5]], dtype=dtype), torch.zeros(1, 3, dtype=dtype))
    return camera_from_fov(0.5, image_px, image_px, R=R.expand(n, 3, 3), t=t.expand(n, 3))


def visibility_maps(verts: torch.Tensor, faces, vt, ft, rotations: torch.Tensor, size: int, image_px: int = 256,
                    batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Visible texels (N,H,W) bool and weights for the template seen under each rotation (camera 0.5 m away)."""
    uv = rasterize_uv(torch.as_tensor(vt, dtype=verts.dtype), ft, size)
    vis, wts = [], []
    for i in range(0, rotations.shape[0], batch):
        Rb = rotations[i:i + batch]
        v = torch.einsum("bij,vj->bvi", Rb, verts)
        cam = _scene_camera(Rb.shape[0], image_px, verts.dtype)
        img = torch.zeros(Rb.shape[0], image_px, image_px, 3, dtype=verts.dtype)
        out = bake_uv(v, faces, vt, ft, cam, img, uv=uv, min_cos=0.1)
        vis.append(out.visible)
        wts.append(out.weight)
    return torch.cat(vis), torch.cat(wts)


def inpainting_benchmark(space, verts, faces, vt, ft, *, n_train: int = 48, n_test: int = 16, steps: int = 300,
                         batch_size: int = 4, crop: int | None = 128, base_channels: int = 16, seed: int = 0,
                         start_space=None, checkpoint: str | Path | None = None) -> dict:
    """Maps from ``space`` (clipped to 0..1) with the visibility of random views of the mesh; the network trained
    on the training maps; every fill scored on held-out strokes of the test maps (PSNR, dB)."""
    gen = torch.Generator().manual_seed(seed)
    H = space.mean.shape[0]
    maps, _ = space.sample(n_train + n_test, gen, clip=True)
    vis, _ = visibility_maps(verts, faces, vt, ft, random_views(n_train + n_test, gen), H)
    vis &= space.region
    tr_m, te_m = maps[:n_train], maps[n_train:]
    tr_v, te_v = vis[:n_train], vis[n_train:]
    cfg = InpaintConfig(steps=steps, batch_size=batch_size, crop=crop, base_channels=base_channels, seed=seed)
    trained = train_inpainter(tr_m * tr_v.unsqueeze(-1), tr_v, cfg, layout=space.region, checkpoint=checkpoint,
                              resume=False)
    net = trained.net
    layout = space.region

    def net_fill(m, k):
        return inpaint_maps(net, m, k, layout)

    methods = {
        "mean": fills.fill_mean,
        "pushpull": fills.fill_pushpull,
        "opencv_telea": fills.fill_opencv,
        "opencv_ns": lambda m, k: fills.fill_opencv(m, k, method="ns"),
        "mirror_then_opencv": fills.fill_mirror_then_opencv,
        "mirror_then_pushpull": fills.fill_mirror_then_pushpull,
        "membrane": lambda m, k: fills.fill_pushpull(m, k, smooth_iters=20),
        "mirror_then_membrane": fills.fill_mirror_then_membrane,
        "pca_true_space (oracle)": lambda m, k: fills.fill_pca(m, k, space.mean, space.basis),
        "network": net_fill,
    }
    if start_space is not None:
        mean, basis = start_space
        methods["pca_start_space"] = lambda m, k: fills.fill_pca(m, k, mean, basis)
        methods["mirror_then_pca_start_space"] = lambda m, k: fills.fill_mirror_then_pca(m, k, mean, basis)
    t0 = time.perf_counter()
    scores = fills.evaluate_fills(te_m, te_v, methods, seed=seed + 1)
    # a second protocol closer to the real task (filling what a view did not see): hide the texels of each test
    # map that another random view would not see
    other, _ = visibility_maps(verts, faces, vt, ft, random_views(n_test, gen), H)
    view_holes = te_v & ~other
    view_scores = fills.evaluate_fills(te_m, te_v, methods, holes=view_holes)
    return {
        "maps": {"train": n_train, "test": n_test, "size": H, "visible_fraction_of_layout":
                 float(vis.float().sum() / (space.region.sum() * vis.shape[0]))},
        "training": {"steps": steps, "batch_size": batch_size, "crop": crop, "base_channels": base_channels,
                     "seconds": trained.seconds, "seconds_per_step": trained.seconds / max(1, steps),
                     "loss_first_10": float(np.mean(trained.history[:10])) if trained.history else None,
                     "loss_last_10": float(np.mean(trained.history[-10:])) if trained.history else None,
                     "threads": torch.get_num_threads()},
        "psnr_db": {k: round(v["psnr_db"], 2) for k, v in scores.items()},
        "hole_texels": next(iter(scores.values()))["hole_texels"],
        "psnr_db_view_holes": {k: round(v["psnr_db"], 2) for k, v in view_scores.items()},
        "view_hole_texels": next(iter(view_scores.values()))["hole_texels"],
        "evaluation_seconds": time.perf_counter() - t0,
        "_net": net,
    }


def recovery_benchmark(space, verts, faces, vt, ft, *, n_build: int = 120, n_held: int = 30, k: int = 10,
                       image_px: int = 256, fill=None, start_space=None, face_region=None, seed: int = 0,
                       batch: int = 8, min_weight: float = 0.05) -> dict:
    """Render ``n_build`` albedos of ``space`` on the mesh under random views and lights, unwrap them with the true
    parameters (standing in for fits), complete with ``fill(maps, known)`` (default mirror then OpenCV), PCA, and
    report the RMS residual (0..255) of ``n_held`` held-out albedos within ``face_region`` (default: the texels
    visible in a frontal view) for the built, true and starting spaces at k = 1, 5, ``k``."""
    gen = torch.Generator().manual_seed(seed + 100)
    H = space.mean.shape[0]
    dt = verts.dtype
    albedos, _ = space.sample(n_build, gen, clip=True)
    held, _ = space.sample(n_held, gen, clip=True)
    rots = random_views(n_build, gen, yaw_deg=35.0, pitch_deg=15.0, dtype=dt)
    lights = random_lights(n_build, gen, dt)
    uv = rasterize_uv(torch.as_tensor(vt, dtype=dt), ft, H)
    vt_t = torch.as_tensor(vt, dtype=dt)
    ft = torch.as_tensor(np.asarray(ft, dtype=np.int64))
    maps, known = [], []
    t0 = time.perf_counter()
    for i in range(0, n_build, batch):
        Rb = rots[i:i + batch]
        B = Rb.shape[0]
        v = torch.einsum("bij,vj->bvi", Rb, verts)
        cam = _scene_camera(B, image_px, dt)
        out = render_mesh(v, faces, cam, texture=(albedos[i:i + B].to(dt), vt_t, ft), sh=lights[i:i + B],
                          antialias=False)
        img = out.rgb.clamp(0.0, 1.0)
        res = unwrap_albedo(v, faces, vt, ft, cam.K, cam.R, cam.t, lights[i:i + B], img, uv=uv, dtype=dt)
        maps.append(res.albedo.float())
        known.append(res.weight > min_weight)
    t_unwrap = time.perf_counter() - t0
    maps, known = torch.cat(maps), torch.cat(known) & space.region
    fill = fill or fills.fill_mirror_then_opencv
    t0 = time.perf_counter()
    completed = fill(maps * known.unsqueeze(-1), known)
    completed = torch.where(space.region[..., None], completed, maps)
    t_fill = time.perf_counter() - t0
    region = space.region if face_region is None else face_region & space.region
    t0 = time.perf_counter()
    built = fit_pca(completed, k, region=space.region)
    t_pca = time.perf_counter() - t0
    oracle = fit_pca(albedos, k, region=space.region)

    def rms(mean, basis, kk):
        return round(reconstruction_rms(mean, basis, held, region, kk), 3)

    ks = sorted({1, 5, k})
    report = {
        "built": {kk: rms(built.mean, built.components, kk) for kk in ks},
        "pca_of_true_albedos (no render/unwrap)": {kk: rms(oracle.mean, oracle.components, kk) for kk in ks},
        "true": {kk: rms(space.mean, space.basis, kk) for kk in ks},
    }
    if start_space is not None:
        report["start (stand-in)"] = {kk: rms(start_space[0], start_space[1], kk) for kk in ks}
    err_known = (maps - albedos.float()).abs()[known].mean() * 255
    return {
        "rms_0_255_by_k": report,
        "maps": n_build, "held_out": n_held, "image_px": image_px, "texels": H,
        "face_region_texels": int(region.sum()),
        "unwrap_mean_abs_error_0_255_on_known": round(float(err_known), 3),
        "known_fraction_of_layout": float(known.float().sum() / (space.region.sum() * n_build)),
        "seconds": {"render_and_unwrap": t_unwrap, "fill": t_fill, "pca": t_pca},
        "explained_variance_ratio": [round(float(x), 4) for x in built.explained_variance_ratio],
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="FLAME(-format) model file")
    ap.add_argument("--texture", required=True, help="starting texture space with vt/ft (FLAME_texture.npz)")
    ap.add_argument("--size", type=int, default=256, help="texels per side")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--train-maps", type=int, default=48)
    ap.add_argument("--build-maps", type=int, default=120)
    ap.add_argument("--skip", choices=["inpaint", "recovery"], action="append", default=[])
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from flamefit.model.flame import load_flame

    model = load_flame(args.model, dtype=torch.float64)
    verts = model.v_template.to(torch.float64)
    faces = model.faces.to(torch.int64)
    raw = np.load(args.texture)
    vt, ft = raw["vt"], raw["ft"].astype(np.int64)
    start = load_texture_space(args.texture)
    s = args.size
    start_mb = (resize_map(start.mean[None], (s, s))[0], resize_map(start.basis, (s, s)))
    space = make_synthetic_space(vt, ft, s, 10, seed=0)
    face_vis, _ = visibility_maps(verts, faces, vt, ft, torch.eye(3, dtype=torch.float64)[None], s)
    out = {"threads": args.threads, "size": s}
    if "inpaint" not in args.skip:
        r = inpainting_benchmark(space, verts, faces, vt, ft, steps=args.steps, crop=args.crop,
                                 n_train=args.train_maps, start_space=start_mb)
        r.pop("_net")
        out["inpainting"] = r
        print(json.dumps(r, indent=1), flush=True)
    if "recovery" not in args.skip:
        r = recovery_benchmark(space, verts, faces, vt, ft, n_build=args.build_maps, start_space=start_mb,
                               face_region=face_vis[0])
        out["recovery"] = r
        print(json.dumps(r, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
