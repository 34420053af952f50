"""`flamefit bench landmarks68`: the 68 model landmarks derived from MediaPipe's 478 vs RingNet's embedding.

Needs the development assets (``--assets``, default ``../shared/assets`` or ``$FLAMEFIT_SHARED_ASSETS``): the
stand-in model (FLAME topology), RingNet's embedding, and the FFHQ images with FAN 68-point references.

* geometry on the stand-in's neutral template: distance (mm) of the derived 51 inner points to RingNet's, per
  group; of the 17 contour points to RingNet's, per yaw bin (mean over all 79 bins, the frontal bin, |yaw| >= 20);
* ``lmks_68_fit`` accuracy: each image is fitted twice with the same config and the same detections (free
  albedo, the model file's own UVs or the generated atlas), once with RingNet's embedding and once with the
  derived one; NME of the fit's projected 68 points against the FAN references, normalised by the reference
  outer-eye-corner distance (points 36 and 45), for all 68 points, the inner 51 and the contour 17
  (``--no-fit`` skips this part, ~10-40 s per fit on one CPU thread).
"""

from __future__ import annotations

import time

import click
import numpy as np
import torch

from flamefit.ibug68 import GROUPS, INNER, JAW, OUTER_EYE_CORNERS


def _assets(assets: str | None):
    from flamefit.bench.common import shared_assets_dir

    return shared_assets_dir(assets)


def _nme(pred: np.ndarray, ref: np.ndarray, idx=range(68)) -> float:
    a, b = OUTER_EYE_CORNERS
    idx = list(idx)
    return float(np.linalg.norm(pred[idx] - ref[idx], axis=1).mean() / np.linalg.norm(ref[a] - ref[b]))


def geometry(model, ringnet, derived) -> dict:
    """Distances (mm) between two Landmarks68 on ``model``'s neutral template."""
    from flamefit.fit.derived68 import N_YAW_BINS, bin_yaw_deg

    with torch.no_grad():
        verts = model().vertices[:1].double()
    faces = model.faces
    static = np.linalg.norm(derived.static.project(verts, faces)[0].numpy()
                            - ringnet.static.project(verts, faces)[0].numpy(), axis=1) * 1000
    out = {"static51_mean_mm": float(static.mean()), "static51_median_mm": float(np.median(static)),
           "static51_max_mm": float(static.max())}
    for name, group in GROUPS.items():
        sel = [i - 17 for i in range(68)[group] if i >= 17]
        if sel:
            out[f"static_{name}_mean_mm"] = float(static[sel].mean())
    bins = np.arange(N_YAW_BINS)
    yaw = torch.tensor(np.radians(bin_yaw_deg(bins)), dtype=verts.dtype)
    v = verts.expand(N_YAW_BINS, -1, -1)
    contour = np.linalg.norm(derived.project(v, faces, yaw)[:, :17].numpy()
                             - ringnet.project(v, faces, yaw)[:, :17].numpy(), axis=2) * 1000  # (79,17)
    out["contour_mean_mm"] = float(contour.mean())
    out["contour_frontal_mean_mm"] = float(contour[0].mean())
    out["contour_yaw20plus_mean_mm"] = float(contour[np.abs(bin_yaw_deg(bins)) >= 20].mean())
    return out


def run(assets: str | None = None, n_images: int = 10, fit: bool = True, overrides: tuple[str, ...] = (),
        log=None) -> dict:
    from flamefit.fit.api import target_from_input
    from flamefit.fit.config import FitConfig, apply_dict, parse_override
    from flamefit.fit.correspondence import dense_correspondence
    from flamefit.fit.derived68 import landmarks68_from_dense
    from flamefit.fit.fitter import Fitter
    from flamefit.fit.result import make_result
    from flamefit.model.flame import load_flame
    from flamefit.model.landmarks import load_ringnet_68

    root = _assets(assets)
    model_path = root / "flame_standin" / "standin_flame2023.pkl"
    emb = root / "flame_landmarks"
    model = load_flame(model_path)
    ringnet = load_ringnet_68(emb / "flame_static_embedding.pkl", emb / "flame_dynamic_embedding.npy")
    dense = dense_correspondence(model)
    t0 = time.perf_counter()
    derived = landmarks68_from_dense(dense, model)
    report = {"derive_or_cached_s": time.perf_counter() - t0, "model": str(model_path), "uv": model.uv.source,
              **geometry(model, ringnet, derived)}
    if not fit:
        return report
    cfg = FitConfig()
    for text in overrides:
        cfg = apply_dict(cfg, parse_override(text))
    fitters = {name: Fitter(load_flame(model_path), landmarks68=lmk, dense_landmarks=dense, config=cfg)
               for name, lmk in (("ringnet", ringnet), ("derived", derived))}
    images = sorted((root / "images" / "ffhq_256").glob("*.png"))[:n_images]
    per = {name: {"all": [], "inner": [], "jaw": []} for name in fitters}
    det = []
    seconds = {name: 0.0 for name in fitters}
    for path in images:
        ref = np.load(root / "images" / "ffhq_256" / "landmarks68" / f"{path.stem}.npy")
        target = target_from_input(path)
        if target.lmks_68 is not None:
            det.append(_nme(np.asarray(target.lmks_68), ref))
        for name, fitter in fitters.items():
            t = time.perf_counter()
            result = make_result(fitter, fitter.fit(target))
            seconds[name] += time.perf_counter() - t
            pred = np.asarray(result.lmks_68_fit)
            for key, idx in (("all", range(68)), ("inner", INNER), ("jaw", JAW)):
                per[name][key].append(_nme(pred, ref, idx))
            if log:
                log(f"{path.name} {name}: NME {per[name]['all'][-1]:.4f}")
    report["images"] = len(images)
    report["nme_detected_68"] = float(np.mean(det)) if det else None
    for name in fitters:
        for key, vals in per[name].items():
            report[f"nme_fit_{name}_{key}"] = float(np.mean(vals))
        report[f"fit_s_per_image_{name}"] = seconds[name] / max(len(images), 1)
    return report


@click.command(name="landmarks68")
@click.option("--assets", type=click.Path(file_okay=False), help="The shared/assets folder.")
@click.option("--images", "n_images", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many FFHQ images to fit.")
@click.option("--no-fit", is_flag=True, help="Only the geometric comparison (a few seconds).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Fit config override (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(assets, n_images, no_fit, overrides, as_json) -> None:
    """Derived vs RingNet 68-point model landmarks: geometry (mm) and lmks_68_fit NME on the FFHQ images."""
    from flamefit.bench.common import emit, environment

    report = run(assets, n_images, fit=not no_fit, overrides=tuple(overrides),
                 log=None if as_json else lambda s: click.echo(s, err=True))
    report["environment"] = environment()
    rows = [{"what": k, "value": f"{v:.4f}" if isinstance(v, float) else str(v)} for k, v in report.items()
            if k != "environment"]
    emit(report, rows, ["what", "value"], "68-point model landmarks: derived vs RingNet", as_json)
