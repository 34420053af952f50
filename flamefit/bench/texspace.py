"""`flamefit bench texspace`: the texture-space builder's evidence (issue 11), through the same pipeline functions
as `flamefit texspace build` (run layer -> fit + unwrap -> train-inpaint -> inpaint -> PCA).

(a) recovery of a known space: photos rendered on the stand-in model (random shape, expression, pose, SH light
    shared by the channels) with albedos from a made-up space (:mod:`flamefit.texspace.synthetic`, not the
    stand-in's), landmarks = projected model points + noise (MediaPipe cannot be trusted on stand-in renders); the
    space is built from the images alone (start: the stand-in space; every ``--iterations`` round scored) and scored
    by the RMS residual (0..255) of held-out albedos of the true space after least squares onto mean + first k
    components, next to the start space and the true space, on the face-skin texels (what the photos' skin masks
    show) and on every front-visible texel (scalp, neck, ears, eyeballs too: a third of them never seen by any
    photo); plus how far each iteration's unwrapped maps are from the true albedos (scale, RMS before/after gauge);
(b) inpainting: PSNR on held-out strokes in unwrapped maps of further rendered photos (not used for training),
    the trained network vs the classical fills; also on view-shaped holes (the texels another photo did not see);
(c) real photos (``../shared/assets/images/faces_ccby``): a space built from the first ``--real-n`` photos, then the
    skin PSNR of fits with the PCA texture alone (no offset stage) on the last ``--real-test`` photos (not used to
    build it): built space vs the stand-in space (all its components, and as many as the built one);
(d) seconds and peak memory per stage and per photo.

Recovery, 16 + 3 rendered photos, 10 components, ``--workers 1 --threads 1 --iterations 2 --work DIR``, load 7-11
(2026-11-29, face texels, k = 5 / 10): built 16.56 / 13.51 after iteration 1, 15.73 / 12.66 after iteration 2;
stand-in 25.51 / 21.25 (12.89 with all 50); true 4.91 / 0.13. The same photos with the earlier defaults (``--pca
completed --gauge none --min-weight 0.05``): 21.72 / 18.12.

Measured 2026-11-29 on the 2-core machine (1 torch thread per process, 2 unwrap workers, load 2-5): the full real
build with the current defaults (``--real-n 139 --real-test 4 --components 50 --no-synthetic``: light_dc gauge,
min_weight 0.3) took 434 s to fit and unwrap (6.2 s per photo per worker, worker peak 879 MB), 19 s to inpaint,
4 s for the PCA (peak 1.2 GB); PCA-only fits of the 4 held-out photos reached a median skin PSNR of 30.09 dB vs
29.09 with the stand-in space (better on each of the 4, by 0.8-1.3 dB). The earlier defaults on the earlier 139
maps gave 30.14 vs 28.88 (another fit version); the PCA-side changes alone on those maps were within 0.2 dB.

The defaults take several minutes on 2 cores (12 + 3 rendered photos, 6 + 2 real ones, 60 training steps); the
full real build: ``--real-n 139 --real-test 4 --no-synthetic`` (add ``--work DIR`` to keep and resume it).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import click
import numpy as np


def _assets(assets: str | None):
    from flamefit.bench.common import shared_assets_dir

    return shared_assets_dir(assets)


def _stage_costs(work: Path, iteration: int = 0) -> dict:
    from flamefit.texspace.pipeline import Iteration, read_stage

    it = Iteration(work, iteration)
    out = {}
    for s in ("unwrap", "train-inpaint", "inpaint", "pca"):
        rec = read_stage(it, s)
        if rec:
            out[s] = {k: rec.get(k) for k in ("seconds", "peak_rss_mb", "worker_peak_rss_mb", "seconds_per_photo",
                                              "fit_seconds_per_photo", "n_ok", "n_failed", "step", "n_maps", "pca",
                                              "em_iterations", "em_outlier_fraction", "gauge", "gain_min", "gain_max")
                      if rec.get(k) is not None}
    return out


def _runner(items, a: dict, fit_overrides, workers: int, size: int, detections=None, device: str = "cpu"):
    from flamefit.fit.config import config_to_dict, load_config
    from flamefit.jobs.texspace import UnwrapJob
    from flamefit.run import InProcessExecutor, PoolExecutor, RunSpec, resolve_assets

    cfg = json.loads(json.dumps(config_to_dict(load_config(overrides=["texture.light=sh9", *fit_overrides]))))
    assets = resolve_assets(a["flame"], "none", a["static"], a["dynamic"])
    spec = RunSpec(worker="", assets=assets, config=cfg, threads=1, device=device)
    return UnwrapJob(items, spec, (lambda: PoolExecutor(workers)) if workers > 0 else InProcessExecutor,
                     size=size, detections=None if detections is None else str(detections))


def _paths(root: Path) -> dict:
    return {"flame": root / "flame_standin" / "standin_flame2023.pkl",
            "start": root / "flame_standin" / "standin_texture.npz",
            "static": root / "flame_landmarks" / "flame_static_embedding.pkl",
            "dynamic": root / "flame_landmarks" / "flame_dynamic_embedding.npy"}


def recovery_and_inpainting(a: dict, work: Path, *, n_build: int, n_test: int, n_held: int, components: int,
                            size: int, image_px: int, cfg, fit_overrides, workers: int, log) -> dict:
    """(a) and (b) on rendered photos."""
    import torch

    from flamefit.jobs.texspace import build
    from flamefit.model.flame import load_flame
    from flamefit.model.landmarks import load_ringnet_68
    from flamefit.run import image_items
    from flamefit.texspace import fills
    from flamefit.texspace.inpaint import inpaint_maps, load_inpainter
    from flamefit.texspace.measure import visibility_maps
    from flamefit.texspace.pipeline import Iteration, space_maps, train_stage
    from flamefit.texspace.store import load_maps
    from flamefit.texspace.synthetic import face_texels, make_synthetic_space, reconstruction_rms
    from flamefit.texspace.synthetic_photos import render_photos

    with np.load(a["start"]) as d:
        vt, ft = d["vt"], d["ft"].astype(np.int64)
    true = make_synthetic_space(vt, ft, size, 10, seed=0)
    true.save(work / "true_space.npz")
    t0 = time.perf_counter()
    log(f"(a) rendering {n_build + n_test} photos ({image_px}x{image_px})")
    rows = render_photos(work / "synth", work / "true_space.npz", n_build + n_test, flame=a["flame"],
                         landmarks_static=a["static"], landmarks_dynamic=a["dynamic"], height=image_px,
                         width=image_px, seed=11)
    render_s = time.perf_counter() - t0
    imgs = [Path(r["image"]) for r in rows]
    det = work / "synth" / "detections"
    log(f"(a) building from {n_build} photos")
    t0 = time.perf_counter()
    report = build(work / "synth_work", work / "synth_space.npz", cfg,
                   _runner(image_items(imgs[:n_build]), a, fit_overrides, workers, size, det),
                   start_space=str(a["start"]), flame=str(a["flame"]), log=log)
    build_s = time.perf_counter() - t0
    start_mean, start_basis = space_maps(a["start"], size)
    held, _ = true.sample(n_held, torch.Generator().manual_seed(777), clip=True)
    model = load_flame(a["flame"], dtype=torch.float64)
    vis, _ = visibility_maps(model.v_template.double(), model.faces, vt, ft, torch.eye(3, dtype=torch.float64)[None],
                             size)
    frontal = vis[0] & true.region
    face = frontal & face_texels(load_flame(a["flame"]), load_ringnet_68(a["static"], a["dynamic"]), vt, ft, size)
    k_built = space_maps(Iteration(work / "synth_work", 0).space, size)[1].shape[0]
    ks = sorted({0, 1, 5, min(10, k_built), k_built, true.n_components})  # 0: the mean alone

    def rms(mean, basis, region):  # k = 0 (the mean alone), 1, 5, 10, ..., and all of the space's components
        K = int(basis.shape[0])
        out = {str(k): round(reconstruction_rms(mean, basis, held, region, k), 3) for k in ks if k < K}
        out[f"all ({K})"] = round(reconstruction_rms(mean, basis, held, region, None), 3)
        return out

    def table(region) -> dict:
        rows = {}
        for i in range(cfg.iterations):
            rows["built" if i == cfg.iterations - 1 else f"built (iteration {i + 1})"] = rms(
                *space_maps(Iteration(work / "synth_work", i).space, size), region)
        rows["start (stand-in)"] = rms(start_mean, start_basis, region)
        rows["true"] = rms(true.mean, true.basis, region)
        return rows

    recovery = {
        "photos_built_from": n_build, "held_out_albedos": n_held, "image_px": image_px, "texels": size,
        "iterations": cfg.iterations, "true_components": true.n_components,
        "face_region_texels": int(face.sum()),
        "face_region": "front-visible texels of the face skin (forehead to chin, ear to ear, no eyes: what the "
                       "photos' skin masks show)",
        "rms_0_255_by_k": table(face),
        "frontal_layout_texels": int(frontal.sum()),
        "rms_0_255_by_k_frontal_layout": table(frontal),
        "frontal_layout": "every texel visible from the front (also scalp, neck, ears, eyeballs: never in a skin "
                          "mask, so never seen by any photo; the region of earlier reports)",
        "unwrap_vs_truth": [_unwrap_vs_truth(Iteration(work / "synth_work", i), true, face, cfg)
                            for i in range(cfg.iterations)],
        "failed": report.failed, "render_s": round(render_s, 2), "build_s": round(build_s, 2),
        "stages": {f"iteration {i + 1}": _stage_costs(work / "synth_work", i) for i in range(cfg.iterations)},
    }
    # (b) held-out photos: unwrapped by the same worker, never seen by the network
    log(f"(b) unwrapping {n_test} held-out photos for the inpainting comparison")
    held_it = Iteration(work / "synth_heldout", 0)
    _runner(image_items(imgs[n_build:]), a, fit_overrides, workers, size, det).run(held_it, str(a["start"]))
    maps = load_maps(sorted(held_it.unwrapped.glob("*.npz")))
    known = maps.known(cfg.min_weight)
    methods = {
        "mean": fills.fill_mean,
        "membrane": lambda m, k: fills.fill_pushpull(m, k, smooth_iters=20),
        "opencv_telea": fills.fill_opencv,
        "mirror_then_opencv": fills.fill_mirror_then_opencv,
        "mirror_then_membrane": lambda m, k: fills.fill_mirror_then_pushpull(m, k, smooth_iters=20),
        "mirror_then_start_space": lambda m, k: fills.fill_mirror_then_pca(m, k, start_mean, start_basis),
    }
    last = Iteration(work / "synth_work", cfg.iterations - 1)
    train = None
    if cfg.inpaint_steps > 0:  # the network, trained on (a)'s maps (the build did it already when it is the fill)
        log(f"(b) network: {cfg.inpaint_steps} training steps on the {n_build} maps of (a)")
        train = train_stage(last, cfg)
        net = load_inpainter(last.checkpoint)
        methods["network"] = lambda m, k: inpaint_maps(net, m, k, maps.uv_mask)
    t0 = time.perf_counter()
    scores = fills.evaluate_fills(maps.albedo, known, methods, seed=4242)
    # the pipeline's real task: texels a view did not see; holes = what (a)'s photos, one each, did not see
    seen_by_other = load_maps(sorted((work / "synth_work" / "iter0" / "unwrapped").glob("*.npz"))).known(
        cfg.min_weight)
    view_holes = known & ~seen_by_other[torch.arange(known.shape[0]) % seen_by_other.shape[0]]
    view_scores = fills.evaluate_fills(maps.albedo, known, methods, holes=view_holes)
    inpainting = {"maps": len(maps.names), "hole_texels": next(iter(scores.values()))["hole_texels"],
                  "psnr_db": {k: round(v["psnr_db"], 2) for k, v in scores.items()},
                  "psnr_db_per_map_mean": {k: round(v["psnr_db_per_map_mean"], 2) for k, v in scores.items()},
                  "psnr_db_view_holes": {k: round(v["psnr_db"], 2) for k, v in view_scores.items()},
                  "view_hole_texels": next(iter(view_scores.values()))["hole_texels"],
                  "network_training_steps": cfg.inpaint_steps,
                  "network_training_s": None if train is None else train.get("seconds"),
                  "network_trained_on": f"the {n_build} maps of (a) (random strokes); scored on {len(maps.names)} "
                                        "other photos' maps",
                  "evaluation_s": round(time.perf_counter() - t0, 2)}
    best = max(inpainting["psnr_db"], key=inpainting["psnr_db"].get)
    inpainting["best"] = best
    return {"recovery": recovery, "inpainting": inpainting}


def _unwrap_vs_truth(it, true, face, cfg) -> dict:
    """How far one iteration's unwrapped maps are from the true albedos (rendered photos: ``truth.json`` codes),
    on the face texels each photo saw: the fit step's share of the recovery error. Per photo the albedo scale
    (least squares, unwrapped ~ s x true) shows the albedo-vs-light gauge; RMS (0..255) before and after
    :func:`flamefit.texspace.pipeline.gauge_gains` (the build's gauge)."""
    import torch

    from flamefit.texspace.pipeline import _maps, finished_names

    names = finished_names(it.unwrapped)
    source = json.loads((it.unwrapped / f"{names[0]}.json").read_text(encoding="utf-8"))["source"]
    truth_file = Path(source).parent.parent / "truth.json"  # render_photos: DIR/images/NAME.png, DIR/truth.json
    codes = {r["name"]: r["code"] for r in json.loads(truth_file.read_text(encoding="utf-8"))["photos"]}
    raw, gauged = _maps(it, names), _maps(it, names, cfg.gauge)
    known = raw.known(cfg.min_weight) & face
    A = true.mean + torch.einsum("nk,khwc->nhwc", torch.tensor([codes[n] for n in names], dtype=true.mean.dtype),
                                 true.basis)
    scale, before, after = [], [], []
    for i in range(len(names)):
        k = known[i]
        u, g, t = raw.albedo[i][k].double(), gauged.albedo[i][k].double(), A[i][k].double()
        scale.append(float((u * t).sum() / (t * t).sum()))
        before.append(float((u - t).pow(2).mean().sqrt()) * 255)
        after.append(float((g - t).pow(2).mean().sqrt()) * 255)
    q = lambda x: [round(float(v), 3) for v in np.percentile(x, [0, 50, 100])]  # noqa: E731
    return {"iteration": it.index + 1, "photos": len(names),
            "seen_face_fraction": round(float(known.sum() / (face.sum() * len(names))), 3),
            "albedo_scale_vs_truth_min_median_max": q(scale),
            "rms_seen_0_255_median": round(float(np.median(before)), 2),
            "rms_seen_0_255_median_after_gauge": round(float(np.median(after)), 2)}


def _skin_psnr(fitter, raw, target) -> float:
    from flamefit.fit.crop import params_to_original

    p = params_to_original(raw.params, raw.crop)
    p.tex_offset = None
    H, W = target.image.shape[:2]
    r = fitter.render_image(p, H, W)
    rgb = r["rgb"][0].clamp(0, 1).cpu().numpy()
    m = (np.asarray(target.mask) > 0.5) & (r["alpha"][0].cpu().numpy() > 0.99)
    mse = float(((rgb - target.image) ** 2)[m].mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def real_photos(a: dict, shared: Path, work: Path, *, n_build: int, n_test: int, components: int, size: int, cfg,
                fit_overrides, workers: int, log) -> dict:
    """(c): build from the first n_build portraits, evaluate PCA-only fits on the last n_test."""
    from flamefit.fit.api import build_fitter, target_from_input
    from flamefit.fit.config import load_config
    from flamefit.jobs.texspace import build
    from flamefit.run import image_items
    from flamefit.texspace.pipeline import Iteration

    photos = sorted((shared / "images" / "faces_ccby").glob("*.jpg"))
    if len(photos) < n_build + n_test:
        raise click.ClickException(f"only {len(photos)} photos in faces_ccby, asked for {n_build} + {n_test}")
    train, test = photos[:n_build], photos[len(photos) - n_test:]
    log(f"(c) building from {n_build} real photos")
    t0 = time.perf_counter()
    report = build(work / "real_work", work / "real_space.npz", cfg,
                   _runner(image_items(train), a, fit_overrides, workers, size), start_space=str(a["start"]),
                   flame=str(a["flame"]), log=log)
    build_s = time.perf_counter() - t0
    with np.load(work / "real_space.npz") as d:
        k_built = int(d["tex_dir"].shape[-1])
    fcfg = load_config(overrides=["texture.light=sh9", "texture.offset=false", *fit_overrides])
    fitters = {
        ("built" if i == cfg.iterations - 1 else f"built (iteration {i + 1})"): build_fitter(
            a["flame"], Iteration(work / "real_work", i).space, fcfg, landmarks_static=a["static"],
            landmarks_dynamic=a["dynamic"]) for i in range(cfg.iterations)}
    fitters.update({
        "stand-in (all 50)": build_fitter(a["flame"], a["start"], fcfg, landmarks_static=a["static"],
                                          landmarks_dynamic=a["dynamic"]),
        f"stand-in (first {k_built})": build_fitter(
            a["flame"], a["start"], load_config(overrides=["texture.light=sh9", "texture.offset=false",
                                                           f"texture.n_tex={k_built}", *fit_overrides]),
            landmarks_static=a["static"], landmarks_dynamic=a["dynamic"]),
    })
    log(f"(c) fitting {n_test} held-out photos with each space (PCA texture only)")
    rows = []
    for path in test:
        try:
            target = target_from_input(path)
        except Exception as exc:  # noqa: BLE001 - report and go on
            rows.append({"photo": path.name, "error": str(exc)})
            continue
        row = {"photo": path.name}
        for name, f in fitters.items():
            t1 = time.perf_counter()
            raw = f.fit(target)
            row[name] = round(_skin_psnr(f, raw, target), 3)
            row[f"{name} fit_s"] = round(time.perf_counter() - t1, 2)
        rows.append(row)
    ok = [r for r in rows if "error" not in r]
    med = {name: round(float(np.median([r[name] for r in ok])), 3) for name in fitters if ok}
    return {"photos_built_from": n_build, "built_from": [p.name for p in train], "held_out": [p.name for p in test],
            "components_built": k_built, "skin_psnr_db_pca_only": rows, "median_skin_psnr_db_pca_only": med,
            "iterations": cfg.iterations, "failed": report.failed, "build_s": round(build_s, 2),
            "stages": {f"iteration {i + 1}": _stage_costs(work / "real_work", i) for i in range(cfg.iterations)}}


@click.command(name="texspace")
@click.option("--assets", type=click.Path(file_okay=False), help="The shared assets folder (../shared/assets).")
@click.option("--n-build", type=click.IntRange(min=3), default=12, show_default=True,
              help="(a) rendered photos the space is built from.")
@click.option("--n-inpaint-test", type=click.IntRange(min=1), default=3, show_default=True,
              help="(b) further rendered photos whose maps score the fills.")
@click.option("--n-held", type=click.IntRange(min=1), default=30, show_default=True,
              help="(a) held-out albedos of the true space.")
@click.option("--components", type=click.IntRange(min=1), default=10, show_default=True,
              help="PCA components built (at most photos - 1).")
@click.option("--size", type=click.IntRange(min=16), default=256, show_default=True, help="Texels per map side.")
@click.option("--image-px", type=click.IntRange(min=64), default=256, show_default=True,
              help="(a) rendered photo side.")
@click.option("--inpaint-steps", type=click.IntRange(min=0), default=60, show_default=True,
              help="Network training steps (each build).")
@click.option("--fill", type=click.Choice(["opencv_telea", "network", "membrane", "mirror_then_membrane",
                                           "mirror_then_opencv", "mirror_then_start_space"]),
              help="Completion in the builds (default: the pipeline's default).")
@click.option("--iterations", type=click.IntRange(min=1, max=5), default=1, show_default=True,
              help="Build iterations (each refits with the previous space); every iteration's space is scored.")
@click.option("--pca", "pca_method", type=click.Choice(["missing", "completed"]),
              help="PCA of the builds (default: the pipeline's, PCA of the completed maps).")
@click.option("--gauge", type=click.Choice(["light_dc", "none"]), help="Albedo-vs-light gauge of the builds.")
@click.option("--min-weight", type=click.FloatRange(min=0.0, max=1.0, max_open=True),
              help="Unwrap weight below which a texel is unknown (default: the pipeline's).")
@click.option("--real/--no-real", "do_real", default=True, show_default=True, help="(c) real photos.")
@click.option("--synthetic/--no-synthetic", "do_synth", default=True, show_default=True, help="(a) and (b).")
@click.option("--real-n", type=click.IntRange(min=3), default=6, show_default=True,
              help="(c) photos the real space is built from (the first N of faces_ccby; 139 for the full build).")
@click.option("--real-test", type=click.IntRange(min=1), default=2, show_default=True,
              help="(c) held-out photos (the last ones of faces_ccby).")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Unwrap in N worker processes of one thread each (0: in this process).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the work folders here (default: a temporary folder; rerun to resume).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Fit config overrides (all fits).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, help="torch CPU threads (default: the bench group's setting).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(assets, n_build, n_inpaint_test, n_held, components, size, image_px, inpaint_steps, fill, iterations,
            pca_method, gauge, min_weight, do_real, do_synth, real_n, real_test, workers, work, overrides, device,
            threads, as_json):
    """Texture-space building: known-space recovery, inpainting PSNR, real-photo skin PSNR, time and memory."""
    import torch

    from flamefit.bench.common import threads_info
    from flamefit.texspace.pipeline import BuildConfig, with_defaults

    if threads:
        torch.set_num_threads(threads)
    shared = _assets(assets)
    a = _paths(shared)
    started = threads_info()

    def log(msg: str) -> None:
        click.echo(f"bench texspace: {msg}", err=True)

    report: dict = {"environment": started, "workers": workers, "fit_overrides": list(overrides)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flamefit-bench-texspace-") as tmp:
        root = Path(work) if work else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if do_synth:
            cfg = with_defaults(BuildConfig(), components=min(components, n_build - 1), size=size,
                                inpaint_steps=inpaint_steps, fill=fill, iterations=iterations, pca=pca_method,
                                gauge=gauge, min_weight=min_weight)
            report["config_synthetic"] = cfg.__dict__
            report.update(recovery_and_inpainting(a, root, n_build=n_build, n_test=n_inpaint_test, n_held=n_held,
                                                  components=components, size=size, image_px=image_px, cfg=cfg,
                                                  fit_overrides=overrides, workers=workers, log=log))
        if do_real:
            cfg = with_defaults(BuildConfig(), components=min(components, real_n - 1), size=size,
                                inpaint_steps=inpaint_steps, fill=fill, iterations=iterations, pca=pca_method,
                                gauge=gauge, min_weight=min_weight)
            report["config_real"] = cfg.__dict__
            report["real"] = real_photos(a, shared, root, n_build=real_n, n_test=real_test, components=components,
                                         size=size, cfg=cfg, fit_overrides=overrides, workers=workers, log=log)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    report["environment_end"] = threads_info()
    if as_json:
        click.echo(json.dumps(report))
        return
    _print(report)


def _print(r: dict) -> None:
    """The report as a few human lines (the whole of it with --json)."""
    if "recovery" in r:
        rec = r["recovery"]
        click.echo(f"(a) known-space recovery: built from {rec['photos_built_from']} rendered photos; RMS residual "
                   f"(0..255, {rec['face_region_texels']} face texels) of {rec['held_out_albedos']} held-out albedos "
                   "after least squares onto mean + first k components:")
        for name, row in rec["rms_0_255_by_k"].items():
            click.echo(f"    {name:24s} " + "  ".join(f"k={k}: {v:.2f}" for k, v in row.items()))
        for u in rec.get("unwrap_vs_truth", []):
            click.echo(f"    unwrapped maps vs truth, iteration {u['iteration']}: RMS on seen face texels (median "
                       f"photo) {u['rms_seen_0_255_median']:.2f} -> {u['rms_seen_0_255_median_after_gauge']:.2f} "
                       f"after the gauge; albedo scale vs truth {u['albedo_scale_vs_truth_min_median_max']}")
        inp = r["inpainting"]
        click.echo(f"(b) inpainting PSNR (dB) on held-out strokes, {inp['maps']} held-out maps, {inp['hole_texels']} "
                   "texels: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(inp["psnr_db"].items(),
                                                                              key=lambda kv: -kv[1])))
        if "psnr_db_view_holes" in inp:
            click.echo(f"    view-shaped holes (texels another photo missed, {inp['view_hole_texels']} texels): "
                       + ", ".join(f"{k} {v:.2f}" for k, v in sorted(inp["psnr_db_view_holes"].items(),
                                                                     key=lambda kv: -kv[1])))
    if "real" in r:
        real = r["real"]
        click.echo(f"(c) real photos: space of {real['components_built']} components from {real['photos_built_from']}"
                   f" photos; median skin PSNR (dB) of PCA-only fits on {len(real['held_out'])} held-out photos: "
                   + ", ".join(f"{k} {v:.2f}" for k, v in real["median_skin_psnr_db_pca_only"].items()))
    for part in ("recovery", "real"):
        for itn, st in ((r.get(part) or {}).get("stages", {})).items():
            click.echo(f"(d) {part}, {itn}: " + "; ".join(
                f"{k} {v.get('seconds', 0):.1f} s" + (f" ({v['seconds_per_photo']:.1f} s/photo)"
                                                     if v.get("seconds_per_photo") else "")
                + f", peak {v.get('worker_peak_rss_mb') or v.get('peak_rss_mb')} MB" for k, v in st.items()))
    click.echo(f"total {r['total_s']:.0f} s, workers {r['workers']}, load {r['environment'].get('loadavg')} -> "
               f"{r['environment_end'].get('loadavg')}")
