"""Single-image analysis-by-synthesis fitting: rigid -> landmarks -> photometric -> texel offset.

The fitter crops the face (square, ``crop_scale`` x the landmark box) to a fixed internal resolution
(``config.resolution``), fits there with intrinsics adjusted to the crop, and maps everything back to the original
image's pixels at the end (a crop and a scale only change ``K``, never the 3D fit).

Usage::

    fitter = Fitter(model, texture_space=ts, landmarks68=lmk68, config=cfg)
    result = fitter.fit(FitTarget(image, lmks_68=...))
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from flamefit.errors import ConfigError, InputImageError
from flamefit.fit import losses as L
from flamefit.fit.config import FitConfig, StageConfig
from flamefit.fit.crop import Crop, params_to_crop
from flamefit.fit.init import LandmarkProblem, default_intrinsics, initialize
from flamefit.fit.landmarks import JAW, model_landmarks_68, project_points
from flamefit.fit.params import FlameParams
from flamefit.model.lbs import axis_angle_to_matrix
from flamefit.model.texture_space import (
    TextureSpace,
    resize_map,
    smoothness_loss,
    symmetry_loss,
)

# Adam learning-rate multipliers per parameter (the stage lr x this): parameters have very different scales.
_LR_SCALE = {
    "global_pose": 0.1, "neck_pose": 0.05, "jaw_pose": 0.2, "eye_pose": 0.2, "translation": 0.02,
    "cam_translation": 0.02, "focal_px": 100.0, "shape": 2.5, "expression": 2.5, "tex": 2.5, "light": 0.5,
    "tex_offset": 0.5,
}


@dataclass
class FitTarget:
    """What was measured in one image, in pixels of the ORIGINAL image.

    image (H,W,3) float RGB 0..1; lmks_68 (68,2) iBUG order and/or lmks_dense (478,2) MediaPipe order (x, y);
    mask (H,W) skin weights 0..1 for the photometric term (None: the landmark-hull region is used);
    lmk68_weights (68,) optional per-point confidence; focal_px: known focal of the original image (else config).
    """

    image: np.ndarray
    lmks_68: np.ndarray | None = None
    lmks_dense: np.ndarray | None = None
    mask: np.ndarray | None = None
    lmk68_weights: np.ndarray | None = None
    focal_px: float | None = None
    name: str = ""

    @classmethod
    def from_observation(cls, obs, name: str = "") -> FitTarget:
        """From :class:`flamefit.observe.Observation` (image, lmks_dense, lmks_68, mask)."""
        return cls(image=np.asarray(obs.image, dtype=np.float32), lmks_68=getattr(obs, "lmks_68", None),
                   lmks_dense=getattr(obs, "lmks_dense", None), mask=getattr(obs, "mask", None), name=name)


@dataclass
class StageLog:
    name: str
    iters: int
    seconds: float
    loss_start: float
    loss_end: float
    terms: dict = field(default_factory=dict)


@dataclass
class RawFit:
    """The fitter's output in crop space (turned into a FitResult by :mod:`flamefit.fit.result`)."""

    params: FlameParams  # intrinsics in CROP pixels
    crop: Crop
    target: FitTarget
    stages: list[StageLog]
    init_seconds: float


