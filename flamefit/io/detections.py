"""Write detections (``flamefit detect``): ``NAME.npz`` (``lmks_dense`` (478,2), ``lmks_68`` (68,2) in pixels of
the original image, ``mask`` (H,W) float32, ``confidence``, ``bbox``, ``image_size``), optionally
``NAME_overlay.png``, as one atomic set with a completion record (see :mod:`flamefit.io.outputs`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from flamefit.io.outputs import OutputSet, save_npz
from flamefit.io.results import check_finite_arrays


def draw_overlay(image, lmks_dense, lmks_68=None, mask=None):
    """uint8 RGB picture: the skin mask tinted green, the 478 points (small) and the 68 points (red)."""
    import cv2

    img = np.asarray(image)
    vis = img.copy() if img.dtype == np.uint8 else (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if mask is not None:
        tint = np.array([40, 220, 80], np.float32)
        a = (0.35 * np.clip(mask, 0, 1))[:, :, None]
        vis = (vis * (1 - a) + tint * a).astype(np.uint8)
    size = float(np.ptp(lmks_dense[:, 0])) if len(lmks_dense) else 100.0
    r_small = max(int(round(size / 200)), 1)
    r_big = max(int(round(size / 100)), 2)
    for x, y in np.asarray(lmks_dense):
        cv2.circle(vis, (int(x), int(y)), r_small, (255, 255, 255), -1, lineType=cv2.LINE_AA)
    if lmks_68 is not None:
        for x, y in np.asarray(lmks_68):
            cv2.circle(vis, (int(x), int(y)), r_big, (255, 40, 40), -1, lineType=cv2.LINE_AA)
    return vis


def save_detection(obs, out_dir: str | Path, name: str, overlay: bool = True, mask: bool = True,
                   overwrite: bool = True, source: str = "") -> dict[str, Path] | None:
    """Write one observation's files; returns the published paths (None: another run finished it meanwhile)."""
    from PIL import Image

    arrays = obs.to_npz_dict()
    check_finite_arrays(arrays, name)
    kinds = ["npz"] + (["overlay"] if overlay else [])
    with OutputSet(out_dir, name, kind="detect", source=source, overwrite=overwrite) as outs:
        save_npz(outs.path(f"{name}.npz"), arrays)
        if overlay:
            vis = draw_overlay(obs.image, obs.lmks_dense, obs.lmks_68, obs.mask if mask else None)
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(vis)).save(buf, format="PNG")
            outs.write_bytes(f"{name}_overlay.png", buf.getvalue())
        if not outs.publish(outputs=kinds):
            return None
        return dict(outs.published)
