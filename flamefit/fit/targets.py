"""What the fitter fits: :class:`FitTarget` (one image's measurements, original pixels) and :class:`TargetBatch`
(B targets cropped, resampled and stacked as tensors in crop pixels, built once per fit by :func:`prepare_batch`).

Everything per image that does not change while fitting (crop, resampled image and masks at every resolution a
stage uses, landmark targets and weights, intrinsics) is computed here once, so the optimisation loop only reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from flamefit import ibug68
from flamefit.errors import ConfigError, InputImageError
from flamefit.fit.config import FitConfig
from flamefit.fit.crop import Crop
from flamefit.fit.init import target_focal


@dataclass
class FitTarget:
    """What was measured in one image, in pixels of the ORIGINAL image.

    image (H,W,3) float RGB 0..1; lmks_68 (68,2) iBUG order and/or lmks_dense (478,2) MediaPipe order (x, y);
    mask (H,W) skin weights 0..1 for the photometric term (None: the landmark-hull region is used);
    lmk68_weights (68,) optional per-point confidence; focal_px: known focal of the original image (else config);
    exif_focal_px: the focal the image file's EXIF gives (used unless the config sets one or ``use_exif`` is off).
    ``observation``: the :class:`flamefit.observe.Observation` it came from, if any (blendshapes, transform).
    ``landmarks_source``: where ``lmks_68``/``lmks_dense`` come from ('detected', or 'fit projection' when a
    saved fit provided them only to place the crop).
    """

    image: np.ndarray
    lmks_68: np.ndarray | None = None
    lmks_dense: np.ndarray | None = None
    mask: np.ndarray | None = None
    lmk68_weights: np.ndarray | None = None
    focal_px: float | None = None
    exif_focal_px: float | None = None
    name: str = ""
    observation: object | None = None
    landmarks_source: str = "detected"
    image_size: tuple[int, int] | None = None  # (H, W) when ``image`` is not at hand (landmark-only batches)

    @classmethod
    def from_observation(cls, obs, name: str = "") -> FitTarget:
        """From :class:`flamefit.observe.Observation` (image, lmks_dense, lmks_68, mask)."""
        return cls(image=np.asarray(obs.image, dtype=np.float32), lmks_68=getattr(obs, "lmks_68", None),
                   lmks_dense=getattr(obs, "lmks_dense", None), mask=getattr(obs, "mask", None), name=name,
                   exif_focal_px=getattr(obs, "exif_focal_px", None), observation=obs)


@dataclass
class ImageLevel:
    """The crop at one resolution: image (B,S,S,3), photometric weights (B,S,S) (skin mask x inside-image), and
    the factor from fit-resolution pixels to this level's pixels."""

    size: int
    image: torch.Tensor
    mask: torch.Tensor
    scale: float


