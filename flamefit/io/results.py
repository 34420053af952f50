"""Write and read fit results.

Per item, into the output folder (the kinds in brackets are what ``outputs=`` / the CLI flags select):

- ``NAME.npz`` [npz, always]: every array the fit produced (only real values: a field that could not be
  computed is absent, never zeros), ``faces``, and the raw parameters as ``param_*``;
- ``NAME.json`` [json, always]: parameters, camera in OpenCV and OpenGL conventions, timings, the config, and
  ``missing`` (field -> why it is absent);
- ``NAME_mesh.obj`` + ``.mtl`` + ``NAME_mesh.png`` and ``NAME.glb`` [mesh]: the textured mesh;
- ``NAME_overlay.png`` [overlay]: input | render | blend;
- ``NAME_render.png`` [render]: the render as RGBA (alpha = coverage);
- ``NAME.done.json``: the completion record, written last (see :mod:`flamefit.io.outputs`).

Everything written is finite: a non-finite array or JSON number is an error for that item, nothing is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from flamefit.errors import FlamefitError
from flamefit.io.outputs import OutputSet, save_npz
from flamefit.io.outputs import is_finished as _is_finished

ALL_OUTPUTS = ("npz", "json", "mesh", "overlay", "render")
DEFAULT_OUTPUTS = ("npz", "json", "mesh", "overlay")
ALWAYS = ("npz", "json")


def result_paths(out_dir: str | Path, name: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {
        "npz": out_dir / f"{name}.npz",
        "json": out_dir / f"{name}.json",
        "obj": out_dir / f"{name}_mesh.obj",
        "glb": out_dir / f"{name}.glb",
        "overlay": out_dir / f"{name}_overlay.png",
        "render": out_dir / f"{name}_render.png",
        "done": out_dir / f"{name}.done.json",
    }


def normalise_outputs(outputs: Iterable[str] | None) -> tuple[str, ...]:
    """The output kinds to write: ``outputs`` plus the ones that are always written, validated."""
    outputs = DEFAULT_OUTPUTS if outputs is None else tuple(outputs)
    unknown = sorted(set(outputs) - set(ALL_OUTPUTS))
    if unknown:
        raise ValueError(f"unknown output kinds {unknown}; known: {list(ALL_OUTPUTS)}")
    return tuple(k for k in ALL_OUTPUTS if k in set(outputs) | set(ALWAYS))


def is_finished(out_dir: str | Path, name: str, outputs: Iterable[str] | None = None,
                verify_hashes: bool = False) -> bool:
    """``name`` has a complete, consistent result set in ``out_dir`` covering ``outputs``."""
    return _is_finished(out_dir, name, normalise_outputs(outputs), verify_hashes=verify_hashes)


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def find_nonfinite(doc, where: str = "") -> str | None:
    """The path (``a.b[3]``) of the first NaN/inf number in a JSON-like document, else None."""
    if isinstance(doc, float):
        return None if math.isfinite(doc) else (where or "<root>")
    if isinstance(doc, dict):
        for k, v in doc.items():
            hit = find_nonfinite(v, f"{where}.{k}" if where else str(k))
            if hit:
                return hit
    elif isinstance(doc, (list, tuple)):
        for i, v in enumerate(doc):
            hit = find_nonfinite(v, f"{where}[{i}]")
            if hit:
                return hit
    return None


def check_finite_arrays(arrays: dict[str, np.ndarray], name: str) -> None:
    """Raise a FlamefitError naming the first array with NaN/inf values."""
    for key, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            n_bad = int((~np.isfinite(a)).sum())
            raise FlamefitError(f"{name}: the fit produced {n_bad} non-finite value(s) in `{key}` {a.shape}; "
                                "nothing was written for it (try other weights/learning rates, or report the image)")


def dumps_finite(doc: dict, name: str) -> str:
    """``json.dumps`` that refuses NaN/inf with an error naming the field."""
    bad = find_nonfinite(doc)
    if bad is not None:
        raise FlamefitError(f"{name}: non-finite number in the result JSON at `{bad}`; nothing was written for it")
    return json.dumps(doc, indent=1, allow_nan=False)


def _missing(result) -> dict[str, str]:
    return dict(getattr(result, "missing", None) or {})


def result_arrays(result, faces=None) -> dict[str, np.ndarray]:
    """The arrays for ``NAME.npz``: the result's arrays that exist (None fields are left out), plus ``faces``."""
    arrays = {k: np.asarray(v) for k, v in result.arrays().items() if v is not None}
    if faces is not None:
        arrays["faces"] = np.asarray(faces, dtype=np.int64)
    return arrays


