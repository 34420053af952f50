"""Write and read fit results: per image ``NAME.npz`` (all arrays), ``NAME.json`` (parameters, camera in OpenCV
and OpenGL conventions, timings, config), ``NAME_mesh.obj`` + ``.mtl`` + ``NAME_mesh.png`` (textured mesh),
``NAME.glb``, and ``NAME_overlay.png`` (input | render | blend).

``NAME.json`` is written last, so its presence marks a finished result (reruns skip it unless overwriting).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from flamefit.errors import ModelFileError

RESULT_SUFFIXES = (".npz", ".json", "_mesh.obj", ".glb", "_overlay.png")


def result_paths(out_dir: str | Path, name: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {
        "npz": out_dir / f"{name}.npz",
        "json": out_dir / f"{name}.json",
        "obj": out_dir / f"{name}_mesh.obj",
        "glb": out_dir / f"{name}.glb",
        "overlay": out_dir / f"{name}_overlay.png",
    }


def is_finished(out_dir: str | Path, name: str) -> bool:
    """All outputs of ``name`` exist (the JSON is written last)."""
    return all(p.exists() for p in result_paths(out_dir, name).values())


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def result_json(result, config=None, faces_count: int | None = None) -> dict:
    """The JSON document for a FitResult (parameters, camera in both conventions, timings, config)."""
    from flamefit.fit.config import config_to_dict

    doc = {
        "name": result.name,
        "image_size": {"height": result.image_size[0], "width": result.image_size[1]},
        "conventions": {
            "units": "metres, radians (axis-angle), pixels of the original image",
            "model_frame": "FLAME: y up, +z out of the face, +x towards the subject's left",
            "camera": "OpenCV: X_cam = R(cam[:3]) @ X + cam[3:], x right, y down, z forward",
            "pixels": "x right, y down, origin at the top-left corner of the top-left pixel, centres at +0.5",
            "opengl": "view = diag(1,-1,-1) [R|t]; projection from K for near/far 0.01/10",
        },
        "flame": {"shape": result.shape, "exp": result.exp, "pose": result.pose, "neck": result.neck,
                  "eyes": result.eyes, "tex": result.tex, "light": result.light},
        "camera": {
            "opencv": {"K": result.K, "rotation_axis_angle": result.cam[:3], "translation": result.cam[3:],
                       "cam": result.cam},
            "opengl": {"view": result.opengl_view, "projection": result.opengl_projection()},
        },
        "lmks_68_fit": result.lmks_68_fit,
        "timings_s": result.timings,
    }
    if config is not None:
        doc["config"] = config_to_dict(config)
    return _jsonable(doc)


def save_result(result, out_dir: str | Path, faces, vt=None, ft=None, config=None, name: str | None = None
                ) -> dict[str, Path]:
    """Write all files of one result; returns their paths."""
    from flamefit.io.mesh import save_glb, save_obj, save_png

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or result.name
    paths = result_paths(out_dir, name)
    arrays = result.arrays()
    arrays["faces"] = np.asarray(faces, dtype=np.int64)
    tmp = paths["npz"].with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, paths["npz"])
    faces = np.asarray(faces)
    tex = result.albedo if vt is not None else None
    save_obj(paths["obj"], result.vertices, faces, vt=vt, ft=ft, texture=tex)
    save_glb(paths["glb"], result.vertices, faces, vt=vt, ft=ft, texture=tex)
    save_png(paths["overlay"], result.overlay)
    doc = json.dumps(result_json(result, config), indent=1)
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, paths["json"])
    return paths


def load_result_params(path: str | Path, device=None, dtype=None):
    """Read the fitted parameters (a batch-1 :class:`FlameParams`, original-image intrinsics) from ``NAME.npz``."""
    import torch

    from flamefit.fit.params import FlameParams

    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        params = {k[len("param_"):]: data[k][None] for k in data.files if k.startswith("param_")}
        image_size = tuple(int(v) for v in data["image_size"]) if "image_size" in data.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"cannot read fit result {path}: {exc}. Pass a NAME.npz written by `flamefit fit`")\
            from exc
    if not params:
        raise ModelFileError(f"{path} holds no fitted parameters (param_* arrays); is it a `flamefit fit` result?")
    return FlameParams.from_dict(params, device=device, dtype=dtype or torch.float32), image_size
