"""All fitted quantities of one (batched) FLAME fit in one dataclass.

Conventions (see docs/ARCHITECTURE.md): metres, radians (axis-angle), pixels. The camera is OpenCV
(x right, y down, z forward): a model point ``X`` (after FLAME's skinning, which applies ``global_pose`` about
the root joint and ``translation``) maps to the camera frame as ``R(cam_rotation) @ X + cam_translation`` and to
pixels with ``K = [[focal_px, 0, cx], [0, focal_px, cy], [0, 0, 1]]``. ``principal_px`` and ``focal_px`` are in
pixels of the image being fitted (the internal crop while fitting; the original image in a ``FitResult``).

The head's rotation relative to the camera lives in ``global_pose`` (what FLAME users expect in ``pose[:3]``);
``cam_rotation`` defaults to the fixed flip from FLAME's frame (y up, +z out of the face) to OpenCV's (a rotation of
pi about x), so a frontal face has ``global_pose == 0``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

# axis-angle of diag(1, -1, -1): FLAME's y-up/+z-towards-viewer frame seen by an OpenCV camera.
FLIP_YZ_AXIS_ANGLE = (math.pi, 0.0, 0.0)

_TENSOR_FIELDS = (
    "shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "translation",
    "cam_rotation", "cam_translation", "focal_px", "principal_px", "tex", "tex_offset", "light",
)


@dataclass
class FlameParams:
    """Batched FLAME + camera + appearance parameters (all tensors, batch first).

    shape (B,n_shape), expression (B,n_expr) in units of 1 sd; global_pose, neck_pose, jaw_pose (B,3) and
    eye_pose (B,6) axis-angle radians; translation (B,3) metres (FLAME's own, normally 0);
    cam_rotation (B,3) axis-angle and cam_translation (B,3) metres: the camera extrinsics (6-DoF, OpenCV);
    focal_px (B,1) and principal_px (B,2): intrinsics in pixels; tex (B,n_tex) texture-space code (n_tex may be 0);
    tex_offset (B,Ht,Wt,3) per-texel RGB offset or None; light (B,9,3) SH coefficients (or (B,9,1) shared).
    """

    shape: torch.Tensor
    expression: torch.Tensor
    global_pose: torch.Tensor
    neck_pose: torch.Tensor
    jaw_pose: torch.Tensor
    eye_pose: torch.Tensor
    translation: torch.Tensor
    cam_rotation: torch.Tensor
    cam_translation: torch.Tensor
    focal_px: torch.Tensor
    principal_px: torch.Tensor
    tex: torch.Tensor
    light: torch.Tensor
    tex_offset: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    @classmethod
    def zeros(
        cls,
        batch: int,
        n_shape: int,
        n_expr: int,
        n_tex: int = 0,
        light_channels: int = 3,
        focal_px: float = 1000.0,
        principal_px: tuple[float, float] = (112.0, 112.0),
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> FlameParams:
        """Neutral parameters: mean head, frontal, 1 m in front of the camera, ambient white light."""
        kw = {"device": device, "dtype": dtype}
        light = torch.zeros(batch, 9, light_channels, **kw)
        light[:, 0, :] = 1.0 / 0.886227  # SH DC term for unit irradiance (flamefit.render sh_basis, Y00=0.2821)
        return cls(
            shape=torch.zeros(batch, n_shape, **kw),
            expression=torch.zeros(batch, n_expr, **kw),
            global_pose=torch.zeros(batch, 3, **kw),
            neck_pose=torch.zeros(batch, 3, **kw),
            jaw_pose=torch.zeros(batch, 3, **kw),
            eye_pose=torch.zeros(batch, 6, **kw),
            translation=torch.zeros(batch, 3, **kw),
            cam_rotation=torch.tensor(FLIP_YZ_AXIS_ANGLE, **kw).expand(batch, 3).clone(),
            cam_translation=torch.tensor([0.0, 0.0, 1.0], **kw).expand(batch, 3).clone(),
            focal_px=torch.full((batch, 1), float(focal_px), **kw),
            principal_px=torch.tensor(principal_px, **kw).expand(batch, 2).clone(),
            tex=torch.zeros(batch, n_tex, **kw),
            light=light,
        )

    # -- tensor plumbing -------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor | None]:
        return {name: getattr(self, name) for name in _TENSOR_FIELDS}

    def _map(self, fn) -> FlameParams:
        values = {k: (fn(v) if v is not None else None) for k, v in self.tensors().items()}
        return dataclasses.replace(self, **values, extras=dict(self.extras))

    def detach(self) -> FlameParams:
        return self._map(lambda t: t.detach().clone())

    def to(self, *args, **kwargs) -> FlameParams:
        return self._map(lambda t: t.to(*args, **kwargs))

    def requires_grad_(self, names: list[str] | tuple[str, ...], flag: bool = True) -> list[torch.Tensor]:
        """Make the named fields leaf tensors that require grad; returns them (for an optimiser)."""
        out = []
        for name in names:
            value = getattr(self, name)
            if value is None:
                continue
            value = value.detach().clone().requires_grad_(flag)
            setattr(self, name, value)
            out.append(value)
        return out

    @property
    def batch_size(self) -> int:
        return self.shape.shape[0]

    def flame_kwargs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for ``FlameModel.__call__``."""
        return {
            "shape": self.shape, "expression": self.expression, "global_pose": self.global_pose,
            "neck_pose": self.neck_pose, "jaw_pose": self.jaw_pose, "eye_pose": self.eye_pose,
            "translation": self.translation,
        }

    def intrinsics(self) -> torch.Tensor:
        """(B,3,3) OpenCV intrinsics matrix K."""
        b = self.batch_size
        K = torch.zeros(b, 3, 3, dtype=self.focal_px.dtype, device=self.focal_px.device)
        K[:, 0, 0] = self.focal_px[:, 0]
        K[:, 1, 1] = self.focal_px[:, 0]
        K[:, 0, 2] = self.principal_px[:, 0]
        K[:, 1, 2] = self.principal_px[:, 1]
        K[:, 2, 2] = 1.0
        return K

    def to_dict(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (for ``.npz``); ``tex_offset`` only when present."""
        out = {}
        for k, v in self.tensors().items():
            if v is not None:
                out[k] = v.detach().cpu().numpy()
        return out

    @classmethod
    def from_dict(cls, data, device=None, dtype: torch.dtype = torch.float32) -> FlameParams:
        """Inverse of :meth:`to_dict` (accepts an ``np.load`` result; missing optional fields -> defaults)."""
        values = {}
        for name in _TENSOR_FIELDS:
            if name in data:
                values[name] = torch.as_tensor(np.asarray(data[name]), dtype=dtype, device=device)
        if "translation" not in values and "shape" in values:  # FLAME's own translation: always 0, not saved
            values["translation"] = torch.zeros(values["shape"].shape[0], 3, dtype=dtype, device=device)
        missing = [n for n in _TENSOR_FIELDS if n not in values and n != "tex_offset"]
        if missing:
            from flamefit.errors import ConfigError

            raise ConfigError(f"saved parameters lack {missing}; re-run `flamefit fit` to produce a complete file")
        return cls(**values)
