"""Albedo models on FLAME's UV layout: PCA texture spaces and a free albedo map.

Formats (any resolution and component count; never hard-coded):

* official ``FLAME_texture.npz``: ``mean`` (H,W,3), ``tex_dir`` (H,W,3,K), ``vt`` (T,2), ``ft`` (F,3);
  BGR, 0..255 on disk, 1 coefficient unit = 1 sd.
* ``FLAME_albedo_from_BFM.npz`` (BFM_to_FLAME): ``MU`` (H*W*3,) and ``PC`` (H*W*3,K), BGR like the official file
  (DECA-style readers flip it the same way), values 0..1 (0..255 is detected and scaled); optional
  ``specMU``/``specPC`` (specular albedo, kept but not used by the diffuse fitter) and ``vt``/``ft``.
* free albedo (no texture space): a mean map initialised to a skin tone and no components; the fitter optimises a
  per-texel offset with smoothness and left-right symmetry priors.

Everything is converted to RGB 0..1 at the loader. Maps are channels-last ``(H,W,3)`` in image row order: texel
row 0 is ``v = 1`` (the top of the texture image), as in the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flamefit.errors import ModelFileError


class TextureSpace(torch.nn.Module):
    """Linear albedo model ``albedo(code) = mean + sum_k code_k * basis_k`` (RGB 0..1, channels-last).

    Buffers: ``mean`` (H,W,3), ``basis`` (K,H,W,3) (K may be 0), ``vt`` (T,2) float or None, ``ft`` (F,3) int64 or
    None. ``kind`` is 'flame', 'bfm' or 'free'; ``source`` the file it came from (or None).
    """

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, vt=None, ft=None, kind: str = "flame",
                 source: str | None = None, spec_mean: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("basis", basis)
        self.register_buffer("vt", None if vt is None else torch.as_tensor(vt, dtype=mean.dtype))
        self.register_buffer("ft", None if ft is None else torch.as_tensor(np.asarray(ft, dtype=np.int64)))
        self.register_buffer("spec_mean", spec_mean)
        self.kind = kind
        self.source = source

    @property
    def n_components(self) -> int:
        return int(self.basis.shape[0])

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.mean.shape[0]), int(self.mean.shape[1])

    def forward(self, code: torch.Tensor | None = None, batch: int | None = None) -> torch.Tensor:
        """(B,k) code (k <= n_components; may be None or empty) -> (B,H,W,3) albedo, RGB 0..1 (not clamped)."""
        if code is None or code.shape[-1] == 0:
            b = batch if batch is not None else (1 if code is None else code.shape[0])
            return self.mean.unsqueeze(0).expand(b, -1, -1, -1)
        k = code.shape[-1]
        if k > self.n_components:
            raise ValueError(f"texture code has {k} components; the texture space has {self.n_components}")
        flat = self.basis[:k].reshape(k, -1)
        out = torch.addmm(self.mean.reshape(1, -1), code.to(flat.dtype), flat)  # one pass (read every iteration)
        return out.reshape(code.shape[0], *self.mean.shape)

    def truncated(self, n: int) -> TextureSpace:
        """The same space keeping only the first ``n`` components."""
        n = max(0, min(int(n), self.n_components))
        return TextureSpace(self.mean, self.basis[:n], self.vt, self.ft, self.kind, self.source, self.spec_mean)

    @classmethod
    def free(cls, resolution: int = 128, skin_rgb=(0.78, 0.60, 0.50), vt=None, ft=None,
             dtype: torch.dtype = torch.float32) -> TextureSpace:
        """No texture space: a flat skin-coloured mean and zero components (use a texel offset on top)."""
        mean = torch.tensor(skin_rgb, dtype=dtype).view(1, 1, 3).expand(resolution, resolution, 3).clone()
        return cls(mean, torch.zeros(0, resolution, resolution, 3, dtype=dtype), vt, ft, kind="free")


def _bgr255_to_rgb01(a: np.ndarray, scale: float) -> np.ndarray:
    return np.ascontiguousarray(a[..., ::-1, :] if a.ndim == 4 else a[..., ::-1]) / scale


def load_texture_space(path: str | Path, n_components: int | None = None,
                       dtype: torch.dtype = torch.float32) -> TextureSpace:
    """Load ``FLAME_texture.npz`` or ``FLAME_albedo_from_BFM.npz`` (format detected from the keys)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"texture space file {path} does not exist. Download FLAME_texture.npz from "
            "https://flame.is.tue.mpg.de (free registration) or pass --texture-space none for a free albedo"
        )
    arrays = _read_npz(path)
    data, keys = arrays, set(arrays)
    validate_texture_arrays(arrays, str(path))
    vt = data["vt"].astype(np.float64) if "vt" in keys else None
    ft = data["ft"].astype(np.int64) if "ft" in keys else None
    try:
        if {"mean", "tex_dir"} <= keys:
            mean = data["mean"].astype(np.float32)
            tex_dir = data["tex_dir"].astype(np.float32)
            if mean.ndim != 3 or mean.shape[-1] != 3 or tex_dir.shape[:3] != mean.shape or tex_dir.ndim != 4:
                raise ModelFileError(
                    f"{path}: expected mean (H,W,3) and tex_dir (H,W,3,K), got {mean.shape} and {tex_dir.shape}"
                )
            k = tex_dir.shape[-1] if n_components is None else min(n_components, tex_dir.shape[-1])
            mean_rgb = mean[..., ::-1] / 255.0
            basis = np.moveaxis(tex_dir[..., ::-1, :k], -1, 0) / 255.0  # (K,H,W,3)
            kind, spec = "flame", None
        elif {"MU", "PC"} <= keys:
            mu = data["MU"].astype(np.float32).reshape(-1)
            pc = data["PC"].astype(np.float32)
            pc = pc.reshape(mu.size, -1)
            side = int(round(np.sqrt(mu.size / 3)))
            if side * side * 3 != mu.size:
                raise ModelFileError(f"{path}: MU has {mu.size} values, not a square RGB map (H*W*3)")
            scale = 255.0 if mu.max() > 2.0 else 1.0
            k = pc.shape[1] if n_components is None else min(n_components, pc.shape[1])
            mean_rgb = mu.reshape(side, side, 3)[..., ::-1] / scale
            basis = np.moveaxis(pc[:, :k].reshape(side, side, 3, k)[..., ::-1, :], -1, 0) / scale
            spec = None
            if "specMU" in keys:
                smu = data["specMU"].astype(np.float32).reshape(-1)
                if smu.size == mu.size:
                    spec = torch.as_tensor(np.ascontiguousarray(smu.reshape(side, side, 3)[..., ::-1] / scale),
                                           dtype=dtype)
            kind = "bfm"
        else:
            raise ModelFileError(
                f"{path} is not a FLAME texture space: expected keys mean/tex_dir (FLAME_texture.npz) or "
                f"MU/PC (FLAME_albedo_from_BFM.npz), found {sorted(keys)}"
            )
    except ValueError as exc:
        raise ModelFileError(f"{path}: inconsistent array shapes ({exc})") from exc
    return TextureSpace(
        torch.as_tensor(np.ascontiguousarray(mean_rgb), dtype=dtype),
        torch.as_tensor(np.ascontiguousarray(basis), dtype=dtype),
        vt, ft, kind=kind, source=str(path), spec_mean=spec,
    )


