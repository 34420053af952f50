"""`flamefit bench fit`: single-image fitting accuracy and speed.

* Synthetic recovery on the stand-in model: N random heads (shape, expression, jaw, pose, texture, SH light) rendered
  over a textured background at 300x272 (not the fitter's resolution) with pixel noise. The "detected" landmarks are
  the ground-truth model's projected 68 points plus 1 px noise (MediaPipe is not reliable on stand-in renders), and
  the focal length is known. Reported: per-vertex error on the face region (median over heads; raw in the camera
  frame and after similarity alignment) with the mean-face baseline, 68-landmark RMSE (px, against noise-free
  points), PSNR on held-out skin pixels (every other 8x8 block of skin, never seen by the fitter) against the
  noise-free render.
* Real images (../shared/assets/images): NME of the fit's projected 68 points against the reference 68 points
  (normalised by the outer-eye-corner distance), skin PSNR with the PCA texture only and with the texel offset,
  seconds per image (fit only, and with detection).
* Per-stage seconds (median) and iterations actually run (early stopping).
* Whole pipeline: ``flamefit fit``'s own worker (detect, mask, blendshapes, fit, result, writing npz/json/OBJ/GLB/
  overlay) on 768x1024 portraits, seconds per image by phase (after one warm-up image).
* Throughput: images/s when B independent synthetic images are fitted as one batch (B = 1, 8, 32 by default).
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np


def _assets(assets: str | None):
    from flamefit.bench.common import shared_assets_dir

    return shared_assets_dir(assets)


def _fitter(assets: Path, overrides=(), device="cpu"):
    from flamefit.fit.api import build_fitter
    from flamefit.fit.config import load_config

    cfg = load_config(overrides=list(overrides))
    return build_fitter(assets / "flame_standin" / "standin_flame2023.pkl",
                        assets / "flame_standin" / "standin_texture.npz", cfg, device=device,
                        landmarks_static=assets / "flame_landmarks" / "flame_static_embedding.pkl",
                        landmarks_dynamic=assets / "flame_landmarks" / "flame_dynamic_embedding.npy")


def _user_fitter(assets: Path, overrides=(), device="cpu"):
    """The fitter of a user with the model file and its texture space only (68 points derived from the model)."""
    from flamefit.fit.api import build_fitter
    from flamefit.fit.config import load_config

    return build_fitter(assets / "flame_standin" / "standin_flame2023.pkl",
                        assets / "flame_standin" / "standin_texture.npz", load_config(overrides=list(overrides)),
                        device=device, landmarks_static=False)


def _stage_times(raw) -> dict:
    out = {f"{s.name}_s": s.seconds for s in raw.stages}
    out.update({f"{s.name}_iters": getattr(s, "iters_run", s.iters) for s in raw.stages})
    out["init_s"] = raw.init_seconds
    return out


def throughput(fitter, batch_sizes=(1, 8, 32), seed0: int = 5000) -> dict:
    """images/s for B independent synthetic images (300x272) fitted as one batch, per B."""
    from flamefit.fit import synthetic as S

    out = {}
    for B in batch_sizes:
        targets = [S.make_case(fitter, seed=seed0 + k, height=300, width=272).target for k in range(B)]
        t0, c0 = time.perf_counter(), time.process_time()
        fitter.fit_batch(targets)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[str(B)] = {"seconds": wall, "cpu_seconds": cpu, "images_per_s": B / wall, "images_per_cpu_s": B / cpu}
    return out


def synthetic(fitter, n: int = 20, seed0: int = 1000) -> dict:
    import torch

    from flamefit.fit import synthetic as S
    from flamefit.fit.result import make_result

    region = S.face_region(fitter.model, fitter.landmarks68).cpu().numpy()
    rows = []
    for k in range(n):
        case = S.make_case(fitter, seed=seed0 + k, height=300, width=272)
        t0, c0 = time.perf_counter(), time.process_time()
        raw = fitter.fit(case.target)
        fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        res = make_result(fitter, raw)
        gt = case.vertices_cam[0].cpu().numpy()
        v, _ = fitter.vertices(res.params)
        pred = fitter.to_camera(res.params, v)[0].detach().cpu().numpy()
        err = S.vertex_errors_mm(pred, gt, region)
        mean = res.params.detach()
        mean.shape = torch.zeros_like(mean.shape)
        mean.expression = torch.zeros_like(mean.expression)
        vm, _ = fitter.vertices(mean)
        base = S.vertex_errors_mm(fitter.to_camera(mean, vm)[0].cpu().numpy(), gt, region)
        lmk_rmse = float(np.sqrt(((res.lmks_68_fit - case.lmks_68_clean) ** 2).sum(1).mean()))
        psnr = S.psnr(res.render, case.clean_image, case.heldout_mask)
        rows.append({"seed": seed0 + k, "aligned_mm": err["aligned_mm"], "raw_mm": err["raw_mm"],
                     "meanface_aligned_mm": base["aligned_mm"], "lmk_rmse_px": lmk_rmse,
                     "heldout_skin_psnr_db": psnr, "fit_s": fit_s, "fit_cpu_s": fit_cpu_s, **_stage_times(raw)})
    keys = ["aligned_mm", "raw_mm", "meanface_aligned_mm", "lmk_rmse_px", "heldout_skin_psnr_db", "fit_s",
            "fit_cpu_s"]
    summary = {f"median_{k}": float(np.median([r[k] for r in rows])) for k in keys}
    summary["mean_aligned_mm"] = float(np.mean([r["aligned_mm"] for r in rows]))
    stages = sorted({k for r in rows for k in r if k.endswith("_s") and k not in ("fit_s", "fit_cpu_s")})
    summary["median_stage_s"] = {k: float(np.median([r.get(k, 0.0) for r in rows])) for k in stages}
    iters = sorted({k for r in rows for k in r if k.endswith("_iters")})
    summary["median_stage_iters"] = {k: float(np.median([r.get(k, 0) for r in rows])) for k in iters}
    return {"cases": rows, **summary}


def _skin_psnr(fitter, raw, image, skin, with_offset: bool) -> float:
    from flamefit.fit import synthetic as S
    from flamefit.fit.crop import params_to_original

    p = params_to_original(raw.params, raw.crop)
    if not with_offset:
        p.tex_offset = None
    H, W = image.shape[:2]
    r = fitter.render_image(p, H, W)
    rgb = r["rgb"][0].clamp(0, 1).cpu().numpy()
    covered = r["alpha"][0].cpu().numpy() > 0.99
    return S.psnr(rgb, image, (skin > 0.5) & covered)


def real(fitter, assets: Path) -> dict:
    from flamefit.fit.api import target_from_input
    from flamefit.fit.result import make_result

    folder = assets / "images" / "ffhq_256"
    paths = sorted(folder.glob("*.png")) + sorted((assets / "images" / "public_domain").glob("*.png"))
    rows = []
    for path in paths:
        t0 = time.perf_counter()
        try:
            target = target_from_input(path)
        except Exception as exc:  # noqa: BLE001 - report and go on
            rows.append({"image": path.name, "error": str(exc)})
            continue
        det_s = time.perf_counter() - t0
        t1, c1 = time.perf_counter(), time.process_time()
        raw = fitter.fit(target)
        fit_s, fit_cpu_s = time.perf_counter() - t1, time.process_time() - c1
        t2 = time.perf_counter()
        res = make_result(fitter, raw)
        row = {"image": path.name, "fit_s": fit_s, "fit_cpu_s": fit_cpu_s, "detect_s": det_s,
               "result_s": time.perf_counter() - t2, **_stage_times(raw)}
        ref_path = folder / "landmarks68" / f"{path.stem}.npy"
        if ref_path.exists():
            ref = np.load(ref_path)
            iod = np.linalg.norm(ref[36] - ref[45])
            row["nme_fit_vs_ref"] = float(np.linalg.norm(res.lmks_68_fit - ref, axis=1).mean() / iod)
            row["nme_detected_vs_ref"] = float(np.linalg.norm(res.lmks_68 - ref, axis=1).mean() / iod)
        skin_path = folder / "skin_masks" / f"{path.stem}.npy"
        skin = np.load(skin_path) > 0 if skin_path.exists() else (target.mask > 0.5)
        row["skin_mask"] = "reference" if skin_path.exists() else "observed"
        row["skin_psnr_pca_db"] = _skin_psnr(fitter, raw, target.image, skin, with_offset=False)
        row["skin_psnr_offset_db"] = _skin_psnr(fitter, raw, target.image, skin, with_offset=True)
        rows.append(row)
    ok = [r for r in rows if "error" not in r]
    summary = {}
    for k in ("nme_fit_vs_ref", "nme_detected_vs_ref", "skin_psnr_pca_db", "skin_psnr_offset_db", "fit_s",
              "fit_cpu_s", "detect_s", "result_s"):
        vals = [r[k] for r in ok if k in r]
        if vals:
            summary[f"median_{k}"] = float(np.median(vals))
    return {"images": rows, **summary}


PIPELINE_IMAGES = "images/faces_ccby"  # 768x1024 studio portraits: the photo size the speed target is set for


def pipeline(assets: Path, n: int = 4, overrides=(), device: str = "cpu") -> dict:
    """The whole ``flamefit fit`` path per image (the same worker: detect, mask, blendshapes, fit, result,
    writing the default outputs: npz, json, OBJ + GLB, overlay PNG) on ``n`` large photos, after one warm-up
    image (first-call costs of MediaPipe/numba/torch are not per-image costs). Phases per image, median."""
    import tempfile

    from flamefit.fit.config import config_to_dict, load_config
    from flamefit.io.results import DEFAULT_OUTPUTS
    from flamefit.jobs.photo import FIT_WORKER, FitWorker
    from flamefit.run.items import Item
    from flamefit.run.spec import RunSpec, resolve_assets

    paths = sorted((assets / PIPELINE_IMAGES).glob("*.jpg"))[-(n + 1):]
    if len(paths) < 2:
        return {"error": f"fewer than 2 images in {assets / PIPELINE_IMAGES}"}
    import torch

    fl = assets / "flame_landmarks"
    spec_assets = resolve_assets(assets / "flame_standin" / "standin_flame2023.pkl",
                                 assets / "flame_standin" / "standin_texture.npz",
                                 fl / "flame_static_embedding.pkl", fl / "flame_dynamic_embedding.npy")
    with tempfile.TemporaryDirectory(prefix="flamefit-bench-pipeline-") as out:
        spec = RunSpec(worker=FIT_WORKER, out_dir=out, assets=spec_assets,
                       config=config_to_dict(load_config(overrides=list(overrides))),
                       outputs=list(DEFAULT_OUTPUTS), device=device, threads=torch.get_num_threads(),
                       overwrite=True)
        worker = FitWorker(spec)
        t0 = time.perf_counter()
        worker.setup()
        setup_s = time.perf_counter() - t0
        rows = []
        try:
            for i, path in enumerate(paths):
                rec = worker.process(Item(name=path.stem, source=str(path)))
                if rec.status != "ok":
                    rows.append({"image": path.name, "error": rec.message})
                    continue
                row = {"image": path.name, "warmup": i == 0, **rec.data.get("timings_s", {})}
                rows.append(row)
        finally:
            worker.close()
    from PIL import Image

    ok = [r for r in rows if "error" not in r and not r["warmup"]]
    keys = sorted({k for r in ok for k in r if k.endswith("_s")})
    return {"images": rows, "image_size": list(Image.open(paths[0]).size), "setup_s": setup_s,
            "outputs": list(DEFAULT_OUTPUTS),
            "median_s": {k: float(np.median([r[k] for r in ok if k in r])) for k in keys}}


def run(n: int = 20, assets: str | None = None, do_real: bool = True, overrides=(), device: str = "cpu",
        batch_sizes=(1, 8, 32), pipeline_n: int = 4, detected_n: int = 30, renders: str | None = None,
        log=None) -> dict:
    from flamefit.bench.common import environment, threads_info

    root = _assets(assets)
    t0 = time.perf_counter()
    fitter = _fitter(root, overrides, device)
    build_s = time.perf_counter() - t0
    # warm-up (first-call costs of torch/numba/MediaPipe are not per-image costs; reported separately)
    from flamefit.fit import synthetic as S

    t0 = time.perf_counter()
    fitter.fit(S.make_case(fitter, seed=1, height=300, width=272).target)
    first_fit_s = time.perf_counter() - t0
    report = {
        "benchmark": "fit",
        "model": "stand-in FLAME (procedural; not real FLAME)",
        "landmarks_note": "synthetic: 'detected' 68 points = ground-truth projection + 1 px noise (no MediaPipe); "
                          "focal length known",
        "device": device,
        **threads_info(),
        "build_fitter_s": build_s,
        "first_fit_s_including_warmup": first_fit_s,
        "config": {k: v for k, v in _cfg_summary(fitter.cfg).items()},
        "environment": environment(),
    }
    if detected_n > 0:
        import tempfile

        from flamefit.bench import detected

        user = _user_fitter(root, overrides, device)
        with tempfile.TemporaryDirectory(prefix="flamefit-bench-renders-") as tmp:
            folder = Path(renders) if renders else Path(tmp)
            report["detected"] = detected.run(fitter, user, folder, detected_n, log=log)
        if not renders:
            report["detected"]["renders"] = "(a temporary folder; --renders DIR keeps them)"
        report["detected"]["targets_met"] = detected.targets(report["detected"])
    if n > 0:
        report["synthetic"] = synthetic(fitter, n=n)
    if do_real:
        report["real"] = real(fitter, root)
    if pipeline_n > 0:
        report["pipeline"] = pipeline(root, pipeline_n, overrides, device)
    if batch_sizes:
        report["throughput"] = throughput(fitter, batch_sizes)
    report["loadavg_end"] = threads_info().get("loadavg")
    return report


def _cfg_summary(cfg) -> dict:
    return {"resolution": cfg.resolution, "n_shape": cfg.n_shape, "n_expr": cfg.n_expr,
            "iters": {s: getattr(cfg, s).iters for s in ("rigid", "landmarks", "appearance", "photometric",
                                                         "offset")}}


@click.command(name="fit")
@click.option("--n", "n", default=20, show_default=True, help="Number of synthetic heads.")
@click.option("--assets", type=click.Path(file_okay=False), help="The shared assets folder (../shared/assets).")
@click.option("--real/--no-real", "do_real", default=True, show_default=True, help="Also fit the real images.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Fit config overrides.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, help="torch CPU threads (default: the bench group's setting).")
@click.option("--batch-sizes", default="1,8,32", show_default=True,
              help="Throughput: B images fitted as one batch, per B (comma-separated; '' skips).")
@click.option("--pipeline-n", default=4, show_default=True,
              help="Whole `flamefit fit` pipeline (detect, fit, write) on this many 768x1024 portraits (0 skips).")
@click.option("--detected-n", default=30, show_default=True,
              help="Photo-like renders fitted through the real detector with an unknown focal length, beside the "
                   "oracle column (0 skips).")
@click.option("--renders", type=click.Path(file_okay=False),
              help="Write (or reuse) the detector-in-the-loop renders and their truth here (default: a temporary "
                   "folder); ../shared/eval/synth_score.py --gt DIR scores a `flamefit fit` of them.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(n, assets, do_real, overrides, device, threads, batch_sizes, pipeline_n, detected_n, renders, as_json):
    """Single-image fitting: accuracy through the real detector on photo-like renders beside the oracle column
    (true landmarks, true focal), synthetic recovery (mm), real-image NME and PSNR, seconds per image."""
    import json

    if threads:
        import torch

        torch.set_num_threads(threads)

    sizes = tuple(int(x) for x in batch_sizes.split(",") if x.strip())
    log = None if as_json else (lambda m: click.echo(m, err=True))
    report = run(n, assets, do_real, overrides, device, sizes, pipeline_n, detected_n, renders, log=log)
    if as_json:
        click.echo(json.dumps(report))
        return
    from rich.console import Console

    console = Console(width=150)
    if "detected" in report:
        _print_detected(console, report["detected"])
    if "synthetic" in report:
        _print_synthetic(console, report)
    _print_rest(console, report)


def _print_synthetic(console, report: dict) -> None:
    from rich.table import Table

    syn = report["synthetic"]
    t = Table(title=f"Oracle: synthetic recovery, {len(syn['cases'])} heads (stand-in model; "
                    f"{report['landmarks_note']})")
    cols = ["seed", "aligned_mm", "raw_mm", "meanface_aligned_mm", "lmk_rmse_px", "heldout_skin_psnr_db", "fit_s",
            "fit_cpu_s"]
    for c in cols:
        t.add_column(c, justify="right")
    for r in syn["cases"]:
        t.add_row(*[f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols])
    t.add_row("median", *[f"{syn['median_' + c]:.2f}" for c in cols[1:]])
    console.print(t)
    console.print("median stage seconds: " + ", ".join(f"{k}={v:.2f}" for k, v in syn["median_stage_s"].items()))
    console.print("median stage iterations: " + ", ".join(f"{k}={v:.0f}" for k, v in
                                                          syn.get("median_stage_iters", {}).items()))


def _print_rest(console, report: dict) -> None:
    from rich.table import Table

    if "real" in report:
        rt = Table(title="Real images")
        rc = ["image", "nme_fit_vs_ref", "nme_detected_vs_ref", "skin_psnr_pca_db", "skin_psnr_offset_db", "fit_s",
              "fit_cpu_s", "detect_s"]
        for c in rc:
            rt.add_column(c, justify="right")
        for r in report["real"]["images"]:
            rt.add_row(*[(f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, r.get("error", "-"))))
                         for c in rc])
        console.print(rt)
        console.print(", ".join(f"{k}={v:.3f}" for k, v in report["real"].items() if k.startswith("median")))
    pipe = report.get("pipeline", {})
    if "median_s" in pipe:
        med = pipe["median_s"]
        console.print(f"whole `flamefit fit` pipeline, {pipe['image_size'][0]}x{pipe['image_size'][1]} photos: "
                      f"{med.get('total_s', float('nan')):.2f} s per image (median; " +
                      ", ".join(f"{k}={v:.2f}" for k, v in med.items() if k != "total_s") + ")")
    elif "error" in pipe:
        console.print(f"pipeline: {pipe['error']}")
    for B, row in report.get("throughput", {}).items():
        console.print(f"batch of {B}: {row['images_per_s']:.2f} images/s ({row['images_per_cpu_s']:.2f} per CPU-s)")
    first = report["first_fit_s_including_warmup"]
    console.print(f"load average {report.get('loadavg')} -> {report.get('loadavg_end')}")
    console.print(f"device {report['device']}, threads {report['threads']}, fitter built in "
                  f"{report['build_fitter_s']:.1f} s, first fit (with warm-up) {first:.1f} s")


def _print_detected(console, rep: dict) -> None:
    from rich.table import Table

    from flamefit.bench.detected import REGIONS

    cols = rep["columns"]
    t = Table(title=f"Through the real detector, focal unknown ({rep['n']} photo-like renders, {rep['renders']}); "
                    "medians per column")
    keys = ["aligned_mm", "aligned_mean_mm", "meanhead_aligned_mm", *[f"{r}_mm" for r in REGIONS], "jaw_open_err_mm",
            "lip_gap_err_mm", "expression_err_mm", "scale", "depth_err_pct", "focal_err_pct", "nme_fit",
            "nme_detector"]
    t.add_column("median")
    for name in cols:
        t.add_column(name, justify="right")
    for k in keys:
        t.add_row(k, *[f"{c['median_' + k]:.3f}" if f"median_{k}" in c else "-" for c in cols.values()])
    console.print(t)
    for name, c in cols.items():
        console.print(f"{name}: mean over cases {c['mean_aligned_mm']:.3f} mm; worse than the mean head on "
                      f"{c['worse_than_meanhead']} of {len(c['cases'])}")
    if rep.get("detector_missed"):
        console.print(f"detector missed: {rep['detector_missed']}")
    console.print(f"worst 3 (detected): {rep.get('worst3')}; targets: {rep.get('targets_met')}")
