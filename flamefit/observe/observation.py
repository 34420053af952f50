"""What the fitter measures in one image: :class:`Observation`, and :func:`observe` that makes it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flamefit.observe.blendshapes import Expression
from flamefit.observe.image import exif_focal_px, load_image, to_float_rgb
from flamefit.observe.landmarks import Detection, LandmarkDetector, default_detector, detect_landmarks
from flamefit.observe.mask import skin_mask
from flamefit.observe.mp68 import dense_to_68


@dataclass
class Observation:
    """Measurements of one face in one image; all coordinates in pixels of ``image`` (the original image).

    ``image`` (H, W, 3) float32 RGB 0..1; ``lmks_dense`` (478, 2) float32 MediaPipe points (x, y);
    ``lmks_68`` (68, 2) float32 iBUG points (``MP_TO_68 @ lmks_dense``); ``confidence`` the face detector's
    score (0..1); ``mask`` (H, W) float32 skin probability 0..1 (all ones when masks were switched off);
    ``source`` the file name or a label; ``bbox`` (4,) x0, y0, x1, y1 of the landmarks; ``transform`` (2, 3)
    maps original-image pixels to the pixels of ``image`` (identity: ``observe`` keeps the original image).

    From MediaPipe's FaceLandmarker (:mod:`flamefit.observe.blendshapes`), each ``None`` when absent, with the
    reason under its name in ``missing``: ``blendshape_scores`` (52,) float32 in 0..1, ``blendshape_names`` the
    52 MediaPipe names in the same order, ``face_transform`` (4, 4) float64 MediaPipe's facial transformation
    matrix (canonical face, centimetres -> MediaPipe's virtual camera of this image, OpenGL convention).
    ``exif_focal_px``: the focal length (pixels of ``image``) the file's EXIF gives, None without one
    (:func:`flamefit.observe.image.exif_focal_px`).
    """

    image: np.ndarray
    lmks_dense: np.ndarray
    lmks_68: np.ndarray
    confidence: float
    mask: np.ndarray
    source: str = "<image>"
    bbox: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    transform: np.ndarray = field(default_factory=lambda: np.eye(2, 3, dtype=np.float64))
    blendshape_scores: np.ndarray | None = None
    blendshape_names: list[str] | None = None
    face_transform: np.ndarray | None = None
    exif_focal_px: float | None = None
    missing: dict[str, str] = field(default_factory=dict)
    faces_found: int = 1  # faces the detector found in the image; this observation is of face_index (from the left)
    face_index: int = 0

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        """The arrays ``flamefit detect`` writes (landmarks, mask, confidence, bbox; blendshapes and the face
        transform only when present: ``missing`` says why not). Names are a unicode array (no pickle needed)."""
        out = {
            "lmks_dense": self.lmks_dense.astype(np.float32),
            "lmks_68": self.lmks_68.astype(np.float32),
            "mask": self.mask.astype(np.float32),
            "confidence": np.float32(self.confidence),
            "bbox": self.bbox.astype(np.float32),
            "image_size": np.array(self.image_size, dtype=np.int32),
        }
        if self.blendshape_scores is not None and self.blendshape_names is not None:
            out["blendshape_scores"] = np.asarray(self.blendshape_scores, dtype=np.float32)
            out["blendshape_names"] = np.array(self.blendshape_names, dtype=str)
        if self.face_transform is not None:
            out["face_transform"] = np.asarray(self.face_transform, dtype=np.float64)
        return out


def observe(
    image_or_path,
    *,
    select: str | int = "largest",
    mask: bool = True,
    mask_backend: str = "landmarks",
    bisenet_weights: str | os.PathLike | None = None,
    source: str | None = None,
    detector: LandmarkDetector | None = None,
    face_landmarker: str | os.PathLike | bool | None = None,
) -> Observation:
    """Load (if a path), detect landmarks, derive the 68 points, the skin mask, blendshapes and face transform.

    ``image_or_path``: a file path, or an (H, W, 3) image (uint8, uint16 or float 0..1; numpy or torch).
    ``select``: ``'largest'`` face (default) or the index of a face counted from the left.
    ``mask``: compute the skin mask (``mask_backend`` ``'landmarks'`` or ``'bisenet'`` with
    ``bisenet_weights``); when ``False`` the mask is all ones. ``face_landmarker``: the ``face_landmarker.task``
    for blendshapes and the face transform (default ``None``: the detector's setting, which by default finds it
    as :func:`flamefit.observe.blendshapes.resolve_face_landmarker` says; ``False``: skip them). Raises
    :class:`~flamefit.errors.FaceNotFound` or :class:`~flamefit.errors.InputImageError` naming ``source`` (the
    file name for paths), :class:`~flamefit.errors.ModelFileError` for a bad explicitly given ``.task`` file.
    """
    focal = None
    if isinstance(image_or_path, (str, os.PathLike)):
        src = source or str(image_or_path)
        image = load_image(Path(image_or_path))
        focal = exif_focal_px(Path(image_or_path))
    else:
        src = source or "<image>"
        image = to_float_rgb(image_or_path, src)
    detector = detector or default_detector()
    det: Detection = detect_landmarks(image, select=select, source=src, detector=detector)
    expr = detector.expression(image, det, source=src, face_landmarker=face_landmarker)
    obs = observation_from_detection(image, det, mask=mask, mask_backend=mask_backend,
                                     bisenet_weights=bisenet_weights, source=src, expression=expr)
    obs.exif_focal_px = focal
    return obs


def observation_from_detection(image, detection: Detection, *, mask: bool = True, mask_backend: str = "landmarks",
                               bisenet_weights=None, source: str = "<image>",
                               expression: Expression | None = None) -> Observation:
    """An :class:`Observation` from an image and a :class:`Detection` of it (e.g. a video frame and
    ``FaceTracker.track(frame)``): adds the 68 points and the skin mask, and the blendshapes and face transform
    of ``expression`` (e.g. ``tracker.expression(frame, det)``; without it they are absent, with that reason)."""
    if expression is None:
        expression = Expression.absent("not measured (observation_from_detection was given no expression)")
    image = to_float_rgb(image, source)
    lmks = detection.lmks_dense.astype(np.float32)
    if mask:
        m = skin_mask(image, lmks, backend=mask_backend, bisenet_weights=bisenet_weights)
    else:
        m = np.ones(image.shape[:2], np.float32)
    return Observation(
        image=image,
        lmks_dense=lmks,
        lmks_68=dense_to_68(lmks).astype(np.float32),
        confidence=float(detection.confidence),
        mask=m,
        source=source,
        bbox=detection.bbox.astype(np.float32),
        blendshape_scores=expression.blendshape_scores,
        blendshape_names=expression.blendshape_names,
        face_transform=expression.face_transform,
        missing=dict(expression.missing),
        faces_found=int(detection.faces_found),
        face_index=int(detection.face_index),
    )
