"""Reading FLAME model files: format detection and validation.

Supported layouts (all pickles of a dict; loaded with :mod:`flamefit.model.safe_pickle`):

* FLAME 2020 ``generic_model.pkl`` / ``male_model.pkl`` / ``female_model.pkl``: a Python-2 pickle whose
  ``v_template``, ``shapedirs``, ``posedirs``, ``weights``, ``J`` are chumpy ``Ch`` objects.
* FLAME 2023 and FLAME 2023 Open (``flame2023.pkl``, ``flame2023_no_jaw.pkl``, ...): plain numpy arrays.

Both carry a scipy sparse ``J_regressor`` (5, V) and ``kintree_table`` (2, 5).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flamefit.errors import ModelFileError
from flamefit.model.safe_pickle import load_restricted

NUM_JOINTS = 5
NUM_POSE_FEATURES = 9 * (NUM_JOINTS - 1)
FLAME_NUM_VERTICES = 5023
FLAME_NUM_FACES = 9976
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
_PARENTS = (-1, 0, 1, 1, 1)
_REQUIRED = ("v_template", "f", "shapedirs", "posedirs", "weights", "J_regressor", "kintree_table")


@dataclass
class FlameData:
    """The arrays of a FLAME file, validated, as float64 numpy (CPU)."""

    v_template: np.ndarray  # (V,3) metres
    faces: np.ndarray  # (F,3) int64
    shapedirs: np.ndarray  # (V,3,n_shape_total + n_expr_total)
    posedirs: np.ndarray  # (V,3,36)
    weights: np.ndarray  # (V,5)
    j_regressor: np.ndarray  # (5,V) dense
    parents: tuple[int, ...]
    n_shape_total: int
    n_expr_total: int
    format: str
    source: str
    sha256: str
    checks: list[str] = field(default_factory=list)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _array(raw: dict, key: str, source: str) -> np.ndarray:
    """``raw[key]`` as a numeric numpy array; ModelFileError naming the file and key for anything else (a string, a
    dict, a ragged list, an object array)."""
    value = raw[key]
    if hasattr(value, "toarray"):
        try:
            value = value.toarray()
        except (ValueError, TypeError, MemoryError) as exc:
            raise ModelFileError(f"{source}: key '{key}' is a damaged sparse matrix ({exc}).") from None
    if not isinstance(value, (np.ndarray, np.generic, list, tuple, int, float)):
        raise ModelFileError(f"{source}: damaged or foreign FLAME file: key '{key}' is a {type(value).__name__}, "
                             "expected a numeric array.")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ModelFileError(f"{source}: damaged or foreign FLAME file: key '{key}' is not a numeric array "
                             f"({' '.join(str(exc).split())[:120]}).") from None
    if arr.dtype.kind not in "biuf":
        raise ModelFileError(f"{source}: damaged or foreign FLAME file: key '{key}' holds {arr.dtype} values, "
                             "expected numbers.")
    return arr


def read_flame_file(path: str | Path) -> FlameData:
    """Load and validate a FLAME model file; raise :class:`ModelFileError` saying exactly what is wrong."""
    path = Path(path)
    src = str(path)
    if not path.exists():
        raise ModelFileError(f"{src}: file not found. {MODEL_HELP}")
    if path.is_dir():
        raise ModelFileError(f"{src}: is a folder; give the FLAME model file itself (e.g. generic_model.pkl).")
    globals_seen: set[str] = set()
    raw = load_restricted(path, globals_seen)
    if not isinstance(raw, dict):
        raise ModelFileError(
            f"{src}: expected a pickled dict of FLAME arrays, found {type(raw).__name__}. Is this a FLAME model file?"
        )
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        hint = ""
        if {"mean", "tex_dir"} <= raw.keys() or "MU" in raw:
            hint = " This looks like a texture space, not a shape model."
        raise ModelFileError(
            f"{src}: not a FLAME model file: missing key(s) {', '.join(missing)}.{hint} Expected the keys "
            f"{', '.join(_REQUIRED)} (FLAME 2020 generic_model.pkl or FLAME 2023)."
        )

    was_chumpy = any(name.startswith("chumpy") for name in globals_seen)
    checks: list[str] = []
    v_template = _array(raw, "v_template", src).astype(np.float64)
    faces = _array(raw, "f", src)
    shapedirs = _array(raw, "shapedirs", src).astype(np.float64)
    posedirs = _array(raw, "posedirs", src).astype(np.float64)
    weights = _array(raw, "weights", src).astype(np.float64)
    j_regressor = _array(raw, "J_regressor", src).astype(np.float64)
    kintree = _array(raw, "kintree_table", src)

    def bad(msg: str) -> ModelFileError:
        return ModelFileError(f"{src}: damaged or foreign FLAME file: {msg}.")

    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise bad(f"v_template has shape {v_template.shape}, expected (V, 3)")
    n_v = v_template.shape[0]
    if not np.all(np.isfinite(v_template)):
        raise bad("v_template holds NaN or infinite values")
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise bad(f"f has shape {faces.shape} and dtype {faces.dtype}, expected (F, 3) integers")
    faces = faces.astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= n_v):
        raise bad(f"f indexes vertex {faces.max()} but there are only {n_v} vertices")
    checks.append(f"topology: {n_v} vertices, {faces.shape[0]} faces, indices in range")
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (n_v, 3):
        raise bad(f"shapedirs has shape {shapedirs.shape}, expected ({n_v}, 3, K)")
    if posedirs.shape != (n_v, 3, NUM_POSE_FEATURES):
        raise bad(f"posedirs has shape {posedirs.shape}, expected ({n_v}, 3, {NUM_POSE_FEATURES})")
    if weights.shape != (n_v, NUM_JOINTS):
        raise bad(f"weights has shape {weights.shape}, expected ({n_v}, {NUM_JOINTS})")
    if not np.allclose(weights.sum(axis=1), 1.0, atol=1e-4):
        raise bad("skinning weights do not sum to 1 per vertex")
    if j_regressor.shape != (NUM_JOINTS, n_v):
        raise bad(f"J_regressor has shape {j_regressor.shape}, expected ({NUM_JOINTS}, {n_v})")
    if kintree.shape != (2, NUM_JOINTS):
        raise bad(f"kintree_table has shape {kintree.shape}, expected (2, {NUM_JOINTS})")
    parents = tuple(int(p) if int(p) < NUM_JOINTS else -1 for p in kintree[0].astype(np.int64))
    if parents != _PARENTS:
        raise bad(f"kinematic tree parents are {parents}, FLAME's are {_PARENTS}")
    for name, arr in (("shapedirs", shapedirs), ("posedirs", posedirs), ("weights", weights),
                      ("J_regressor", j_regressor)):
        if not np.all(np.isfinite(arr)):
            raise bad(f"{name} holds NaN or infinite values")
    checks.append("array shapes, finite values, skinning weights sum to 1, FLAME kinematic tree")

    n_dirs = shapedirs.shape[2]
    n_expr_total = 100 if n_dirs > 100 else 0  # FLAME stores 300 identity then 100 expression directions
    n_shape_total = n_dirs - n_expr_total
    if n_expr_total == 0:
        checks.append(f"WARNING: only {n_dirs} blendshapes: no expression space found")
    if "bs_type" in raw and str(raw["bs_type"]) != "lrotmin":
        raise bad(f"bs_type is '{raw['bs_type']}', flamefit implements FLAME's 'lrotmin' pose correctives")
    fmt = "FLAME 2020 (chumpy pickle)" if was_chumpy else "FLAME 2023 / 2023 Open (numpy pickle)"
    if n_v != FLAME_NUM_VERTICES or faces.shape[0] != FLAME_NUM_FACES:
        checks.append(f"WARNING: not FLAME's topology ({FLAME_NUM_VERTICES} vertices, {FLAME_NUM_FACES} faces)")
    return FlameData(
        v_template=v_template,
        faces=faces,
        shapedirs=shapedirs,
        posedirs=posedirs,
        weights=weights,
        j_regressor=j_regressor,
        parents=parents,
        n_shape_total=n_shape_total,
        n_expr_total=n_expr_total,
        format=fmt,
        source=src,
        sha256=sha256_of(path),
        checks=checks,
    )


MODEL_HELP = (
    "flamefit needs a FLAME model file (FLAME 2020 generic_model.pkl, or FLAME 2023 / 2023 Open). FLAME is "
    "free for research after registering at https://flame.is.tue.mpg.de; download it there, then pass "
    "--flame PATH, set FLAMEFIT_FLAME_MODEL=PATH, or run `flamefit model info PATH`."
)
