"""High-level entry points: build a fitter from model files, fit an image, refit a texture.

    from flamefit.fit import build_fitter, fit_image
    fitter = build_fitter()                      # model files from flags/env/config (see `flamefit model info`)
    result = fit_image("face.jpg", fitter)       # -> FitResult (original-image pixels)
    results = fit_images(["a.jpg", "b.jpg"], fitter)  # B independent images fitted as one batch
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from flamefit.errors import ConfigError, FlamefitError, ModelFileError
from flamefit.fit.config import FitConfig
from flamefit.fit.fitter import Fitter
from flamefit.fit.result import FitResult, make_result
from flamefit.fit.targets import FitTarget

NO_TEXTURE_SPACE = ("none", "free", "")


def load_dense_correspondence(model):
    """MediaPipe-478 positions on the mesh when flamefit can provide them for this model, else None."""
    try:
        from flamefit.fit.correspondence import dense_correspondence
    except ImportError:
        return None
    try:
        return dense_correspondence(model)
    except (FlamefitError, NotImplementedError, RuntimeError, OSError, ValueError):
        return None  # e.g. MediaPipe found no face on the model's renders; the 68-point term still works


def build_fitter(flame: str | os.PathLike | None = None, texture_space: str | os.PathLike | None = None,
                 config: FitConfig | None = None, device: str | torch.device = "cpu",
                 landmarks_static=None, landmarks_dynamic=None, dense: bool = True) -> Fitter:
    """Load the FLAME model, the texture space ('none' = free albedo; None = resolved from
    $FLAMEFIT_TEXTURE_SPACE/config, else free albedo), and the landmark embeddings, and build a :class:`Fitter`.
    ``landmarks_static=False``: do not look for RingNet's embedding (the 68 points derived from the model, as for
    a user with only the model file)."""
    from flamefit.assets import resolve_asset
    from flamefit.model.flame import load_flame
    from flamefit.model.landmarks import load_ringnet_68
    from flamefit.model.texture_space import load_texture_space

    cfg = config or FitConfig()
    model_path = resolve_asset("flame", flame)
    model = load_flame(model_path, device=device)
    ts = None
    if texture_space is None or str(texture_space).lower() not in NO_TEXTURE_SPACE:
        ts_path = resolve_asset("texture_space", texture_space, required=texture_space is not None)
        if ts_path is not None and cfg.texture.mode != "free":
            ts = load_texture_space(ts_path, n_components=cfg.texture.n_tex)
    lmk68 = None
    if landmarks_static is not False and resolve_asset("landmarks_static", landmarks_static,
                                                       required=landmarks_static is not None) is not None:
        lmk68 = load_ringnet_68(landmarks_static, landmarks_dynamic)
        lmk68.validate_against(int(model.faces.shape[0]))  # indices beyond the mesh: a clear error, not a crash
    dense_lmk = load_dense_correspondence(model) if dense else None
    if lmk68 is None and dense_lmk is not None:
        lmk68 = derived_landmarks68(dense_lmk, model)
    if lmk68 is None and dense_lmk is None:
        raise ModelFileError(
            "no landmark embedding for the model: put RingNet's flame_static_embedding.pkl and "
            "flame_dynamic_embedding.npy where flamefit finds them ($FLAMEFIT_LANDMARKS_STATIC / "
            "$FLAMEFIT_LANDMARKS_DYNAMIC, or the data directory; see `flamefit model info`)"
        )
    return Fitter(model, texture_space=ts, landmarks68=lmk68, dense_landmarks=dense_lmk, config=cfg)


def derived_landmarks68(dense_lmk, model):
    """68 model landmarks derived from the MediaPipe-478 correspondence (when RingNet's embedding is absent), so
    the fit's 68 points and ``lmks_68_fit`` exist for every model; None when the derivation is unavailable."""
    try:
        from flamefit.fit.derived68 import landmarks68_from_dense
    except ImportError:
        return None
    try:
        return landmarks68_from_dense(dense_lmk, model)
    except (FlamefitError, ValueError, RuntimeError):
        return None


def target_from_input(image_or_obs, name: str | None = None) -> FitTarget:
    """A FitTarget from a path/array (detects landmarks and the skin mask) or an Observation."""
    if isinstance(image_or_obs, FitTarget):
        return image_or_obs
    if hasattr(image_or_obs, "lmks_dense") and hasattr(image_or_obs, "image"):
        return FitTarget.from_observation(image_or_obs, name=name or getattr(image_or_obs, "source", ""))
    from flamefit.observe import observe

    src = str(image_or_obs) if isinstance(image_or_obs, (str, os.PathLike)) else (name or "<image>")
    obs = observe(image_or_obs, source=src)
    stem = Path(src).stem if isinstance(image_or_obs, (str, os.PathLike)) else (name or "image")
    return FitTarget.from_observation(obs, name=stem)


def fit_image(image_or_obs, fitter: Fitter | None = None, callback=None, **build_kwargs) -> FitResult:
    """Fit one image (path, (H,W,3) array, Observation or FitTarget) -> FitResult."""
    fitter = fitter or build_fitter(**build_kwargs)
    target = target_from_input(image_or_obs)
    raw = fitter.fit(target, callback=callback)
    return make_result(fitter, raw)


def fit_images(inputs, fitter: Fitter, callback=None) -> list[FitResult]:
    """Fit B independent images (paths, arrays, Observations or FitTargets) as ONE batch (same results as one by
    one, better use of the hardware); all must have the same kind of landmarks (68 and/or 478)."""
    targets = [target_from_input(x) for x in inputs]
    return [make_result(fitter, raw) for raw in fitter.fit_batch(targets, callback=callback)]


def read_fit_params(path: str | os.PathLike, device=None, dtype=torch.float32):
    """(batch-1 :class:`FlameParams` with original-image intrinsics, (H, W) or None) from a ``NAME.npz`` written
    by ``flamefit fit`` (its ``param_*`` arrays)."""
    import numpy as np

    from flamefit.fit.params import FlameParams

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            params = {k[len("param_"):]: data[k][None] for k in data.files if k.startswith("param_")}
            size = tuple(int(v) for v in data["image_size"]) if "image_size" in data.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"cannot read fit result {path}: {exc}. Pass a NAME.npz written by `flamefit fit`") \
            from exc
    if not params:
        raise ModelFileError(f"{path} holds no fitted parameters (param_* arrays); is it a `flamefit fit` result?")
    return FlameParams.from_dict(params, device=device, dtype=dtype), size


