"""Synthetic photos with known albedos, for the recovery benchmark and the pipeline's tests.

:func:`render_photos` renders random heads (shape, expression, jaw, pose, camera distance, SH light shared by the
colour channels) of a FLAME(-format) model whose albedos are drawn from a given texture space (e.g.
:func:`flamefit.texspace.synthetic.make_synthetic_space`, saved as an npz), over a smooth random background, and
writes ``images/NAME.png``, ``truth.json`` (the true codes), ``truth/NAME.npz`` (the true vertices, camera
``K``/axis-angle ``rotation``/``translation``, shared SH ``light`` (9,) and ``tex`` code: to unwrap with the
truth instead of a fit) and ``detections/NAME.npz`` (``lmks_68`` projected from the true model + noise, the
rendered face-region skin ``mask``, ``focal_px``): the landmarks a detector would give, since MediaPipe cannot be
trusted on renders of a stand-in model. The pipeline reads them with ``--detections``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch


def render_photos(out_dir: str | Path, space: str | Path, n: int, *, flame, landmarks_static, landmarks_dynamic,
                  seed: int = 0, height: int = 320, width: int = 320, pixel_noise: float = 0.01,
                  landmark_noise_px: float = 1.0, prefix: str = "synth") -> list[dict]:
    """Render ``n`` photos (see the module doc) -> [{"name", "image", "detections", "code"}] (code: the true
    texture-space coefficients)."""
    import cv2

    from flamefit.fit.api import build_fitter
    from flamefit.fit.config import load_config
    from flamefit.fit.synthetic import face_region, random_params
    from flamefit.model.landmarks import model_landmarks_68
    from flamefit.model.texture_space import load_texture_space
    from flamefit.render.camera import project_points
    from flamefit.render.mesh_renderer import render_mesh

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "detections").mkdir(parents=True, exist_ok=True)
    (out_dir / "truth").mkdir(parents=True, exist_ok=True)
    k = load_texture_space(space).n_components
    cfg = load_config(overrides=[f"texture.n_tex={k}", "texture.fit_resolution=0"])
    fitter = build_fitter(flame, space, cfg, landmarks_static=landmarks_static, landmarks_dynamic=landmarks_dynamic,
                          dense=False)
    region = face_region(fitter.model, fitter.landmarks68)
    rows = []
    for i in range(n):
        rng = np.random.default_rng(seed * 100003 + i)
        with torch.no_grad():
            p = random_params(fitter, rng, height, width)
            p.light = p.light.mean(-1, keepdim=True).expand_as(p.light).clone()  # SH shared by the channels
            small = rng.uniform(0.2, 0.9, (max(2, height // 32), max(2, width // 32), 3)).astype(np.float32)
            bg = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
            bg_t = torch.as_tensor(bg, dtype=fitter.dtype).unsqueeze(0)
            r = fitter.render_image(p, height, width, background=bg_t)
            img = np.clip(r["rgb"][0].cpu().numpy() + rng.normal(0, pixel_noise, (height, width, 3)), 0, 1)
            verts = r["vertices"]
            lm3 = model_landmarks_68(fitter.landmarks68, verts, fitter.faces, p.global_pose, p.neck_pose)
            lm = project_points(fitter.to_camera(p, lm3), p.intrinsics())[0].cpu().numpy()
            lm = lm + rng.normal(0, landmark_noise_px * max(height, width) / 256, lm.shape)
            attr = region.to(fitter.dtype).view(-1, 1).expand(-1, 3)
            cov = render_mesh(verts, fitter.faces, fitter.camera(p, height, width), albedo=attr, antialias=False)
            skin = ((cov.rgb[0, ..., 0] > 0.99) & cov.mask[0]).cpu().numpy().astype(np.float32)
        name = f"{prefix}_{i:04d}"
        img_path = out_dir / "images" / f"{name}.png"
        cv2.imwrite(str(img_path), cv2.cvtColor((img * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
        det = out_dir / "detections" / f"{name}.npz"
        np.savez_compressed(det, lmks_68=lm.astype(np.float32), mask=skin,
                            focal_px=np.float64(p.focal_px[0, 0]))
        # the true scene, for diagnostics (unwrapping with the truth instead of a fit)
        np.savez_compressed(out_dir / "truth" / f"{name}.npz", vertices=verts[0].cpu().numpy(),
                            K=p.intrinsics()[0].cpu().numpy(), rotation=p.cam_rotation[0].cpu().numpy(),
                            translation=p.cam_translation[0].cpu().numpy(), light=p.light[0, :, 0].cpu().numpy(),
                            tex=p.tex[0].cpu().numpy())
        rows.append({"name": name, "image": str(img_path), "detections": str(det),
                     "code": p.tex[0].cpu().numpy().astype(float).tolist(),
                     "yaw_deg": float(p.global_pose[0, 1]) * 180 / math.pi,
                     "light_dc": float(p.light[0, 0, 0])})
    (out_dir / "truth.json").write_text(json.dumps({"space": str(space), "photos": rows}, indent=1))
    return rows