@dataclass
class TargetBatch:
    """B prepared targets, in pixels of the square crop of side ``resolution``.

    lmk68 (B,68,2) / dense (B,N,2): landmark targets, zeros where an item has none (``has68``/``has_dense`` (B,)
    bool then False and the weights zero); lmk68_weights (B,68), dense_weights (B,N): per-point loss weights
    (config weight x contour factor x confidence); focal_px (B,), principal_px (B,2): intrinsics of the crop;
    levels: the crop's image and photometric mask at each resolution the stages use (see :class:`ImageLevel`).
    """

    targets: list[FitTarget]
    crops: list[Crop]
    resolution: int
    focal_px: torch.Tensor
    principal_px: torch.Tensor
    lmk68: torch.Tensor | None
    lmk68_weights: torch.Tensor | None
    has68: torch.Tensor
    dense: torch.Tensor | None
    dense_weights: torch.Tensor | None
    has_dense: torch.Tensor
    levels: dict[int, ImageLevel] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.targets)

    @property
    def names(self) -> list[str]:
        return [t.name or f"item {i}" for i, t in enumerate(self.targets)]

    def level(self, size: int) -> ImageLevel:
        if size not in self.levels:
            raise KeyError(f"no image level of {size} px prepared (have {sorted(self.levels)})")
        return self.levels[size]

    def select_dense(self, idx) -> TargetBatch:
        """The batch with only the MediaPipe points ``idx`` (None: all; empty: none), for a fitter view with the
        same subset (:meth:`flamefit.fit.fitter.Fitter.with_identity`); crops and intrinsics unchanged."""
        if idx is None or self.dense is None:
            return self
        idx = torch.as_tensor(list(idx), dtype=torch.int64)
        if not len(idx):
            return dataclasses.replace(self, dense=None, dense_weights=None,
                                       has_dense=torch.zeros_like(self.has_dense))
        return dataclasses.replace(self, dense=self.dense[:, idx], dense_weights=self.dense_weights[:, idx])

    def landmark_problem_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(targets (B,N,2), weights (B,N), pnp_mask (N,)) over the 68 and dense sets in that order."""
        t, w, m = [], [], []
        if self.lmk68 is not None:
            t.append(self.lmk68)
            w.append(self.lmk68_weights)
            pm = torch.ones(68, dtype=torch.bool)
            pm[list(ibug68.JAW)] = False  # the contour slides along the silhouette: not a fixed point for PnP
            m.append(pm)
        if self.dense is not None:
            t.append(self.dense)
            # in the initialisation's joint solve the dense points together weigh as much as 68 points
            w.append(self.dense_weights * 68.0 / self.dense.shape[1])
            m.append(torch.ones(self.dense.shape[1], dtype=torch.bool))
        return torch.cat(t, 1), torch.cat(w, 1), torch.cat(m)


def _hull_mask(size: int, pts68: np.ndarray | None, pts_dense: np.ndarray | None) -> np.ndarray:
    """The landmark hull minus eyes and mouth (skin weights when no skin mask was given)."""
    import cv2

    pts = pts68 if pts68 is not None else pts_dense
    m = np.zeros((size, size), np.float32)
    hull = cv2.convexHull((pts - 0.5).astype(np.float32))
    cv2.fillConvexPoly(m, hull.astype(np.int32), 1.0)
    if pts68 is not None:  # drop eyes and mouth interior (not skin)
        q = (pts68 - 0.5).astype(np.int32)
        for idx in (ibug68.RIGHT_EYE, ibug68.LEFT_EYE, ibug68.INNER_LIPS):
            cv2.fillPoly(m, [q[list(idx)]], 0.0)
    return m


def _downsample(a: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)


def prepare_batch(targets: list[FitTarget], cfg: FitConfig, uses68: bool, uses_dense: bool,
                  level_sizes: tuple[int, ...] = (), device=None, dtype=torch.float32,
                  landmarks_only: bool = False) -> TargetBatch:
    """Crop, resample and move B targets to tensors in crop pixels (see :class:`TargetBatch`).

    ``uses68``/``uses_dense``: which landmark sets the fitter has model positions for; ``level_sizes``: the
    image resolutions the stages render at (the fit resolution is always included). ``landmarks_only``: the
    landmarks, crops and intrinsics alone (no image levels: for stages that render nothing; the images are
    not read, only their size, from ``image_size`` or the image)."""
    if not targets:
        raise ConfigError("nothing to fit: the list of targets is empty")
    R = int(cfg.resolution)
    kw = {"device": device, "dtype": dtype}
    crops, focal, principal, l68, w68, h68, ld, wd, hd = [], [], [], [], [], [], [], [], []
    images, masks = [], []
    n_dense = None
    for i, target in enumerate(targets):
        label = target.name or f"item {i}"
        if landmarks_only and target.image_size is not None:
            image = None
            H, W = target.image_size
        else:
            image = np.asarray(target.image, dtype=np.float32)
            if image.ndim != 3 or image.shape[2] != 3:
                raise InputImageError(f"{label}: expected an (H,W,3) RGB image, got {image.shape}")
            H, W = image.shape[:2]
        pts = [np.asarray(p, dtype=np.float64) for p in (target.lmks_68, target.lmks_dense) if p is not None]
        if not pts:
            raise ConfigError(f"{label}: fitting needs detected landmarks (lmks_68 and/or lmks_dense)")
        if not all(np.isfinite(p).all() for p in pts):
            raise InputImageError(f"{label}: the landmarks contain NaN/inf; detect them again")
        use68 = target.lmks_68 is not None and uses68
        use_dense = target.lmks_dense is not None and uses_dense
        if not (use68 or use_dense):
            raise ConfigError(
                f"{label}: no usable landmarks: the 68-point embedding needs lmks_68, the 478 correspondence "
                "needs lmks_dense")
        crop = Crop.around(np.concatenate(pts), R, cfg.crop_scale)
        crops.append(crop)
        f = target_focal(target, H, W, cfg.camera)[0]
        pp = (W / 2.0, H / 2.0)
        focal.append(f * crop.scale)
        principal.append(crop.to_crop(np.array(pp)))
        p68 = crop.to_crop(target.lmks_68) if use68 else None
        pd = crop.to_crop(target.lmks_dense) if use_dense else None
        if not landmarks_only:
            images.append(crop.warp(image))
            # pixels of the crop that lie outside the original image carry no measurement
            valid = crop.warp(np.ones((H, W), np.float32), border="zero") > 0.999
            if target.mask is not None:
                m = np.clip(crop.warp(np.asarray(target.mask, dtype=np.float32), border="zero"), 0, 1)
            else:
                m = _hull_mask(R, p68, pd)
            masks.append(m * valid)
        w = np.ones(68) * cfg.weights.lmk68
        w[list(ibug68.JAW)] *= cfg.weights.lmk68_contour
        if target.lmk68_weights is not None:
            w = w * np.asarray(target.lmk68_weights, dtype=np.float64)
        l68.append(p68 if use68 else np.zeros((68, 2)))
        w68.append(w if use68 else np.zeros(68))
        h68.append(use68)
        if use_dense:
            if n_dense is not None and pd.shape[0] != n_dense:
                raise ConfigError(f"{label}: {pd.shape[0]} dense landmarks, other items have {n_dense}")
            n_dense = pd.shape[0]
        ld.append(pd)
        hd.append(use_dense)
    any68, any_dense = any(h68), any(hd)
    for i in range(len(targets)):
        if ld[i] is None:
            ld[i] = np.zeros((n_dense or 0, 2))
        wd.append(np.full(len(ld[i]), cfg.weights.lmk_dense) * float(hd[i]))

    def t(a):
        return torch.as_tensor(np.asarray(a), **kw)

    batch = TargetBatch(
        targets=list(targets), crops=crops, resolution=R, focal_px=t(focal), principal_px=t(np.stack(principal)),
        lmk68=t(np.stack(l68)) if any68 else None, lmk68_weights=t(np.stack(w68)) if any68 else None,
        has68=torch.as_tensor(h68), dense=t(np.stack(ld)) if any_dense else None,
        dense_weights=t(np.stack(wd)) if any_dense else None, has_dense=torch.as_tensor(hd),
    )
    if landmarks_only:
        return batch
    batch.levels[R] = ImageLevel(R, t(np.stack(images)), t(np.stack(masks)), 1.0)
    for s in sorted(set(level_sizes) - {R}):
        if s <= 0 or s > R:
            continue
        batch.levels[s] = ImageLevel(s, t(np.stack([_downsample(a, s) for a in images])),
                                     t(np.stack([_downsample(a, s) for a in masks])), s / R)
    return batch
