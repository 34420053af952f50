"""Batched analysis-by-synthesis fitting: rigid -> landmarks -> appearance -> photometric -> texel offset.

The fitter crops each face (square, ``crop_scale`` x the landmark box) to a fixed internal resolution
(``config.resolution``), fits there with intrinsics adjusted to the crop, and maps everything back to the original
image's pixels at the end (a crop and a scale only change ``K``, never the 3D fit).

B images (or video frames) are one problem: targets are stacked (:mod:`flamefit.fit.targets`), parameters are
per item or shared (:class:`flamefit.fit.optimize.Sharing`), losses are sums of per-item losses
(:mod:`flamefit.fit.terms`), stages are data built from the config (:mod:`flamefit.fit.stages`) and run by one loop
(:mod:`flamefit.fit.optimize`). A single image is B = 1 of the same code.

Usage::

    fitter = Fitter(model, texture_space=ts, landmarks68=lmk68, config=cfg)
    raw = fitter.fit(FitTarget(image, lmks_68=...))            # one image
    raws = fitter.fit_batch([t1, t2, t3])                       # independent images, fitted together
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from flamefit.errors import ConfigError
from flamefit.fit.config import FitConfig
from flamefit.fit.crop import Crop, params_to_crop
from flamefit.fit.init import LandmarkProblem, initialize
from flamefit.fit.optimize import Sharing, StageLog, run_stage
from flamefit.fit.params import FlameParams
from flamefit.fit.stages import (
    CONFIG_SECTION,
    DEFAULT_ORDER,
    Stage,
    StageName,
    build_stages,
    parse_stage_names,
    stage_config,
)
from flamefit.fit.targets import FitTarget, TargetBatch, prepare_batch
from flamefit.model.landmarks import model_landmarks_68
from flamefit.model.lbs import axis_angle_to_matrix
from flamefit.model.texture_space import TextureSpace, resize_map

__all__ = ["FitTarget", "Fitter", "RawFit", "StageLog", "Sharing", "StageName"]


@dataclass
class RawFit:
    """The fitter's output for one item in crop space (turned into a FitResult by :mod:`flamefit.fit.result`).
    ``stages``: per-stage logs of this item (seconds are the batch's stage time divided by B)."""

    params: FlameParams  # intrinsics in CROP pixels, batch 1
    crop: Crop
    target: FitTarget
    stages: list[StageLog]
    init_seconds: float


def stage_config_name(name: StageName) -> str:
    return CONFIG_SECTION[name]


class Fitter:
    """Fit FLAME to images. ``model``: a :class:`FlameModel`; ``texture_space``: a :class:`TextureSpace`
    (None: free albedo); ``landmarks68``: :class:`flamefit.model.landmarks.Landmarks68` (RingNet/DECA embedding,
    or derived from the dense correspondence); ``dense_landmarks``: :class:`flamefit.model.landmarks.MeshLandmarks`
    for MediaPipe's 478 points (optional). At least one of the two landmark embeddings is needed.

    Everything that can fail for a reason other than the image (landmark embedding, UV layout for the
    photometric stages, the stage list) is checked here, before any fitting."""

    def __init__(self, model, texture_space: TextureSpace | None = None, landmarks68=None, dense_landmarks=None,
                 config: FitConfig | None = None):
        from flamefit.fit.config import validate_config

        self.cfg = config or FitConfig()
        validate_config(self.cfg)  # a config built in code gets the same checks as a loaded one, before any work
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
        # what the model lacks that the config asks for: every result's ``missing`` says so (never a silent fit)
        self.degraded: dict[str, str] = {}
        if model.n_expr == 0 and self.cfg.n_expr > 0:
            self.degraded["expression"] = ("the model has no expression space, so no expression was fitted (the "
                                           "face is the identity's neutral one); use a FLAME file with expressions")
        elif self.n_expr < self.cfg.n_expr:
            self.degraded["expression_components"] = (f"the model has {model.n_expr} expression components, the "
                                                      f"config asks for {self.cfg.n_expr}: fitted with "
                                                      f"{self.n_expr}")
        if model.n_shape == 0 and self.cfg.n_shape > 0:
            self.degraded["shape"] = "the model has no identity (shape) space, so the head is the template's"
        elif self.n_shape < self.cfg.n_shape:
            self.degraded["shape_components"] = (f"the model has {model.n_shape} identity components, the config "
                                                 f"asks for {self.cfg.n_shape}: fitted with {self.n_shape}")
        # Fit only the configured components (less memory traffic per iteration); other models as they are.
        self.model = model.truncated(self.n_shape, self.n_expr) if hasattr(model, "truncated") else model
        self.texture_space = self._appearance(texture_space)
        vt, ft = self.texture_space.vt, self.texture_space.ft
        if vt is None and getattr(model, "uv", None) is not None:
            uv = model.uv
            if self.texture_space.kind != "free" and getattr(uv, "generated", False):
                # the space's maps are drawn in FLAME's UV layout; through an atlas flamefit made up they would
                # land on the wrong texels, silently
                raise ConfigError(
                    f"the texture space {self.texture_space.source or ''} holds no UV layout (vt/ft) and no FLAME UV "
                    "layout was found, so its maps cannot be placed on the mesh: give the UV layout "
                    "($FLAMEFIT_UV_LAYOUT: FLAME's head_template.obj or flame_vt.npy/flame_ft.npy), use a texture "
                    "space file that holds vt/ft, or fit a free albedo with --texture-space none")
            vt, ft = uv.vt, uv.ft
        self.vt = None if vt is None else vt.to(self.device, self.dtype)
        self.ft = None if ft is None else ft.to(self.device)
        if self.vt is not None and self.ft.shape[0] != self.faces.shape[0]:
            raise ConfigError(f"the UV layout has {self.ft.shape[0]} faces, the model {self.faces.shape[0]}")
        if self.vt is not None and self.texture_space.vt is None:
            self.texture_space.vt, self.texture_space.ft = self.vt, self.ft
        if self.free_albedo and self.vt is not None and self.cfg.texture.default_eyes:
            from flamefit.fit.eyes import eye_texel_labels, paint_default_eyes

            ts = self.texture_space
            labels = eye_texel_labels(self.model.v_template, self.faces, self.vt, self.ft, ts.mean.shape[0])
            ts.mean = paint_default_eyes(ts.mean, labels)
        self.lmk_model = self._landmark_model()
        self.identity_folded = False  # see with_identity
        self._check_stages(DEFAULT_ORDER)

    def _landmark_model(self):
        """FLAME at the landmark vertices only (exact there; the landmark stages and the initialisation need no
        more), or None for models without FLAME's buffers."""
        from flamefit.model.subset import SubsetFlame

        if not all(hasattr(self.model, k) for k in ("shapedirs", "posedirs", "j_regressor", "lbs_weights")):
            return None
        keep = []
        if self.landmarks68 is not None:
            keep.append(self.landmarks68.face_indices())
        if self.dense is not None:
            keep.append(self.dense.face_idx.reshape(-1))
        return SubsetFlame(self.model, torch.cat(keep))

    def with_identity(self, shape: torch.Tensor, dense_idx=None) -> Fitter:
        """A view of this fitter for frames of one known identity ``shape`` (n_shape,): its landmark model has the
        identity folded in (:meth:`flamefit.model.subset.SubsetFlame.with_identity`; ``params.shape`` is not
        read by the landmark evaluations, so stages on this view must not free it), and ``dense_idx`` keeps only
        those MediaPipe points (None: all; ``()``: none; the batch must be restricted the same way,
        :meth:`flamefit.fit.targets.TargetBatch.select_dense`). Everything else (config, full model, renderer)
        is shared with this fitter."""
        import copy

        from flamefit.model.landmarks import MeshLandmarks
        from flamefit.model.subset import SubsetFlame

        if self.lmk_model is None:
            raise ConfigError("with_identity needs a FLAME model with its blendshape buffers")
        view = copy.copy(self)
        if dense_idx is not None and self.dense is not None:
            idx = torch.as_tensor(list(dense_idx), dtype=torch.int64)
            view.dense = MeshLandmarks(self.dense.face_idx[idx], self.dense.bary[idx]) if len(idx) else None
        keep = []
        if view.landmarks68 is not None:
            keep.append(view.landmarks68.face_indices())
        if view.dense is not None:
            keep.append(view.dense.face_idx.reshape(-1))
        view.lmk_model = SubsetFlame(self.model, torch.cat(keep)).with_identity(shape)
        view.identity_folded = True
        return view

    def _check_stages(self, names) -> None:
        photometric = [n for n in parse_stage_names(names)
                       if n not in (StageName.RIGID, StageName.LANDMARKS) and stage_config(self.cfg, n).iters > 0]
        if photometric and self.vt is None:
            sets = " ".join(f"--set {stage_config_name(n)}.iters=0" for n in photometric)
            raise ConfigError(
                "photometric fitting needs a UV layout and none was found: use a texture space that holds vt/ft "
                f"(--texture-space FILE), a model with UVs, or fit landmarks only with {sets}")

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

    def albedo_full(self, params: FlameParams) -> torch.Tensor:
        """The albedo map at the texture space's full resolution (for results)."""
        ts = self.full_texture_space
        tex = ts(params.tex, batch=params.batch_size) if ts.n_components else ts(None, batch=params.batch_size)
        if params.tex_offset is not None:
            tex = tex + resize_map(params.tex_offset, tuple(tex.shape[1:3]))
        return tex

    # -- geometry and rendering --------------------------------------------------------------------------------
    def vertices(self, params: FlameParams) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(**params.flame_kwargs())
        return out.vertices, out.joints

    def camera(self, params: FlameParams, height: int, width: int, K_scale: float = 1.0):
        """The :class:`flamefit.render.camera.PerspectiveCamera` of ``params`` for an image of this size;
        ``K_scale``: the image is the fitted one resized by this factor (pixel corners scale with it)."""
        from flamefit.render.camera import PerspectiveCamera

        K = params.intrinsics()
        if K_scale != 1.0:
            K = K * torch.tensor([[K_scale], [K_scale], [1.0]], dtype=K.dtype, device=K.device)
        return PerspectiveCamera(K, axis_angle_to_matrix(params.cam_rotation), params.cam_translation,
                                 height, width)

    def to_camera(self, params: FlameParams, points: torch.Tensor) -> torch.Tensor:
        """Model-frame points (B,N,3) -> OpenCV camera frame (the camera's own transform)."""
        return self.camera(params, 1, 1).transform(points)

    def model_points(self, params: FlameParams, vertices: torch.Tensor,
                     which: tuple[str, ...] = ("68", "dense"), faces: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor]:
        """Model-frame landmark points: '68' (B,68,3) and/or 'dense' (B,478,3), those the fitter has.
        ``faces``: the faces indexing ``vertices`` (default the model's; ``lmk_model.faces`` for its subset)."""
        faces = self.faces if faces is None else faces
        out = {}
        if "68" in which and self.landmarks68 is not None:
            out["68"] = model_landmarks_68(self.landmarks68, vertices, faces, params.global_pose, params.neck_pose)
        if "dense" in which and self.dense is not None:
            out["dense"] = self.dense.project(vertices, faces)
        return out

    def landmark_vertices(self, params: FlameParams) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertices, faces) enough for the landmarks: the landmark-vertex subset when available."""
        if self.lmk_model is None:
            return self.vertices(params)[0], self.faces
        kw = params.flame_kwargs()
        if self.identity_folded:  # the identity is in the model (with_identity)
            kw.pop("shape", None)
        return self.lmk_model(**kw).vertices, self.lmk_model.faces

    def light_sh(self, params: FlameParams) -> torch.Tensor:
        """SH coefficients in the renderer's layout: (B,9) shared or (B,9,3)."""
        return params.light[..., 0] if params.light.shape[-1] == 1 else params.light

    def render(self, params: FlameParams, vertices: torch.Tensor, size: tuple[int, int], shaded: bool = True,
               antialias: bool = False, background=None, K_scale: float = 1.0):
        """:func:`flamefit.render.render_mesh` of the model-frame ``vertices`` with the albedo map and SH light."""
        from flamefit.render.mesh_renderer import render_mesh

        return render_mesh(vertices, self.faces, self.camera(params, size[0], size[1], K_scale),
                           texture=(self.albedo(params), self.vt, self.ft),
                           sh=self.light_sh(params) if shaded else None, background=background,
                           antialias=antialias)

    @torch.no_grad()
    def render_image(self, params: FlameParams, height: int, width: int,
                     background: torch.Tensor | None = None, K_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Full images for results: 'rgb' (B,H,W,3) over ``background`` (B,H,W,3) (default black), 'alpha'
        (B,H,W), 'albedo' (B,H,W,3), with ``params``' intrinsics (for the image of which this one is a
        ``K_scale`` resize)."""
        verts, _ = self.vertices(params)
        lit = self.render(params, verts, (height, width), background=background, antialias=True, K_scale=K_scale)
        flat = self.render(params, verts, (height, width), shaded=False, K_scale=K_scale)
        return {"rgb": lit.rgb, "alpha": lit.alpha[..., 0], "albedo": flat.rgb, "mask": lit.mask,
                "out": lit, "vertices": verts, "verts_cam": self.to_camera(params, verts)}

    # -- fitting -------------------------------------------------------------------------------------------------
    def stages(self, names=DEFAULT_ORDER, batch: TargetBatch | None = None) -> list[Stage]:
        has68 = self.landmarks68 is not None and (batch is None or batch.lmk68 is not None)
        has_dense = self.dense is not None and (batch is None or batch.dense is not None)
        return build_stages(self.cfg, has68=has68, has_dense=has_dense, n_tex=self.texture_space.n_components,
                            free_albedo=self.free_albedo, names=names)

    def prepare(self, targets: list[FitTarget] | FitTarget, names=DEFAULT_ORDER) -> TargetBatch:
        """Crop, resample and move the measurements to tensors in crop pixels (all resolutions the stages use)."""
        if isinstance(targets, FitTarget):
            targets = [targets]
        sizes = tuple(s.resolution for s in self.stages(names) if s.resolution)
        return prepare_batch(targets, self.cfg, self.landmarks68 is not None, self.dense is not None, sizes,
                             device=self.device, dtype=self.dtype)

    def _points_fn(self, batch: TargetBatch):
        """The model points matching ``batch.landmark_problem_inputs()`` (68 and/or dense, in that order)."""
        which = tuple(k for k, v in (("68", batch.lmk68), ("dense", batch.dense)) if v is not None)

        faces = self.faces if self.lmk_model is None else self.lmk_model.faces

        def fn(vertices, params):
            pts = self.model_points(params, vertices, which, faces)
            return torch.cat([pts[k] for k in which], 1)
        return fn

    def initial_params(self, batch: TargetBatch) -> FlameParams:
        cfg = self.cfg
        light_c = 3 if cfg.texture.light == "sh9x3" else 1
        B = batch.size
        p = FlameParams.zeros(B, self.n_shape, self.n_expr, n_tex=self.texture_space.n_components,
                              light_channels=light_c, device=self.device, dtype=self.dtype)
        p.focal_px = batch.focal_px.view(B, 1).clone()
        p.principal_px = batch.principal_px.clone()
        targets, weights, pnp = batch.landmark_problem_inputs()
        problem = LandmarkProblem(self._points_fn(batch), targets, weights, pnp)
        model = self.model if self.lmk_model is None else self.lmk_model
        return initialize(model, problem, p, float(cfg.resolution), cfg.init)

    def fit(self, target: FitTarget, init: FlameParams | None = None, stages=None, callback=None) -> RawFit:
        """Fit one image. ``init``: warm start with intrinsics of the ORIGINAL image (mapped to the crop here);
        ``stages``: names of the stages to run, in order (default rigid, landmarks, appearance, photometric,
        offset; stages with 0 iterations are skipped). ``callback(stage, i, n)`` is called every iteration."""
        return self.fit_batch([target], None if init is None else [init], stages, callback=callback)[0]

    def fit_batch(self, targets: list[FitTarget], init: list[FlameParams] | None = None, stages=None,
                  sharing: Sharing | None = None, callback=None) -> list[RawFit]:
        """Fit B targets as one problem; ``sharing`` says which parameters are one for all (default none:
        independent images, same results as fitting them one by one). Returns one :class:`RawFit` per target."""
        sharing = sharing or Sharing()
        names = parse_stage_names(stages or DEFAULT_ORDER)
        self._check_stages(names)
        batch = self.prepare(list(targets), names)
        B = batch.size
        t0 = time.perf_counter()
        if init is None:
            params = self.initial_params(batch)
        else:
            if len(init) != B:
                raise ConfigError(f"{len(init)} initial parameter sets for {B} targets")
            params = self._warm_start(init, batch)
        params = self._apply_sharing(params, sharing)
        init_s = time.perf_counter() - t0
        params, logs = self.run_stages(self.stages(names, batch), params, batch, sharing, callback)
        out = []
        for b in range(B):
            item_logs = [StageLog(lg.name, lg.iters, lg.seconds / B, lg.item_loss_start[b], lg.item_loss_end[b],
                                  {}, lg.item_iters_run[b] if lg.item_iters_run else lg.iters_run) for lg in logs]
            if B == 1:
                item_logs = logs
            out.append(RawFit(params=params._map(lambda t, b=b: t[b:b + 1].detach().clone()),
                              crop=batch.crops[b], target=batch.targets[b], stages=item_logs,
                              init_seconds=init_s / B))
        return out

    def run_stages(self, stages: list[Stage], params: FlameParams, batch: TargetBatch, sharing: Sharing | None = None,
                   callback=None, light_done: bool = False) -> tuple[FlameParams, list[StageLog]]:
        """Run ``stages`` in order from ``params`` (crop intrinsics) on a prepared ``batch``: the one stage loop of
        photos and video windows. Before the first photometric stage the light is solved in closed form (unless
        ``light_done``: e.g. a warm-started video window keeps its frames' light)."""
        logs: list[StageLog] = []
        for stage in stages:
            if stage.photometric and not light_done:
                self._ensure_offset(params, stage)
                self.init_light(params, batch, stage.resolution)
                light_done = True
            elif "tex_offset" in stage.free:
                self._ensure_offset(params, stage)
            params, log = run_stage(self, stage, params, batch, sharing, callback)
            logs.append(log)
        return params, logs

    def _warm_start(self, init: list[FlameParams], batch: TargetBatch) -> FlameParams:
        """Warm start: parameters with intrinsics of the ORIGINAL images, mapped to the crops."""
        rows = []
        n_tex = self.texture_space.n_components
        for p0, crop in zip(init, batch.crops, strict=True):
            p = params_to_crop(p0.to(self.device, self.dtype), crop)
            if p.tex.shape[1] != n_tex:
                p.tex = torch.zeros(1, n_tex, device=self.device, dtype=self.dtype)
            if p.tex_offset is not None and p.tex_offset.shape[1] != self.cfg.texture.free_resolution:
                p.tex_offset = None
            rows.append(p)
        if len({r.tex_offset is None for r in rows}) > 1:
            rows = [r if r.tex_offset is not None else self._with_offset(r) for r in rows]
        out = rows[0]
        for name, value in out.tensors().items():
            if value is not None:
                setattr(out, name, torch.cat([getattr(r, name) for r in rows], 0))
        return out

    def _with_offset(self, p: FlameParams) -> FlameParams:
        r = self.cfg.texture.free_resolution
        p.tex_offset = torch.zeros(p.batch_size, r, r, 3, device=self.device, dtype=self.dtype)
        return p

    @staticmethod
    def _apply_sharing(params: FlameParams, sharing: Sharing) -> FlameParams:
        """Shared fields start at the batch mean of their per-item initial values."""
        for name in sharing.shared:
            v = getattr(params, name, None)
            if v is not None and v.shape[0] > 1:
                setattr(params, name, v.mean(0, keepdim=True).expand_as(v).clone())
        return params

    def _ensure_offset(self, params: FlameParams, stage: Stage) -> None:
        if "tex_offset" in stage.free and params.tex_offset is None:
            self._with_offset(params)

    @torch.no_grad()
    def init_light(self, params: FlameParams, batch: TargetBatch, size: int | None = None) -> None:
        """Closed-form SH light for the current albedo and geometry, per item: the image is linear in the SH
        coefficients (rgb = albedo * basis(n) @ sh), so a damped least-squares solve on the skin pixels starts the
        photometric stage close to the answer."""
        from flamefit.render.shade import sh_basis

        size = size or batch.resolution
        level = batch.level(size)
        verts, _ = self.vertices(params)
        out = self.render(params, verts, (size, size), shaded=False, K_scale=level.scale)
        light = params.light.clone()
        C = params.light.shape[-1]
        lam = self.cfg.texture.light_ridge
        for b in range(params.batch_size):
            sel = out.mask[b] & (level.mask[b] > 0.5)
            if int(sel.sum()) < 20:
                continue
            basis = sh_basis(out.normals[b][sel])  # (N,9)
            albedo = out.rgb[b][sel]  # (N,3)
            img = level.image[b][sel]
            if C == 1:
                A = torch.cat([basis * albedo[:, c:c + 1] for c in range(3)])
                light[b, :, 0] = _ridge(A, img.t().reshape(-1, 1), params.light[b, :, 0], lam)
            else:
                for c in range(3):
                    light[b, :, c] = _ridge(basis * albedo[:, c:c + 1], img[:, c:c + 1], params.light[b, :, c], lam)
        params.light = light


def _ridge(A: torch.Tensor, y: torch.Tensor, prior: torch.Tensor, lam: float = 1e-3) -> torch.Tensor:
    H = A.t() @ A
    lam = lam * (H.diagonal().mean() + 1e-12)
    H = H + lam * torch.eye(9, dtype=A.dtype, device=A.device)
    g = A.t() @ y.squeeze(-1) + lam * prior
    return torch.linalg.solve(H, g)
