"""What the fitter measures in one image: :class:`Observation`, and :func:`observe` that makes it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flamefit.observe.image import load_image, to_float_rgb
from flamefit.observe.landmarks import Detection, LandmarkDetector, detect_landmarks
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
    """

    image: np.ndarray
    lmks_dense: np.ndarray
    lmks_68: np.ndarray
    confidence: float
    mask: np.ndarray
    source: str = "<image>"
    bbox: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    transform: np.ndarray = field(default_factory=lambda: np.eye(2, 3, dtype=np.float64))

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        """The arrays ``flamefit detect`` writes (landmarks, mask, confidence, bbox)."""
        return {
            "lmks_dense": self.lmks_dense.astype(np.float32),
            "lmks_68": self.lmks_68.astype(np.float32),
            "mask": self.mask.astype(np.float32),
            "confidence": np.float32(self.confidence),
            "bbox": self.bbox.astype(np.float32),
            "image_size": np.array(self.image_size, dtype=np.int32),
        }


def observe(
    image_or_path,
    *,
    select: str | int = "largest",
    mask: bool = True,
    mask_backend: str = "landmarks",
    bisenet_weights: str | os.PathLike | None = None,
    source: str | None = None,
    detector: LandmarkDetector | None = None,
) -> Observation:
    """Load (if a path), detect landmarks, derive the 68 points and the skin mask.

    ``image_or_path``: a file path, or an (H, W, 3) image (uint8, uint16 or float 0..1; numpy or torch).
    ``select``: ``'largest'`` face (default) or the index of a face counted from the left.
    ``mask``: compute the skin mask (``mask_backend`` ``'landmarks'`` or ``'bisenet'`` with
    ``bisenet_weights``); when ``False`` the mask is all ones. Raises :class:`~flamefit.errors.FaceNotFound`
    or :class:`~flamefit.errors.InputImageError` naming ``source`` (the file name for paths).
    """
    if isinstance(image_or_path, (str, os.PathLike)):
        src = source or str(image_or_path)
        image = load_image(Path(image_or_path))
    else:
        src = source or "<image>"
        image = to_float_rgb(image_or_path, src)
    det: Detection = detect_landmarks(image, select=select, source=src, detector=detector)
    return observation_from_detection(image, det, mask=mask, mask_backend=mask_backend,
                                      bisenet_weights=bisenet_weights, source=src)


def observation_from_detection(image, detection: Detection, *, mask: bool = True, mask_backend: str = "landmarks",
                               bisenet_weights=None, source: str = "<image>") -> Observation:
    """An :class:`Observation` from an image and a :class:`Detection` of it (e.g. a video frame and
    ``FaceTracker.track(frame)``): adds the 68 points and the skin mask."""
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
    )
