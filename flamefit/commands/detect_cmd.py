"""`flamefit detect IMAGE... --out DIR`: 478/68 landmarks and skin masks for images.

Per image it writes ``NAME.npz`` (``lmks_dense`` (478,2), ``lmks_68`` (68,2) in pixels of the original image,
``mask`` (H,W) float32, ``confidence``, ``bbox``, ``image_size``) and ``NAME_overlay.png``. With ``--json`` it
prints one JSON object with the landmarks of every image on stdout. An image that fails is reported and the
others go on; the exit status is non-zero when any failed.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from flamefit.commands._common import unique_stems


def _parse_select(value: str) -> str | int:
    if value == "largest":
        return value
    try:
        return int(value)
    except ValueError as exc:
        raise click.BadParameter("use 'largest' or a face index (0 = left-most face)") from exc


def draw_overlay(image, lmks_dense, lmks_68=None, mask=None):
    """uint8 RGB picture: the skin mask tinted green, the 478 points (small) and the 68 points (red)."""
    import cv2
    import numpy as np

    from flamefit.observe.image import to_uint8

    vis = to_uint8(image).copy()
    if mask is not None:
        tint = np.array([40, 220, 80], np.float32)
        a = (0.35 * np.clip(mask, 0, 1))[:, :, None]
        vis = (vis * (1 - a) + tint * a).astype(np.uint8)
    h, w = vis.shape[:2]
    size = float(np.ptp(lmks_dense[:, 0])) if len(lmks_dense) else 100.0
    r_small = max(int(round(size / 200)), 1)
    r_big = max(int(round(size / 100)), 2)
    for x, y in np.asarray(lmks_dense):
        cv2.circle(vis, (int(x), int(y)), r_small, (255, 255, 255), -1, lineType=cv2.LINE_AA)
    if lmks_68 is not None:
        for x, y in np.asarray(lmks_68):
            cv2.circle(vis, (int(x), int(y)), r_big, (255, 40, 40), -1, lineType=cv2.LINE_AA)
    return vis


@click.command(name="detect")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for NAME.npz and NAME_overlay.png (created if missing).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with all landmarks on stdout.")
@click.option("--select", default="largest", show_default=True,
              help="Which face: 'largest' or an index counted from the left (0-based).")
@click.option("--mask/--no-mask", default=True, show_default=True, help="Compute the skin mask.")
@click.option("--mask-backend", type=click.Choice(["landmarks", "bisenet"]), default="landmarks",
              show_default=True, help="Skin-mask method.")
@click.option("--bisenet-weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Face-parsing weights 79999_iter.pth (for --mask-backend bisenet).")
@click.option("--overlay/--no-overlay", default=True, show_default=True, help="Write NAME_overlay.png.")
def detect(images, out_dir, as_json, select, mask, mask_backend, bisenet_weights, overlay) -> None:
    """Detect MediaPipe's 478 landmarks, the 68 iBUG points and a skin mask in IMAGE files."""
    import numpy as np

    from flamefit.errors import ConfigError, FlamefitError
    from flamefit.observe.image import save_image
    from flamefit.observe.landmarks import LandmarkDetector
    from flamefit.observe.observation import observe

    if out_dir is None and not as_json:
        raise ConfigError("Nowhere to put the results: give --out DIR (files) and/or --json (stdout).")
    face = _parse_select(select)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    results, failures = [], []
    with LandmarkDetector() as detector:
        for path, stem in zip(images, unique_stems(list(images)), strict=True):
            entry: dict = {"source": str(path)}
            try:
                obs = observe(path, select=face, mask=mask, mask_backend=mask_backend,
                              bisenet_weights=bisenet_weights, detector=detector)
            except FlamefitError as exc:
                failures.append(exc)
                entry.update(ok=False, error=str(exc), error_type=type(exc).__name__)
                click.echo(f"failed {path}: {exc}", err=True)
                results.append(entry)
                continue
            entry.update(ok=True, confidence=round(float(obs.confidence), 4),
                         image_size=list(obs.image_size), bbox=[round(float(v), 2) for v in obs.bbox])
            if out_dir is not None:
                npz = out_dir / f"{stem}.npz"
                np.savez_compressed(npz, **obs.to_npz_dict())
                entry["npz"] = str(npz)
                if overlay:
                    png = out_dir / f"{stem}_overlay.png"
                    save_image(png, draw_overlay(obs.image, obs.lmks_dense, obs.lmks_68,
                                                 obs.mask if mask else None))
                    entry["overlay"] = str(png)
            if as_json:
                entry["lmks_dense"] = np.round(obs.lmks_dense.astype(np.float64), 3).tolist()
                entry["lmks_68"] = np.round(obs.lmks_68.astype(np.float64), 3).tolist()
            else:
                where = f" -> {entry['npz']}" if "npz" in entry else ""
                click.echo(f"ok     {path}: 478 points, confidence {obs.confidence:.2f}{where}")
            results.append(entry)
    if as_json:
        click.echo(json.dumps({"images": results, "n_ok": len(results) - len(failures), "n_failed": len(failures)}))
    if failures:
        first = failures[0]
        kinds = {type(f) for f in failures}
        cls = type(first) if len(kinds) == 1 else FlamefitError
        raise cls(f"{len(failures)} of {len(results)} image(s) failed; first: {first}")