class Fitter:
    """Fit FLAME to single images. ``model``: a :class:`FlameModel`; ``texture_space``: a :class:`TextureSpace`
    (None: free albedo); ``landmarks68``: :class:`flamefit.model.landmarks.Landmarks68` (RingNet/DECA embedding);
    ``dense_landmarks``: :class:`flamefit.model.landmarks.MeshLandmarks` for MediaPipe's 478 points (optional).
    At least one of the two landmark embeddings is needed."""

    def __init__(self, model, texture_space: TextureSpace | None = None, landmarks68=None, dense_landmarks=None,
                 config: FitConfig | None = None):
        self.model = model
        self.cfg = config or FitConfig()
        self.landmarks68 = landmarks68
        self.dense = dense_landmarks
        if landmarks68 is None and dense_landmarks is None:
            raise ConfigError(
                "the fitter needs landmark positions on the mesh: the RingNet 68-point embedding "
                "(flame_static_embedding.pkl + flame_dynamic_embedding.npy, $FLAMEFIT_LANDMARKS_STATIC/_DYNAMIC) "
                "or a MediaPipe-478 correspondence"
            )
        ref = model.v_template
        self.device, self.dtype = ref.device, ref.dtype
        self.faces = model.faces
        self.n_shape = min(self.cfg.n_shape, model.n_shape)
        self.n_expr = min(self.cfg.n_expr, model.n_expr)
        # Fit only the configured components (less memory traffic per iteration); other models as they are.
        self.model = model.truncated(self.n_shape, self.n_expr) if hasattr(model, "truncated") else model
        self.texture_space = self._appearance(texture_space)
        vt = self.texture_space.vt if self.texture_space.vt is not None else None
        ft = self.texture_space.ft
        if vt is None and getattr(model, "uv", None) is not None:
            vt, ft = model.uv.vt, model.uv.ft
        self.vt = None if vt is None else vt.to(self.device, self.dtype)
        self.ft = None if ft is None else ft.to(self.device)
        if self.vt is not None and self.ft.shape[0] != self.faces.shape[0]:
            raise ConfigError(f"the UV layout has {self.ft.shape[0]} faces, the model {self.faces.shape[0]}")

    # -- appearance ------------------------------------------------------------------------------------------
    def _appearance(self, ts: TextureSpace | None) -> TextureSpace:
        mode = self.cfg.texture.mode
        if mode == "pca" and ts is None:
            raise ConfigError("texture.mode='pca' needs a texture space (--texture-space FILE)")
        if mode == "free" or ts is None:
            vt = ts.vt if ts is not None else None
            ft = ts.ft if ts is not None else None
            free = TextureSpace.free(self.cfg.texture.free_resolution, self.cfg.texture.skin_rgb, vt, ft,
                                     dtype=self.dtype).to(self.device)
            self.full_texture_space = free
            return free
        ts = ts.truncated(self.cfg.texture.n_tex).to(self.device, self.dtype)
        self.full_texture_space = ts
        r = self.cfg.texture.fit_resolution
        if r and r < ts.resolution[0]:
            # the inner loop reads the whole basis twice per iteration: a smaller copy is much cheaper
            ts = TextureSpace(resize_map(ts.mean[None], (r, r))[0],
                              resize_map(ts.basis, (r, r)) if ts.n_components else ts.basis[:, :r, :r],
                              ts.vt, ts.ft, ts.kind, ts.source)
        return ts

    @property
    def free_albedo(self) -> bool:
        return self.texture_space.kind == "free"

    def albedo(self, params: FlameParams) -> torch.Tensor:
        """(B,Ht,Wt,3) albedo map: texture space at ``params.tex`` plus the (upsampled) texel offset."""
        tex = self.texture_space(params.tex, batch=params.batch_size)
        if params.tex_offset is not None:
            tex = tex + resize_map(params.tex_offset, tuple(tex.shape[1:3]))
        return tex

    # -- geometry and rendering --------------------------------------------------------------------------------
    def vertices(self, params: FlameParams) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(**params.flame_kwargs())
        return out.vertices, out.joints

    def to_camera(self, params: FlameParams, points: torch.Tensor) -> torch.Tensor:
        R = axis_angle_to_matrix(params.cam_rotation)
        return points @ R.transpose(1, 2) + params.cam_translation.unsqueeze(1)

    def model_points(self, params: FlameParams, vertices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model-frame landmark points: '68' (B,68,3) and/or 'dense' (B,478,3)."""
        out = {}
        if self.landmarks68 is not None:
            out["68"] = model_landmarks_68(self.landmarks68, vertices, self.faces, params.global_pose,
                                           params.neck_pose)
        if self.dense is not None:
            out["dense"] = self.dense.project(vertices, self.faces)
        return out

    def camera(self, params: FlameParams, height: int, width: int):
        from flamefit.render.camera import PerspectiveCamera

        return PerspectiveCamera(params.intrinsics(), axis_angle_to_matrix(params.cam_rotation),
                                 params.cam_translation, height, width)

    def light_sh(self, params: FlameParams) -> torch.Tensor:
        """SH coefficients in the renderer's layout: (B,9) shared or (B,9,3)."""
        return params.light[..., 0] if params.light.shape[-1] == 1 else params.light

    def render(self, params: FlameParams, vertices: torch.Tensor, size: tuple[int, int], shaded: bool = True,
               antialias: bool = False, background=None):
        """:func:`flamefit.render.render_mesh` of the model-frame ``vertices`` with the albedo map and SH light."""
        from flamefit.render.mesh_renderer import render_mesh

        return render_mesh(vertices, self.faces, self.camera(params, size[0], size[1]),
                           texture=(self.albedo(params), self.vt, self.ft),
                           sh=self.light_sh(params) if shaded else None, background=background,
                           antialias=antialias)

    # -- fitting -------------------------------------------------------------------------------------------------
    def prepare(self, target: FitTarget) -> dict:
        """Crop, resample and move the measurements to tensors in crop pixels."""
        cfg = self.cfg
        image = np.asarray(target.image, dtype=np.float32)
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputImageError(f"{target.name or 'image'}: expected an (H,W,3) RGB image, got {image.shape}")
        pts = [p for p in (target.lmks_68, target.lmks_dense) if p is not None]
        if not pts:
            raise ConfigError("fitting needs detected landmarks (lmks_68 and/or lmks_dense)")
        crop = Crop.around(np.concatenate([np.asarray(p, dtype=np.float64) for p in pts]), cfg.resolution,
                           cfg.crop_scale)
        kw = {"device": self.device, "dtype": self.dtype}
        data = {"crop": crop, "image": torch.as_tensor(crop.warp(image), **kw).unsqueeze(0)}
        H, W = image.shape[:2]
        focal = target.focal_px
        if focal is None:
            focal, principal = default_intrinsics(H, W, cfg.camera)
        else:
            principal = (W / 2.0, H / 2.0)
        data["focal_px"] = focal * crop.scale
        data["principal_px"] = crop.to_crop(np.array(principal))
        # pixels of the crop that lie outside the original image carry no measurement
        data["valid"] = torch.as_tensor(crop.warp(np.ones(image.shape[:2], np.float32), border="zero") > 0.999,
                                        **kw).unsqueeze(0)
        if target.mask is not None:
            m = crop.warp(np.asarray(target.mask, dtype=np.float32), border="zero")
            data["mask"] = torch.as_tensor(np.clip(m, 0, 1), **kw).unsqueeze(0) * data["valid"]
        else:
            data["mask"] = None
        targets, weights, pnp = [], [], []
        if target.lmks_68 is not None and self.landmarks68 is not None:
            w = np.ones(68) * cfg.weights.lmk68
            w[JAW] *= cfg.weights.lmk68_contour
            if target.lmk68_weights is not None:
                w = w * np.asarray(target.lmk68_weights)
            data["lmk68"] = torch.as_tensor(crop.to_crop(target.lmks_68), **kw).unsqueeze(0)
            targets.append(data["lmk68"])
            weights.append(torch.as_tensor(w, **kw))
            m = np.ones(68, bool)
            m[JAW] = False
            pnp.append(torch.as_tensor(m))
        else:
            data["lmk68"] = None
        if target.lmks_dense is not None and self.dense is not None:
            data["dense"] = torch.as_tensor(crop.to_crop(target.lmks_dense), **kw).unsqueeze(0)
            n = data["dense"].shape[1]
            targets.append(data["dense"])
            weights.append(torch.full((n,), cfg.weights.lmk_dense, **kw) * 68.0 / n)
            pnp.append(torch.ones(n, dtype=torch.bool))
        else:
            data["dense"] = None
        if not targets:
            raise ConfigError(
                "no usable landmarks: the 68-point embedding needs lmks_68, the 478 correspondence needs lmks_dense"
            )
        data["lmk_targets"] = torch.cat(targets, 1)
        data["lmk_weights"] = torch.cat(weights)
        data["pnp_mask"] = torch.cat(pnp)
        return data

    def _points_fn(self, data: dict):
        """The model points matching ``data['lmk_targets']`` (68 and/or dense, in that order)."""
        def fn(vertices, params):
            pts = self.model_points(params, vertices)
            parts = []
            if data["lmk68"] is not None and "68" in pts:
                parts.append(pts["68"])
            if data["dense"] is not None and "dense" in pts:
                parts.append(pts["dense"])
            return torch.cat(parts, 1)
        return fn

    def initial_params(self, data: dict) -> FlameParams:
        cfg = self.cfg
        light_c = 3 if cfg.texture.light == "sh9x3" else 1
        p = FlameParams.zeros(1, self.n_shape, self.n_expr, n_tex=self.texture_space.n_components,
                              light_channels=light_c, focal_px=data["focal_px"],
                              principal_px=tuple(data["principal_px"]), device=self.device, dtype=self.dtype)
        problem = LandmarkProblem(self._points_fn(data), data["lmk_targets"], data["lmk_weights"], data["pnp_mask"])
        return initialize(self.model, problem, p, float(cfg.resolution), cfg.init)

    def fit(self, target: FitTarget, init: FlameParams | None = None, stages: tuple[str, ...] | None = None,
            callback=None) -> RawFit:
        """Fit one image. ``init``: warm start with intrinsics of the ORIGINAL image (mapped to the crop here);
        ``stages``: subset/order of 'rigid', 'landmarks', 'appearance', 'photometric', 'offset', 'texture' (default
        all but 'texture'; stages with iters == 0 are skipped). ``callback(stage, i, n)`` is called every
        iteration (progress bars)."""
        torch.manual_seed(self.cfg.seed)
        data = self.prepare(target)
        t0 = time.perf_counter()
        if init is None:
            params = self.initial_params(data)
        else:  # warm start: intrinsics given for the original image -> this crop
            params = params_to_crop(init.to(self.device, self.dtype), data["crop"])
            if params.tex.shape[1] != self.texture_space.n_components:
                params.tex = torch.zeros(1, self.texture_space.n_components, device=self.device, dtype=self.dtype)
            if params.tex_offset is not None and params.tex_offset.shape[1] != self.cfg.texture.free_resolution:
                params.tex_offset = None
        init_s = time.perf_counter() - t0
        logs = []
        order = stages or ("rigid", "landmarks", "appearance", "photometric", "offset")
        for name in order:
            stage_cfg: StageConfig = getattr(self.cfg, "texture_only" if name == "texture" else name)
            if stage_cfg.iters <= 0:
                continue
            if name in ("appearance", "photometric", "offset", "texture") and self.vt is None:
                raise ConfigError("photometric fitting needs a UV layout (texture space or model UVs)")
            if name == "offset" and not self.cfg.texture.offset:
                continue
            params, log = self._run_stage(name, params, data, stage_cfg, callback)
            logs.append(log)
        return RawFit(params=params.detach(), crop=data["crop"], target=target, stages=logs, init_seconds=init_s)

    # -- stages --------------------------------------------------------------------------------------------------
    def _free_names(self, name: str) -> list[str]:
        cam = ["global_pose", "cam_translation"] + (["focal_px"] if self.cfg.camera.optimize_focal else [])
        geo = cam + ["shape", "expression", "jaw_pose", "neck_pose", "eye_pose"]
        if name == "rigid":
            return cam
        if name == "landmarks":
            return geo
        if name == "photometric":
            app = ["light"] + (["tex"] if self.texture_space.n_components else [])
            if self.free_albedo:
                app.append("tex_offset")
            return geo + app
        if name == "appearance":  # geometry frozen: colours first, so shading does not bend the shape early
            app = ["light"] + (["tex"] if self.texture_space.n_components else [])
            return app + (["tex_offset"] if self.free_albedo else [])
        if name == "offset":
            return ["light", "tex_offset"] + (["tex"] if self.texture_space.n_components else [])
        if name == "texture":
            return ["light", "tex_offset"] + (["tex"] if self.texture_space.n_components else [])
        raise ConfigError(f"unknown stage {name!r}")

    def _ensure_offset(self, params: FlameParams) -> None:
        if params.tex_offset is None:
            r = self.cfg.texture.free_resolution
            params.tex_offset = torch.zeros(params.batch_size, r, r, 3, device=self.device, dtype=self.dtype)

    def _run_stage(self, name: str, params: FlameParams, data: dict, stage_cfg: StageConfig, callback=None):
        t0 = time.perf_counter()
        photometric = name in ("appearance", "photometric", "offset", "texture")
        free = self._free_names(name)
        if "tex_offset" in free:
            self._ensure_offset(params)
        if photometric and not data.get("light_initialised"):
            self.init_light(params, data)
            data["light_initialised"] = True
        tensors = params.requires_grad_(free)
        groups = [{"params": [t], "lr": stage_cfg.lr * _LR_SCALE.get(n, 1.0)}
                  for n, t in zip([n for n in free if getattr(params, n) is not None], tensors, strict=True)]
        opt = torch.optim.Adam(groups, betas=(0.9, self.cfg.adam_beta2))
        base = [g["lr"] for g in groups]
        first = float("nan")
        best, best_values, terms = float("inf"), None, {}
        for i in range(stage_cfg.iters):
            frac = i / max(1, stage_cfg.iters - 1)
            for g, lr0 in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))  # cosine to 10 %
            opt.zero_grad(set_to_none=True)
            loss, step_terms = self.loss(params, data, name)
            value = float(loss.detach())
            if i == 0:
                first = value
            if value < best:  # keep the best iterate: Adam may end slightly above it
                best, terms = value, step_terms
                best_values = [t.detach().clone() for t in tensors]
            loss.backward()
            opt.step()
            if callback is not None:
                callback(name, i + 1, stage_cfg.iters)
        with torch.no_grad():
            final, final_terms = self.loss(params, data, name)
        if float(final.detach()) <= best:
            best, terms = float(final.detach()), final_terms
        elif best_values is not None:
            with torch.no_grad():
                for t, v in zip(tensors, best_values, strict=True):
                    t.copy_(v)
        last = best
        params = params.detach()
        log = StageLog(name, stage_cfg.iters, time.perf_counter() - t0, first, last,
                       {k: float(v.detach()) for k, v in terms.items()})
        return params, log

    def loss(self, params: FlameParams, data: dict, stage: str) -> tuple[torch.Tensor, dict]:
        w = self.cfg.weights
        size = float(self.cfg.resolution)
        terms: dict[str, torch.Tensor] = {}
        geometry = stage not in ("appearance", "offset", "texture")
        verts, _ = self.vertices(params)
        K = params.intrinsics()
        if geometry:
            pts = self.model_points(params, verts)
            # once pixels speak, landmarks (noisy, and a different definition than the mesh's) only guide
            lw = self.cfg.photometric_landmark_scale if stage == "photometric" else 1.0
            if data["lmk68"] is not None and "68" in pts:
                p68 = project_points(self.to_camera(params, pts["68"]), K)
                wts = data["lmk_weights"][:68]
                terms["lmk68"] = lw * L.landmark_loss(p68, data["lmk68"], size, wts)
                if stage != "rigid":
                    terms["eye_closure"] = lw * w.eye_closure * L.eye_closure_loss(p68, data["lmk68"], size)
                    terms["lip_distance"] = lw * w.lip_distance * L.lip_distance_loss(p68, data["lmk68"], size)
            if data["dense"] is not None and "dense" in pts:
                pd = project_points(self.to_camera(params, pts["dense"]), K)
                terms["lmk_dense"] = lw * w.lmk_dense * L.landmark_loss(pd, data["dense"], size)
            if stage != "rigid":
                terms["shape_prior"] = w.shape_prior * L.l2_prior(params.shape)
                terms["expr_prior"] = w.expr_prior * L.l2_prior(params.expression)
                terms["jaw_prior"] = w.jaw_prior * L.l2_prior(params.jaw_pose)
                terms["neck_prior"] = w.neck_prior * L.l2_prior(params.neck_pose)
                terms["eye_pose_prior"] = w.eye_pose_prior * L.l2_prior(params.eye_pose)
        if stage in ("appearance", "photometric", "offset", "texture"):
            out = self.render(params, verts, (self.cfg.resolution, self.cfg.resolution))
            mask = self._photo_mask(data) * out.alpha[..., 0]
            # a camera clips at white: compare the clipped render (saturated pixels then carry no gradient)
            rgb = out.rgb.clamp(0.0, 1.0)
            terms["photo"] = w.photo * L.photometric_loss(rgb, data["image"], mask, self.cfg.robust_scale)
            terms["light_prior"] = w.light_prior * L.light_prior(params.light)
            if params.tex.numel():
                terms["tex_prior"] = w.tex_prior * L.l2_prior(params.tex)
            if params.tex_offset is not None and params.tex_offset.requires_grad:
                off = params.tex_offset
                l2 = w.tex_offset_l2 * off.pow(2).mean()
                terms["tex_offset"] = l2 * (0.1 if self.free_albedo else 1.0)
                terms["tex_offset_smooth"] = w.tex_offset_smooth * smoothness_loss(off) * off.shape[1] ** 2 / 1e4
                terms["tex_offset_symmetry"] = w.tex_offset_symmetry * symmetry_loss(off)
        total = sum(terms.values())
        return total, terms

    def _photo_mask(self, data: dict) -> torch.Tensor:
        """(1,H,W) skin weights: the given skin mask, else the landmark hull minus eyes and mouth."""
        if data["mask"] is None:
            data["mask"] = self._hull_mask(data) * data["valid"]
        return data["mask"]

    @torch.no_grad()
    def render_image(self, params: FlameParams, height: int, width: int,
                     background: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Full images for results: 'rgb' (B,H,W,3) over ``background`` (B,H,W,3) (default black), 'alpha'
        (B,H,W), 'albedo' (B,H,W,3), with ``params``' intrinsics (they must be for this image size)."""
        verts, _ = self.vertices(params)
        lit = self.render(params, verts, (height, width), background=background, antialias=True)
        flat = self.render(params, verts, (height, width), shaded=False)
        return {"rgb": lit.rgb, "alpha": lit.alpha[..., 0], "albedo": flat.rgb, "mask": lit.mask,
                "out": lit, "vertices": verts, "verts_cam": self.to_camera(params, verts)}

    def _hull_mask(self, data: dict) -> torch.Tensor:
        import cv2

        size = self.cfg.resolution
        pts = data["lmk68"] if data["lmk68"] is not None else data["dense"]
        p = pts[0].detach().cpu().numpy()
        m = np.zeros((size, size), np.float32)
        hull = cv2.convexHull((p - 0.5).astype(np.float32))
        cv2.fillConvexPoly(m, hull.astype(np.int32), 1.0)
        if data["lmk68"] is not None:  # drop eyes and mouth interior (not skin)
            q = (data["lmk68"][0].detach().cpu().numpy() - 0.5).astype(np.int32)
            for idx in (range(36, 42), range(42, 48), range(60, 68)):
                cv2.fillPoly(m, [q[list(idx)]], 0.0)
        return torch.as_tensor(m, device=self.device, dtype=self.dtype).unsqueeze(0)

    @torch.no_grad()
    def init_light(self, params: FlameParams, data: dict) -> None:
        """Closed-form SH light for the current albedo and geometry: the image is linear in the SH coefficients
        (rgb = albedo * basis(n) @ sh), so a damped least-squares solve on the skin pixels starts the photometric
        stage close to the answer."""
        from flamefit.render.shade import sh_basis

        verts, _ = self.vertices(params)
        size = (self.cfg.resolution, self.cfg.resolution)
        out = self.render(params, verts, size, shaded=False)
        sel = out.mask & (self._photo_mask(data) > 0.5)
        if int(sel.sum()) < 20:
            return
        basis = sh_basis(out.normals[sel])  # (N,9)
        albedo = out.rgb[sel]  # (N,3)
        img = data["image"][sel]
        C = params.light.shape[-1]
        light = params.light.clone()
        # batch 1 per fit (FitTarget is one image); solve per channel, or jointly for shared light
        if C == 1:
            A = torch.cat([basis * albedo[:, c:c + 1] for c in range(3)])
            light[0, :, 0] = _ridge(A, img.t().reshape(-1, 1), params.light[0, :, 0])
        else:
            for c in range(3):
                light[0, :, c] = _ridge(basis * albedo[:, c:c + 1], img[:, c:c + 1], params.light[0, :, c])
        params.light = light


def _ridge(A: torch.Tensor, y: torch.Tensor, prior: torch.Tensor, lam: float = 1e-3) -> torch.Tensor:
    H = A.t() @ A
    lam = lam * (H.diagonal().mean() + 1e-12)
    H = H + lam * torch.eye(9, dtype=A.dtype, device=A.device)
    g = A.t() @ y.squeeze(-1) + lam * prior
    return torch.linalg.solve(H, g)

