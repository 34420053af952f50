"""Face observations: what the fitter measures in an image (landmarks, skin mask, alignment).

``observe(path_or_image) -> Observation`` does it all; the pieces are :func:`load_image`,
:func:`detect_landmarks` / :class:`FaceTracker`, :func:`dense_to_68`, :func:`skin_mask` and :func:`align_face`.
MediaPipe is imported on first detection only.
"""

from flamefit.observe.align import align_face, apply_inverse, apply_transform
from flamefit.observe.image import load_image
from flamefit.observe.landmarks import Detection, FaceTracker, LandmarkDetector, detect_faces, detect_landmarks
from flamefit.observe.mask import skin_mask
from flamefit.observe.mp68 import MP_TO_68, dense_to_68
from flamefit.observe.observation import Observation, observation_from_detection, observe

__all__ = [
    "MP_TO_68",
    "Detection",
    "FaceTracker",
    "LandmarkDetector",
    "Observation",
    "align_face",
    "apply_inverse",
    "apply_transform",
    "dense_to_68",
    "detect_faces",
    "detect_landmarks",
    "load_image",
    "observation_from_detection",
    "observe",
    "skin_mask",
]
