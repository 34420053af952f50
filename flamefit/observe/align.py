"""FFHQ-style face alignment ("realign"): a rotated square around the face, scaled to ``size`` pixels.

The square is the one of the FFHQ dataset script (Karras et al. 2019): centred a little below the eyes'
midpoint, oriented by the eye-to-eye and eye-to-mouth vectors, with side ``2 * max(2.0 * eye distance,
1.8 * eye-to-mouth distance)``. :func:`align_face` returns the aligned image and the (2, 3) similarity
transform from original-image pixels to aligned pixels (pixel-corner coordinates, the library's convention),
so every result on the aligned image maps back with :func:`apply_inverse`.
"""

from __future__ import annotations

import numpy as np

from flamefit.ibug68 import LEFT_EYE, RIGHT_EYE


def ffhq_quad(lmks: np.ndarray) -> np.ndarray:
    """The FFHQ crop square (4, 2): top-left, bottom-left, bottom-right, top-right corners, in image pixels.

    ``lmks``: (68, 2) iBUG points or (478, 2) MediaPipe points (mapped to 68 first).
    """
    pts = np.asarray(lmks, dtype=np.float64)
    if pts.shape == (478, 2):
        from flamefit.observe.mp68 import dense_to_68

        pts = dense_to_68(pts)
    if pts.shape != (68, 2):
        raise ValueError(f"align_face expects (68, 2) or (478, 2) landmarks, got {pts.shape}")
    eye_left = pts[RIGHT_EYE].mean(0)  # image left: the subject's right eye
    eye_right = pts[LEFT_EYE].mean(0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (pts[48] + pts[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * (-1, 1)
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * (-1, 1)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_transform(quad: np.ndarray, size: int) -> np.ndarray:
    """The (2, 3) similarity mapping the quad's corners to the corners of a ``size`` x ``size`` image."""
    src = np.asarray(quad, dtype=np.float64)[[0, 1, 3]]  # top-left, bottom-left, top-right
    dst = np.array([[0.0, 0.0], [0.0, size], [size, 0.0]])
    a = np.concatenate([src, np.ones((3, 1))], axis=1)
    return np.linalg.solve(a, dst).T  # rows: x' and y' as functions of (x, y, 1)


def align_face(image: np.ndarray, lmks: np.ndarray, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Crop and scale the face to the FFHQ framing.

    ``image``: (H, W, 3) float 0..1 (or uint8, returned as such); ``lmks``: (68, 2) or (478, 2) pixels.
    Returns ``(aligned (size, size, 3), transform (2, 3))`` with ``aligned_px = transform @ [x, y, 1]``.
    Outside the image the border is mirrored (as FFHQ does), so no black corners appear.
    """
    import cv2

    transform = quad_transform(ffhq_quad(lmks), size)
    src = np.ascontiguousarray(image)
    # shrinking a lot: pre-shrink with area averaging (warpAffine alone would alias)
    scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    pre = 1.0
    if scale < 0.5:
        pre = 1.0 / np.floor(1.0 / scale)
        h, w = src.shape[:2]
        src = cv2.resize(src, (max(int(round(w * pre)), 1), max(int(round(h * pre)), 1)),
                         interpolation=cv2.INTER_AREA)
    m = transform.copy()
    if pre != 1.0:
        m[:, :2] = m[:, :2] / pre
    aligned = cv2.warpAffine(src, _to_cv(m), (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
    return aligned, transform


def apply_transform(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Map (..., 2) points with a (2, 3) affine transform."""
    pts = np.asarray(points, dtype=np.float64)
    t = np.asarray(transform, dtype=np.float64)
    return pts @ t[:, :2].T + t[:, 2]


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """The inverse of a (2, 3) affine transform."""
    t = np.asarray(transform, dtype=np.float64)
    a_inv = np.linalg.inv(t[:, :2])
    return np.concatenate([a_inv, -(a_inv @ t[:, 2])[:, None]], axis=1)


def apply_inverse(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Map (..., 2) points from the aligned image back to the original image."""
    return apply_transform(points, invert_transform(transform))


def warp_back(aligned_map: np.ndarray, transform: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Resample a map computed on the aligned image (mask, probabilities) into the original image frame."""
    import cv2

    h, w = shape_hw
    out = cv2.warpAffine(np.ascontiguousarray(aligned_map), _to_cv(invert_transform(transform)), (w, h),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def _to_cv(m: np.ndarray) -> np.ndarray:
    """Pixel-corner affine -> OpenCV's pixel-centre convention: p_c' = M (p_c + 0.5) - 0.5."""
    out = np.asarray(m, dtype=np.float64).copy()
    out[:, 2] = out[:, 2] + out[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return out
