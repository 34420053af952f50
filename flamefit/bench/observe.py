"""`flamefit bench observe`: landmark accuracy (NME), skin-mask IoU, detection time, FLAME correspondence error.

Needs the development assets (``--assets``, default ``../shared/assets`` or ``$FLAMEFIT_SHARED_ASSETS``):

* NME of our 68 points (``MP_TO_68`` of MediaPipe's 478) against the FAN 68-point references of the FFHQ images,
  normalised by the reference outer-eye-corner distance (points 36-45); also for the reference
  MediaPipe->68 table of ``mediapipe_to_68/mp2dlib68.json``, for comparison;
* IoU of ``skin_mask`` (> 0.5) with the reference skin masks (> 0), and the share of our mask inside them;
* time of ``detect_landmarks`` and ``skin_mask`` per image;
* ``--correspondence``: the derived 478-point correspondence on the stand-in FLAME model, mapped to 68, against
  the RingNet 51 inner points (mean / max error per group, mm).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from flamefit.ibug68 import GROUPS, INNER, OUTER_EYE_CORNERS


def _assets(assets: str | None):
    from flamefit.bench.common import shared_assets_dir

    return shared_assets_dir(assets)


def _iod(ref: np.ndarray) -> float:
    a, b = OUTER_EYE_CORNERS
    return float(np.linalg.norm(ref[a] - ref[b]))


def _nme(pred: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(pred - ref, axis=1).mean() / _iod(ref))


def run(assets: str | None = None, correspondence: bool = False) -> dict:
    from flamefit.observe.image import load_image
    from flamefit.observe.landmarks import LandmarkDetector
    from flamefit.observe.mask import skin_mask
    from flamefit.observe.mp68 import dense_to_68

    root = _assets(assets)
    ffhq = root / "images" / "ffhq_256"
    ref_table = json.loads((root / "mediapipe_to_68" / "mp2dlib68.json").read_text())["mp_indices_per_dlib68"]
    images = []
    with LandmarkDetector() as det:
        det.detect(load_image(next(iter(sorted(ffhq.glob("*.png"))))))  # warm up the graphs
        for path in sorted(ffhq.glob("*.png")):
            img = load_image(path)
            t0 = time.perf_counter()
            d = det.detect(img, source=path.name)
            t1 = time.perf_counter()
            mask = skin_mask(img, d.lmks_dense)
            t2 = time.perf_counter()
            ref = np.load(ffhq / "landmarks68" / f"{path.stem}.npy")
            ours = dense_to_68(d.lmks_dense.astype(np.float64))
            theirs = np.array([d.lmks_dense[idx].mean(0) for idx in ref_table])
            row = {"image": path.stem, "nme": _nme(ours, ref), "nme_reference_table": _nme(theirs, ref),
                   "confidence": float(d.confidence), "detect_ms": 1000 * (t1 - t0), "mask_ms": 1000 * (t2 - t1)}
            iod = _iod(ref)
            for name, sl in GROUPS.items():
                row[f"nme_{name}"] = float(np.linalg.norm(ours[sl] - ref[sl], axis=1).mean() / iod)
            ref_mask_path = ffhq / "skin_masks" / f"{path.stem}.npy"
            if ref_mask_path.is_file():
                rm = np.load(ref_mask_path) > 0
                om = mask > 0.5
                row["mask_iou"] = float((om & rm).sum() / max((om | rm).sum(), 1))
                row["mask_precision"] = float((om & rm).sum() / max(om.sum(), 1))
            images.append(row)
    report = {
        "benchmark": "observe",
        "images": images,
        "median_nme": float(np.median([r["nme"] for r in images])),
        "median_nme_reference_table": float(np.median([r["nme_reference_table"] for r in images])),
        "mean_mask_iou": float(np.mean([r["mask_iou"] for r in images if "mask_iou" in r])),
        "mean_mask_precision": float(np.mean([r["mask_precision"] for r in images if "mask_precision" in r])),
        "median_detect_ms": float(np.median([r["detect_ms"] for r in images])),
        "median_mask_ms": float(np.median([r["mask_ms"] for r in images])),
    }
    if correspondence:
        report["correspondence"] = _correspondence(root)
    from flamefit.bench.common import environment

    report["environment"] = environment()
    return report


def _correspondence(root: Path) -> dict:
    import tempfile

    import torch

    from flamefit.fit.correspondence import dense_correspondence
    from flamefit.model import load_flame, load_ringnet_68
    from flamefit.observe.mp68 import MP_TO_68

    model = load_flame(root / "flame_standin" / "standin_flame2023.pkl")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        lmks = dense_correspondence(model, cache_dir=tmp)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        verts = model().vertices
    ours = MP_TO_68 @ lmks.project(verts, model.faces)[0].numpy()
    emb = root / "flame_landmarks"
    ringnet = load_ringnet_68(emb / "flame_static_embedding.pkl", emb / "flame_dynamic_embedding.npy")
    ref = ringnet.project(verts, model.faces)[0].numpy()
    err = np.linalg.norm(ours - ref, axis=1) * 1000
    out = {"derive_seconds": seconds, "inner51_mean_mm": float(err[INNER].mean()),
           "inner51_max_mm": float(err[INNER].max())}
    for name, sl in GROUPS.items():
        key = "jaw_vs_frontal_contour" if name == "jaw" else name
        out[f"{key}_mean_mm"] = float(err[sl].mean())
        out[f"{key}_max_mm"] = float(err[sl].max())
    return out


@click.command(name="observe")
@click.option("--assets", type=click.Path(file_okay=False), help="The shared/assets folder.")
@click.option("--correspondence", is_flag=True, help="Also derive the FLAME correspondence (~10 s).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(assets, correspondence, as_json) -> None:
    """Landmark NME and skin-mask IoU on the shared FFHQ images (and the FLAME correspondence error)."""
    from flamefit.bench.common import emit

    report = run(assets, correspondence)
    rows = [{"image": r["image"], "nme_%": 100 * r["nme"], "nme_ref_table_%": 100 * r["nme_reference_table"],
             "mask_iou": r.get("mask_iou", float("nan")), "confidence": r["confidence"],
             "detect_ms": r["detect_ms"], "mask_ms": r["mask_ms"]} for r in report["images"]]
    rows.append({"image": "median/mean", "nme_%": 100 * report["median_nme"],
                 "nme_ref_table_%": 100 * report["median_nme_reference_table"], "mask_iou": report["mean_mask_iou"],
                 "confidence": float("nan"), "detect_ms": report["median_detect_ms"],
                 "mask_ms": report["median_mask_ms"]})
    emit(report, rows, ["image", "nme_%", "nme_ref_table_%", "mask_iou", "confidence", "detect_ms", "mask_ms"],
         "flamefit bench observe (NME in % of the outer-eye-corner distance; IoU vs reference skin masks)",
         as_json)
    if not as_json and "correspondence" in report:
        c = report["correspondence"]
        click.echo("FLAME correspondence vs RingNet (mm): " + ", ".join(
            f"{k.removesuffix('_mm')} {v:.2f}" for k, v in c.items() if k.endswith("_mm")))
