"""Skin masks for the photometric loss: where the image shows the face's own skin.

:func:`skin_mask` (default backend ``'landmarks'``):

1. the face region from the landmarks: the face oval, minus the eyes, brows, mouth interior and nostrils
   (each cut-out slightly enlarged: lashes, brow hair and lip edges are not skin);
2. robust skin-colour statistics of that region in CIE Lab: the expected colour is a linear function of the
   position (the smooth shading gradient across a face), fitted by trimmed least squares (median/MAD
   trimming); the inliers' covariance scores every pixel (Mahalanobis distance, lightness down-weighted), so
   shading stays in while hair, glasses, hands and microphones whose colour differs from the skin drop out.
   The lips get their own colour model (they are redder than the skin, and part of the albedo to fit);
3. a soft skin probability (logistic in the Mahalanobis distance), small specks removed, and soft edges
   (Gaussian blur proportional to the face size).

Limits: an occluder of exactly the face's skin colour (a hand of the same person, in the same light) cannot
be told apart by colour; use the BiSeNet backend (``backend='bisenet'`` with the face-parsing weights
``79999_iter.pth``) for such images.
"""

from __future__ import annotations

import numpy as np

from flamefit.observe import topology

# Soft threshold on the Mahalanobis distance of the skin-colour model (inliers: d < ~3).
_D0 = 4.5
_D_WIDTH = 0.45
# Lightness counts this much less than chroma (skin in shadow is darker, not differently coloured).
_L_WEIGHT = 0.5


def face_region_mask(shape_hw: tuple[int, int], lmks_dense: np.ndarray, *, holes: bool = True) -> np.ndarray:
    """Binary (H, W) float32 mask from the landmarks: face oval minus eyes, brows, mouth interior, nostrils.

    ``holes=False`` gives the filled face oval.
    """
    import cv2

    h, w = shape_hw
    pts = np.asarray(lmks_dense, dtype=np.float64)
    size = _face_size(pts)
    region = np.zeros((h, w), np.uint8)
    _fill(region, pts, topology.FACE_OVAL)
    if not holes:
        return (region > 0).astype(np.float32)
    cut = np.zeros((h, w), np.uint8)
    for loop in (topology.RIGHT_EYE, topology.LEFT_EYE, topology.RIGHT_BROW, topology.LEFT_BROW,
                 topology.LIPS_INNER, topology.RIGHT_NOSTRIL, topology.LEFT_NOSTRIL):
        _fill(cut, pts, loop)
    grow = max(int(round(0.025 * size)), 1)
    cut = cv2.dilate(cut, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return ((region > 0) & (cut == 0)).astype(np.float32)


def skin_mask(image: np.ndarray, lmks_dense: np.ndarray, *, backend: str = "landmarks",
              bisenet_weights=None, soft: bool = True) -> np.ndarray:
    """Skin probability (H, W) float32 in 0..1 for a face image.

    ``image``: (H, W, 3) RGB float 0..1 (or uint8). ``lmks_dense``: (478, 2) pixels of this image.
    ``backend``: ``'landmarks'`` (landmark region refined by skin colour, see the module docstring) or
    ``'bisenet'`` (face parsing; needs ``bisenet_weights``, the path of ``79999_iter.pth``).
    ``soft``: blur the edges (for the photometric loss); ``False`` gives the hard 0/1 mask.
    """
    import cv2

    from flamefit.errors import ConfigError
    from flamefit.observe.image import to_float_rgb

    img = to_float_rgb(image)
    pts = np.asarray(lmks_dense, dtype=np.float64)
    if pts.shape != (478, 2):
        raise ValueError(f"skin_mask expects (478, 2) landmarks, got {pts.shape}")
    h, w = img.shape[:2]
    # work on a crop around the face: cost independent of the image size
    size = _face_size(pts)
    x0 = int(max(np.floor(pts[:, 0].min() - 0.1 * size), 0))
    y0 = int(max(np.floor(pts[:, 1].min() - 0.1 * size), 0))
    x1 = int(min(np.ceil(pts[:, 0].max() + 0.1 * size), w))
    y1 = int(min(np.ceil(pts[:, 1].max() + 0.1 * size), h))
    out = np.zeros((h, w), np.float32)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    crop = img[y0:y1, x0:x1]
    local = pts - (x0, y0)

    if backend == "landmarks":
        region = face_region_mask(crop.shape[:2], local)
        lips = _lips_mask(crop.shape[:2], local) * region
        skin = region * (1.0 - lips)
        # lips are redder than the skin: they get their own colour model (each scored only where it is used)
        lab, basis = _lab_and_basis(crop, size)
        mask = skin * _colour_refine(lab, basis, skin, size) + \
            lips * _colour_refine(lab, basis, lips, size, core_erode=0.0)
    elif backend == "bisenet":
        if bisenet_weights is None:
            raise ConfigError("skin_mask(backend='bisenet') needs bisenet_weights= the path of 79999_iter.pth.")
        from flamefit.observe.align import align_face, warp_back
        from flamefit.observe.bisenet import parse_skin

        # the parser was trained on aligned 512 px portraits: parse the FFHQ-aligned face, map the result back
        aligned, transform = align_face(img, pts, size=512)
        parsed = warp_back(parse_skin(aligned, bisenet_weights), transform, (h, w))[y0:y1, x0:x1]
        region = face_region_mask(crop.shape[:2], local, holes=False)
        mask = parsed * _dilate(region, max(int(0.06 * size), 1))
    else:
        raise ConfigError(f"Unknown skin-mask backend {backend!r}; use 'landmarks' or 'bisenet'.")

    mask = _clean(mask, size)
    if soft:
        sigma = max(0.012 * size, 0.7)
        # shrink a little before blurring so the soft edge stays on the skin side
        mask = cv2.GaussianBlur(_erode(mask, max(int(round(0.5 * sigma)), 1)), (0, 0), sigma)
    out[y0:y1, x0:x1] = np.clip(mask, 0.0, 1.0)
    return out


def _face_size(pts: np.ndarray) -> float:
    oval = pts[list(topology.FACE_OVAL)]
    span = oval.max(0) - oval.min(0)
    return float(max(np.sqrt(max(span[0], 1e-6) * max(span[1], 1e-6)), 1.0))


def _fill(canvas: np.ndarray, pts: np.ndarray, loop) -> None:
    import cv2

    shift = 4  # sub-pixel polygon vertices
    poly = np.round(pts[list(loop)] * (1 << shift) - 0.5 * (1 << shift)).astype(np.int32)
    cv2.fillPoly(canvas, [poly], 255, lineType=cv2.LINE_8, shift=shift)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    return cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))


