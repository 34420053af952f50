"""Small image helpers shared by the MediaPipe glue (:mod:`flamefit.observe.landmarks`) and the blendshape
measurement (:mod:`flamefit.observe.blendshapes`): quiet C++ logs, square crops, quarter-turn rotations, box IoU."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the C++ log lines MediaPipe/TFLite print when a graph first runs (they are not errors)."""
    if os.environ.get("FLAMEFIT_MEDIAPIPE_LOGS"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. pytest capture without a real fd
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    shrink = width < img.shape[1] or height < img.shape[0]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _square_crop(img: np.ndarray, cx: float, cy: float, side: float, out_px: int):
    """Square crop (padded with black outside the image) resized to ``out_px``.

    Returns the crop and (x0, y0, scale) with ``crop_px = (img_px - (x0, y0)) * scale``.
    """
    side_i = max(int(round(side)), 4)
    x0 = int(round(cx - side_i / 2))
    y0 = int(round(cy - side_i / 2))
    h, w = img.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side_i, w), min(y0 + side_i, h)
    if xa >= xb or ya >= yb:
        return None, None
    patch = img[ya:yb, xa:xb]
    if (xa, ya, xb, yb) != (x0, y0, x0 + side_i, y0 + side_i):
        full = np.zeros((side_i, side_i, 3), dtype=img.dtype)
        full[ya - y0:yb - y0, xa - x0:xb - x0] = patch
        patch = full
    crop = _resize(np.ascontiguousarray(patch), out_px, out_px)
    return crop, (float(x0), float(y0), out_px / side_i)


def _rot_image(img: np.ndarray, k: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(img, k)) if k % 4 else img


def _unrotate_points(pts: np.ndarray, k: int, orig_hw: tuple[int, int]) -> np.ndarray:
    """Points in the frame of ``np.rot90(img, k)`` -> points in ``img`` (pixel-corner coordinates)."""
    h, w = orig_hw
    x, y = pts[..., 0], pts[..., 1]
    k %= 4
    if k == 0:
        return pts
    if k == 1:  # rotated[i, j] = img[j, w-1-i]: (x, y) in img -> (y, w - x)
        return np.stack([w - y, x], axis=-1)
    if k == 2:
        return np.stack([w - x, h - y], axis=-1)
    return np.stack([y, h - x], axis=-1)  # k == 3


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
