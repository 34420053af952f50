"""FFHQ-style alignment: canonical framing, and a transform that maps results back exactly."""

from __future__ import annotations

import numpy as np

from flamefit.observe.align import align_face, apply_inverse, apply_transform, ffhq_quad, invert_transform


def test_ffhq_images_are_already_aligned(ffhq_detections):
    """The shared FFHQ crops were made with this framing: aligning them again is nearly the identity."""
    scales = []
    for _, img, det, _ in ffhq_detections:
        _, t = align_face(img, det.lmks_dense, size=256)
        a = t[:, :2]
        scales.append(np.sqrt(abs(np.linalg.det(a))))
        angle = np.degrees(np.arctan2(a[1, 0], a[0, 0]))
        assert abs(angle) < 4
        assert np.abs(apply_transform(np.array([128.0, 128.0]), t) - 128).max() < 6
    # measured: 0.92..1.01, and 1.16 for 00005 (a microphone hides the mouth corners)
    assert abs(np.median(scales) - 1) < 0.03
    assert max(abs(s - 1) for s in scales) < 0.2


def test_transform_round_trip_and_pixel_convention():
    rng = np.random.default_rng(0)
    img = np.zeros((300, 400, 3), np.float32)
    # synthetic "landmarks" of a tilted face
    from flamefit.observe.mp68 import N_68

    lm = np.zeros((N_68, 2))
    ang = np.radians(20)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    base = {36: (-40, 0), 39: (-15, 0), 42: (15, 0), 45: (40, 0), 48: (-25, 60), 54: (25, 60)}
    for i, (x, y) in base.items():
        lm[i] = rot @ (x, y) + (200, 140)
    for lo, hi, a, b in ((36, 42, 36, 39), (42, 48, 42, 45)):
        lm[lo:hi] = np.linspace(lm[a], lm[b], hi - lo)
    # a bright 3x3 spot centred on pixel (210, 150) -> continuous position (210.5, 150.5)
    img[149:152, 209:212] = 1.0
    aligned, t = align_face(img, lm, size=256)
    spot = np.argwhere(aligned[..., 0] > 0.2)
    w = aligned[spot[:, 0], spot[:, 1], 0]
    centre = (spot[:, ::-1] + 0.5).T @ w / w.sum()
    np.testing.assert_allclose(centre, apply_transform(np.array([210.5, 150.5]), t), atol=0.3)
    pts = rng.uniform(0, 300, (10, 2))
    np.testing.assert_allclose(apply_inverse(apply_transform(pts, t), t), pts, atol=1e-9)
    np.testing.assert_allclose(invert_transform(invert_transform(t)), t, atol=1e-9)
    # the eyes end up level in the aligned image
    eyes = apply_transform(np.stack([lm[36:42].mean(0), lm[42:48].mean(0)]), t)
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-6


def test_large_image_is_shrunk_without_aliasing(ffhq_detections):
    import cv2

    _, img, det, _ = ffhq_detections[3]
    big = cv2.resize(img, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    small_aligned, _ = align_face(img, det.lmks_dense, size=128)
    big_aligned, t = align_face(big, det.lmks_dense * 8, size=128)
    assert np.abs(small_aligned - big_aligned).mean() < 0.02
    quad = ffhq_quad(det.lmks_dense * 8)
    np.testing.assert_allclose(apply_transform(quad[0], t), [0, 0], atol=1e-6)
    np.testing.assert_allclose(apply_transform(quad[2], t), [128, 128], atol=1e-6)