def _lips_mask(shape_hw: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    outer = np.zeros(shape_hw, np.uint8)
    _fill(outer, pts, topology.LIPS_OUTER)
    return (outer > 0).astype(np.float32)


def _lab_and_basis(crop: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """The crop's pixels in Lab (N,3) and the position basis [1, x, y] (N,3) of the colour models."""
    import cv2

    h, w = crop.shape[:2]
    lab = cv2.cvtColor(np.ascontiguousarray(crop, dtype=np.float32), cv2.COLOR_RGB2LAB)
    lab = lab.reshape(-1, 3).astype(np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    basis = np.stack([np.ones(h * w), (xx.reshape(-1) - w / 2) / size, (yy.reshape(-1) - h / 2) / size], axis=1)
    return lab, basis


def _colour_refine(lab: np.ndarray, basis: np.ndarray, region: np.ndarray, size: float,
                   core_erode: float = 0.04) -> np.ndarray:
    """Per-pixel probability that a pixel has the colour of ``region`` (robust statistics of its core), on the
    pixels of ``region`` (0 elsewhere: callers multiply by the region). ``lab``/``basis``: :func:`_lab_and_basis`.

    The expected colour is a robust linear function of the position (it absorbs the smooth shading gradient
    across the face), fitted by iteratively trimmed least squares in Lab; pixels are scored by the Mahalanobis
    distance of their residual (lightness down-weighted) under the inliers' covariance.
    """
    core = region.reshape(-1) > 0.5
    if core_erode > 0:
        eroded = _erode(region, max(int(round(core_erode * size)), 1)).reshape(-1) > 0.5
        if eroded.sum() >= 50:
            core = eroded
    if core.sum() < 10:
        return np.ones(region.shape, np.float32)
    sample, b_core = lab[core], basis[core]
    med = np.median(sample, axis=0)
    inl = np.all(np.abs(sample - med) < 2.5 * (_mad(sample - med) + 1e-3), axis=1)
    coef = np.zeros((3, 3))
    coef[0] = med
    for _ in range(3):
        if inl.sum() < 10:
            break
        coef, *_ = np.linalg.lstsq(b_core[inl], sample[inl], rcond=None)
        res = sample - b_core @ coef
        rmed = np.median(res[inl], axis=0)
        inl = np.all(np.abs(res - rmed) < 2.5 * (_mad(res[inl] - rmed) + 1e-3), axis=1)
    weight = np.array([_L_WEIGHT, 1.0, 1.0])
    res = (sample[inl] - b_core[inl] @ coef) * weight if inl.sum() >= 10 else (sample - med) * weight
    # the inliers are trimmed at 2.5 MAD: inflate their covariance, and keep it well conditioned
    cov = np.cov(res.T) * 1.3 + np.eye(3) * 0.5**2
    where = region.reshape(-1) > 0
    r = (lab[where] - basis[where] @ coef) * weight
    d = np.sqrt(np.einsum("ni,ij,nj->n", r, np.linalg.inv(cov), r))
    prob = np.zeros(region.size, np.float32)
    prob[where] = 0.5 - 0.5 * np.tanh((d - _D0) / (2 * _D_WIDTH))  # logistic, without overflow
    return prob.reshape(region.shape)


def _mad(x: np.ndarray) -> np.ndarray:
    return np.median(np.abs(x - np.median(x, axis=0)), axis=0) * 1.4826


def _clean(mask: np.ndarray, size: float) -> np.ndarray:
    """Remove specks: a morphological opening of the hard mask, applied to the soft one."""
    import cv2

    r = max(int(round(0.012 * size)), 1)
    hard = (mask > 0.5).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    opened = cv2.morphologyEx(hard, cv2.MORPH_OPEN, k)
    # drop islands much smaller than the face (e.g. a skin-coloured patch on a sleeve inside the oval)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    keep = np.zeros(n, bool)
    if n > 1:
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep[1:] = areas >= max(0.01 * size * size, 4)
    return (mask * keep[labels]).astype(np.float32)
