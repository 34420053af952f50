"""The texture-building work folder's per-photo files and the whole-set stages that do not need the fit core.

Layout of a work folder (the pipeline's stages; each file written atomically, so an interrupted build resumes by
skipping what exists)::

    WORK/unwrapped/<name>.npz   one per photo: albedo (H,W,3) float16 RGB 0..1, weight (H,W) float16,
                                visible (H,W) bool, uv_mask (H,W) bool, plus "meta" (json text)
    WORK/inpaint.pt             the inpainting network checkpoint (flamefit.texspace.inpaint)
    WORK/completed/<name>.npz   albedo (H,W,3) float16 after filling the unknown texels
    WORK/space.npz              the PCA texture space (FLAME_texture.npz layout) + preview.png

:func:`save_unwrapped` / :func:`load_maps` are the per-item / whole-set halves; :func:`complete_maps` and
:func:`build_space` are the stages after unwrapping, which the command layer can call directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from flamefit._files import atomic_path
from flamefit.errors import InputImageError, ModelFileError


def _atomic_savez(path: Path, arrays: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def save_unwrapped(path: str | Path, albedo, weight, visible, uv_mask, meta: dict | None = None) -> Path:
    """One photo's unwrapped maps -> ``path`` (.npz, float16 albedo/weight, atomic)."""
    def np_(x):
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    albedo = np_(albedo)
    if albedo.ndim != 3 or albedo.shape[-1] != 3:
        raise ValueError(f"albedo must be (H,W,3), got {albedo.shape}")
    return _atomic_savez(Path(path), {
        "albedo": albedo.astype(np.float16), "weight": np_(weight).astype(np.float16),
        "visible": np_(visible).astype(bool), "uv_mask": np_(uv_mask).astype(bool),
        "meta": np.array(json.dumps(meta or {})),
    })


@dataclass
class MapSet:
    """Maps of many photos: names (N), albedo (N,H,W,3) float32, weight (N,H,W) float32, visible (N,H,W) bool,
    uv_mask (H,W) bool (the union over the set; all files share a layout); gauge: how the albedo was normalised
    (see :func:`flamefit.texspace.pipeline.gauge_gains`; empty: as unwrapped)."""

    names: list[str]
    albedo: torch.Tensor
    weight: torch.Tensor
    visible: torch.Tensor
    uv_mask: torch.Tensor
    gauge: dict = field(default_factory=dict)

    def known(self, min_weight: float = 0.05) -> torch.Tensor:
        """Texels trusted as observations: weight above ``min_weight`` and inside the layout."""
        return (self.weight > min_weight) & self.uv_mask


def load_maps(paths: Sequence[str | Path], *, keys: Sequence[str] = ("albedo", "weight", "visible")) -> MapSet:
    """Stack per-photo ``.npz`` files (from :func:`save_unwrapped`, or completed maps with only ``albedo``)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputImageError("no unwrapped maps to load: the unwrap stage produced nothing (see its failures)")
    albedo, weight, visible, names = [], [], [], []
    uv_mask = None
    for p in paths:
        try:
            with np.load(p, allow_pickle=False) as d:
                a = d["albedo"].astype(np.float32)
                w = d["weight"].astype(np.float32) if "weight" in keys and "weight" in d.files else None
                v = d["visible"].astype(bool) if "visible" in keys and "visible" in d.files else None
                m = d["uv_mask"].astype(bool) if "uv_mask" in d.files else None
        except Exception as exc:  # noqa: BLE001 - damaged/partial files of all kinds
            raise ModelFileError(f"cannot read map file {p}: {exc}. Delete it so the stage redoes it") from exc
        if albedo and a.shape != albedo[0].shape:
            raise ModelFileError(f"{p}: maps are {a.shape[:2]}, the others {albedo[0].shape[:2]}; one layout per set")
        albedo.append(a)
        weight.append(w if w is not None else np.ones(a.shape[:2], np.float32))
        visible.append(v if v is not None else np.ones(a.shape[:2], bool))
        if m is not None:
            uv_mask = m if uv_mask is None else uv_mask | m
        names.append(p.stem)
    H, W = albedo[0].shape[:2]
    return MapSet(names=names, albedo=torch.from_numpy(np.stack(albedo)), weight=torch.from_numpy(np.stack(weight)),
                  visible=torch.from_numpy(np.stack(visible)),
                  uv_mask=torch.from_numpy(uv_mask if uv_mask is not None else np.ones((H, W), bool)))


def read_meta(path: str | Path) -> dict:
    """The ``meta`` json of one unwrapped map file (empty when it has none)."""
    try:
        with np.load(path, allow_pickle=False) as d:
            return json.loads(str(d["meta"])) if "meta" in d.files else {}
    except Exception as exc:  # noqa: BLE001 - damaged/partial files of all kinds
        raise ModelFileError(f"cannot read map file {path}: {exc}. Delete it so the stage redoes it") from exc


FillFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def complete_maps(maps: MapSet, fill: FillFn, *, min_weight: float = 0.05, batch: int = 16) -> torch.Tensor:
    """Fill every map's unknown texels (inside the layout) with ``fill(maps, known)`` (a classical fill or
    ``lambda m, k: inpaint_maps(net, m, k, layout)``), in batches. -> (N,H,W,3)."""
    known = maps.known(min_weight)
    out = []
    for i in range(0, len(maps.names), batch):
        k = known[i:i + batch]
        m = maps.albedo[i:i + batch] * k.unsqueeze(-1)
        out.append(fill(m, k).clamp(0.0, 1.0))
    return torch.cat(out)


def build_space(completed: torch.Tensor, region: torch.Tensor, vt, ft, out: str | Path, *, n_components: int,
                weights: torch.Tensor | None = None, preview: str | Path | None = None, mesh: tuple | None = None,
                observed: torch.Tensor | None = None, known: torch.Tensor | None = None, em_iters: int = 10
                ) -> Path | tuple[Path, object]:
    """PCA of completed maps inside ``region`` -> ``out`` (FLAME_texture.npz layout) and an optional preview PNG of
    the first 5 components at +-2 sd (on ``mesh`` = (verts, faces, vt, ft, camera) if given).

    With ``observed`` (N,H,W,3) and ``known`` (N,H,W) the PCA treats the unknown texels as missing data
    (:func:`flamefit.texspace.pca.fit_pca_missing`, ``em_iters`` rounds started from ``completed``) and the
    return value is (path, :class:`flamefit.texspace.pca.MissingDataInfo`)."""
    from flamefit.texspace.pca import fit_pca, fit_pca_missing, preview_grid, save_pca, save_preview

    k = min(int(n_components), completed.shape[0] - 1)
    info = None
    if known is not None:
        if observed is None or weights is not None:
            raise ValueError("missing-data PCA needs the observed maps, and takes no per-map weights")
        result, _, info = fit_pca_missing(observed, known & region, k, init=completed, region=region, iters=em_iters)
    else:
        result = fit_pca(completed, k, region=region, weights=weights)
    path = save_pca(out, result, vt, ft)
    if preview is not None:
        save_preview(preview, preview_grid(result.mean, result.components, n=5, mesh=mesh,
                                           tile=None if mesh is not None else 256))
    return path if info is None else (path, info)