# UV coordinates live in [0, 1]; a little slack for layouts written with rounding or a half-texel border.
_VT_SLACK = 0.01
_ARRAY_KEYS = ("mean", "tex_dir", "MU", "PC", "specMU", "specPC", "vt", "ft")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of the npz, read without unpickling; every failure is a ModelFileError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            out = {}
            for name in names:
                if name not in _ARRAY_KEYS:
                    continue  # other entries are not used; don't spend memory (or trust) on them
                try:
                    out[name] = z[name]
                except ValueError as exc:
                    if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                        raise ModelFileError(
                            f"{path}: array '{name}' holds Python objects (a pickled object array); texture "
                            "spaces must hold plain numeric arrays, which flamefit reads without unpickling. "
                            "Re-save it with numeric arrays (np.savez(..., mean=..., tex_dir=..., vt=..., ft=...))"
                        ) from None
                    raise
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/npz errors of all kinds
        raise ModelFileError(f"cannot read texture space {path}: {' '.join(str(exc).split())}. Is it an .npz "
                             "file?") from None
    if not out and not names:
        raise ModelFileError(f"{path}: the npz holds no arrays; expected mean/tex_dir or MU/PC")
    if not out:
        raise ModelFileError(f"{path} is not a FLAME texture space: expected keys mean/tex_dir (FLAME_texture.npz) "
                             f"or MU/PC (FLAME_albedo_from_BFM.npz), found {sorted(names)}")
    return out