def fit_texture(fit_npz, image_or_obs, fitter: Fitter | None = None, callback=None,
                **build_kwargs) -> FitResult:
    """Keep the geometry and camera of a saved fit (``NAME.npz``, or ``(params, (H, W))``) and fit only the
    texture (code, offset) and light to ``image`` (which must have the size the fit was made for).

    The crop is placed by the saved fit's own projected landmarks (exact for this geometry); the result's
    ``lmks_68``/``lmks_dense`` are the DETECTED ones when detection ran on the image, else absent (``missing``
    says why)."""
    import dataclasses

    from flamefit.render.camera import project_points

    fitter = fitter or build_fitter(**build_kwargs)
    if isinstance(fit_npz, tuple):  # (FlameParams with original-image intrinsics, (H, W)) already loaded
        params, size = fit_npz[0].to(fitter.device, fitter.dtype), fit_npz[1]
    else:
        params, size = read_fit_params(fit_npz, device=fitter.device, dtype=fitter.dtype)
    if isinstance(image_or_obs, FitTarget):
        detected = image_or_obs
    elif hasattr(image_or_obs, "image"):
        detected = FitTarget.from_observation(image_or_obs)
    else:
        from flamefit.observe import load_image

        path = Path(image_or_obs)
        detected = FitTarget(image=load_image(path), name=path.stem, landmarks_source="none")
        try:
            detected = target_from_input(path)
        except Exception:  # noqa: BLE001 - no detection needed: the saved fit gives the crop
            pass
    if detected.lmks_68 is None and detected.lmks_dense is None:
        detected.landmarks_source = "none"
    H, W = detected.image.shape[:2]
    if size is not None and tuple(size) != (H, W):
        raise ConfigError(f"{fit_npz} was fitted on a {size[1]}x{size[0]} image, this one is {W}x{H}; "
                          "pass the same image (or one of the same size and framing)")
    with torch.no_grad():
        verts, _ = fitter.vertices(params)
        pts = fitter.model_points(params, verts)
        K = params.intrinsics()
        proj = {k: project_points(fitter.to_camera(params, v), K)[0].cpu().numpy() for k, v in pts.items()}
    target = dataclasses.replace(detected, lmks_68=proj.get("68"), lmks_dense=proj.get("dense"))
    raw = fitter.fit(target, init=params, stages=("texture",), callback=callback)
    raw.target = detected
    return make_result(fitter, raw)