def result_json(result, config=None, faces_count: int | None = None) -> dict:
    """The JSON document for a FitResult (parameters, camera in both conventions, timings, config, missing)."""
    doc = {
        "name": result.name,
        "image_size": {"height": int(result.image_size[0]), "width": int(result.image_size[1])},
        "conventions": {
            "units": "metres, radians (axis-angle), pixels of the original image",
            "model_frame": "FLAME: y up, +z out of the face, +x towards the subject's left",
            "camera": "OpenCV: X_cam = R(cam[:3]) @ X + cam[3:], x right, y down, z forward",
            "pixels": "x right, y down, origin at the top-left corner of the top-left pixel, centres at +0.5",
            "opengl": "view = diag(1,-1,-1) [R|t]; projection from K for near/far 0.01/10",
        },
        "flame": {k: getattr(result, k) for k in ("shape", "exp", "pose", "neck", "eyes", "tex", "light")
                  if getattr(result, k, None) is not None},
        "camera": {
            "opencv": {"K": result.K, "rotation_axis_angle": result.cam[:3], "translation": result.cam[3:],
                       "cam": result.cam},
            "opengl": {"view": result.opengl_view, "projection": result.opengl_projection()},
            "focal_source": getattr(result, "focal_source", None),
        },
        "timings_s": getattr(result, "timings", {}) or {},
        "missing": _missing(result),
        # render/mask/overlay pixels per original-image pixel (< 1: very large photos are rendered smaller)
        "render_scale": float(getattr(result, "render_scale", 1.0)),
        # where lmks_68 / lmks_dense come from: "detected", or null when no detection ran (then they are absent)
        "landmarks_source": getattr(result, "landmarks_source", "detected"),
    }
    for key in ("detected_faces", "lmks_68_fit", "blendshape_scores", "blendshape_names", "face_transform"):
        value = getattr(result, key, None)
        if value is not None:
            doc[key] = value
    if config is not None:
        from flamefit.fit.config import config_to_dict

        doc["config"] = config if isinstance(config, dict) else config_to_dict(config)
    return _jsonable(doc)


def _render_rgba(result) -> np.ndarray | None:
    render, mask = getattr(result, "render", None), getattr(result, "mask", None)
    if render is None:
        return None
    alpha = np.ones(render.shape[:2], np.float32) if mask is None else np.asarray(mask, np.float32)
    return np.concatenate([np.asarray(render, np.float32), alpha[..., None]], axis=-1)


def save_result(result, out_dir: str | Path, faces, vt=None, ft=None, config=None, name: str | None = None,
                outputs: Iterable[str] | None = None, overwrite: bool = True, source: str = "",
                kind: str = "fit") -> dict[str, Path] | None:
    """Write the files of one result (``outputs``: kinds from :data:`ALL_OUTPUTS`, default
    :data:`DEFAULT_OUTPUTS`) as one atomic set; returns the published paths, or None when not ``overwrite`` and
    another run finished ``name`` meanwhile. Raises FlamefitError (writing nothing) on non-finite values."""
    from flamefit.io.mesh import save_glb, save_obj, save_png

    name = name or result.name
    kinds = normalise_outputs(outputs)
    arrays = result_arrays(result, faces)
    check_finite_arrays(arrays, name)
    doc = result_json(result, config)
    missing = doc["missing"]
    overlay, rgba = getattr(result, "overlay", None), _render_rgba(result)
    if "overlay" in kinds and overlay is None:
        missing.setdefault("overlay_png", missing.get("overlay", "no render of the fit was made"))
    if "render" in kinds and rgba is None:
        missing.setdefault("render_png", missing.get("render", "no render of the fit was made"))
    text = dumps_finite(doc, name)
    faces = np.asarray(faces)
    with OutputSet(out_dir, name, kind=kind, source=source, overwrite=overwrite) as outs:
        save_npz(outs.path(f"{name}.npz"), arrays)
        outs.write_text(f"{name}.json", text)
        if "mesh" in kinds:
            tex = getattr(result, "albedo", None) if vt is not None else None
            save_obj(outs.path(f"{name}_mesh.obj"), result.vertices, faces, vt=vt, ft=ft, texture=tex)
            save_glb(outs.path(f"{name}.glb"), result.vertices, faces, vt=vt, ft=ft, texture=tex)
        if "overlay" in kinds and overlay is not None:
            save_png(outs.path(f"{name}_overlay.png"), overlay)
        if "render" in kinds and rgba is not None:
            save_png(outs.path(f"{name}_render.png"), rgba)
        if not outs.publish(outputs=kinds):
            return None
        return dict(outs.published)


def load_result_params(path: str | Path, device=None, dtype=None):
    """Read the fitted parameters (a batch-1 :class:`FlameParams`, original-image intrinsics) from ``NAME.npz``."""
    import torch

    from flamefit.fit.api import read_fit_params

    return read_fit_params(path, device=device, dtype=dtype or torch.float32)