def validate_texture_arrays(arrays: dict[str, np.ndarray], src: str) -> None:
    """Shapes, dtypes, finiteness and index ranges of a texture space's arrays: the renderer's kernels index with
    ``vt``/``ft``, so nothing out of range may get past the loader."""

    def bad(msg: str) -> ModelFileError:
        return ModelFileError(f"{src}: invalid texture space: {msg}. Use the official FLAME_texture.npz / "
                              "FLAME_albedo_from_BFM.npz or re-save the file with valid arrays.")

    for name, a in arrays.items():
        if a.dtype.kind not in "fiu" or a.dtype.itemsize > 8:
            raise bad(f"'{name}' has dtype {a.dtype}, expected a real numeric dtype (float or integer)")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise bad(f"'{name}' holds NaN or infinite values")
        if a.size == 0 and name not in ("tex_dir", "PC", "specPC"):
            raise bad(f"'{name}' is empty (shape {a.shape})")
    if "mean" in arrays:
        mean = arrays["mean"]
        if mean.ndim != 3 or mean.shape[-1] != 3 or min(mean.shape[:2]) < 1:
            raise bad(f"mean has shape {mean.shape}, expected (H, W, 3)")
        tex_dir = arrays.get("tex_dir")
        if tex_dir is not None and (tex_dir.ndim != 4 or tex_dir.shape[:3] != mean.shape):
            raise bad(f"tex_dir has shape {tex_dir.shape}, expected (H, W, 3, K) with (H, W) = {mean.shape[:2]}")
    if ("vt" in arrays) != ("ft" in arrays):
        raise bad("it has only one of 'vt' and 'ft'; a UV layout needs both")
    if "vt" in arrays:
        vt, ft = arrays["vt"], arrays["ft"]
        if vt.ndim != 2 or vt.shape[1] != 2:
            raise bad(f"vt has shape {vt.shape}, expected (T, 2) texture coordinates")
        lo, hi = float(vt.min()), float(vt.max())
        if lo < -_VT_SLACK or hi > 1 + _VT_SLACK:
            raise bad(f"vt values span [{lo:g}, {hi:g}], expected texture coordinates in [0, 1]")
        if ft.ndim != 2 or ft.shape[1] != 3:
            raise bad(f"ft has shape {ft.shape}, expected (F, 3) indices into vt")
        if ft.dtype.kind == "f":
            if not np.array_equal(ft, np.round(ft)):
                raise bad("ft holds non-integer values; expected indices into vt")
        if float(ft.min()) < 0 or float(ft.max()) >= vt.shape[0]:
            raise bad(f"ft indexes texture coordinates {ft.min():g} to {ft.max():g} but vt has {vt.shape[0]} "
                      f"(valid indices 0 to {vt.shape[0] - 1})")


# -- priors on texel maps (used for the offset and the free albedo) ----------------------------------------------

def smoothness_loss(tex: torch.Tensor, weight_map: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared finite difference of a (B,H,W,C) map along rows and columns."""
    dx = tex[:, :, 1:] - tex[:, :, :-1]
    dy = tex[:, 1:] - tex[:, :-1]
    if weight_map is not None:
        dx = dx * weight_map[:, :, 1:]
        dy = dy * weight_map[:, 1:]
    return dx.pow(2).mean() + dy.pow(2).mean()


def symmetry_loss(tex: torch.Tensor) -> torch.Tensor:
    """Left-right symmetry of a (B,H,W,C) map on FLAME's UV layout.

    FLAME's layout mirrors the face about u = 0.5 (checked on the stand-in: mirrored vertices land within ~0.007 in
    u), so the mirror of a texel is the horizontally flipped map.
    """
    return (tex - tex.flip(2)).pow(2).mean()


def resize_map(tex: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a (B,H,W,C) map to ``size`` = (H', W')."""
    if tuple(tex.shape[1:3]) == tuple(size):
        return tex
    out = F.interpolate(tex.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
    return out.permute(0, 2, 3, 1)
