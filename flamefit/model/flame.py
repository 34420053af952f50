"""The FLAME layer: a thin torch module over :func:`flamefit.model.lbs.lbs`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flamefit.errors import ModelFileError
from flamefit.model.flame_file import JOINT_NAMES, FlameData, read_flame_file
from flamefit.model.lbs import axis_angle_to_matrix, lbs, rigid_transforms, skin_vertices
from flamefit.model.uv import UVLayout


@dataclass
class FlameOutput:
    vertices: torch.Tensor  # (B,V,3) metres, model frame (y up, +z out of the face)
    joints: torch.Tensor  # (B,5,3) metres: global, neck, jaw, left eye, right eye


_POSE_ARGS = {"global_pose": 3, "neck_pose": 3, "jaw_pose": 3, "eye_pose": 6, "translation": 3}


class FlameModel(nn.Module):
    """FLAME with ``n_shape`` identity and ``n_expr`` expression components.

    Call with keyword tensors ``shape`` (B,n_shape), ``expression`` (B,n_expr), ``global_pose``, ``neck_pose``,
    ``jaw_pose`` (B,3), ``eye_pose`` (B,6: left then right eye), ``translation`` (B,3); omitted ones are zeros.
    Rotations are axis-angle in radians. Fewer coefficients than the model's count may be passed (the rest
    are zero). Buffers follow ``.to(device, dtype)``.
    """

    joint_names = JOINT_NAMES

    def __init__(self, data: FlameData, n_shape: int = 300, n_expr: int = 100, dtype=torch.float32):
        super().__init__()
        if not 0 <= n_shape <= data.n_shape_total:
            raise ModelFileError(
                f"{data.source}: n_shape={n_shape} asked for, the model has {data.n_shape_total} shape components."
            )
        if not 0 <= n_expr <= data.n_expr_total:
            raise ModelFileError(
                f"{data.source}: n_expr={n_expr} asked for, the model has {data.n_expr_total} expression components."
            )
        self.n_shape, self.n_expr = n_shape, n_expr
        self.source, self.sha256, self.format = data.source, data.sha256, data.format
        self.parents = data.parents
        dirs = np.concatenate(
            [data.shapedirs[:, :, :n_shape], data.shapedirs[:, :, data.n_shape_total:data.n_shape_total + n_expr]],
            axis=2,
        )
        n_v = data.num_vertices

        def buf(name: str, arr: np.ndarray) -> None:
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(arr), dtype=dtype), persistent=False)

        buf("v_template", data.v_template)
        buf("shapedirs", dirs.reshape(n_v * 3, -1).T)  # (K, V*3): blendshapes are one GEMM
        buf("posedirs", data.posedirs.reshape(n_v * 3, -1).T)
        buf("j_regressor", data.j_regressor)
        buf("lbs_weights", data.weights)
        self.register_buffer("faces", torch.as_tensor(data.faces, dtype=torch.int64), persistent=False)
        self.register_buffer("uv_vt", None, persistent=False)
        self.register_buffer("uv_ft", None, persistent=False)

    def set_uv(self, layout: UVLayout) -> None:
        """Attach a UV layout (it then follows ``.to()``)."""
        self.uv_vt = layout.vt.to(self.v_template.device, self.v_template.dtype)
        self.uv_ft = layout.ft.to(self.v_template.device)
        self._uv_source = layout.source

    @property
    def uv(self) -> UVLayout:
        """The UV layout (``vt`` (T,2), ``ft`` (F,3)); without a file-provided one, an atlas flamefit generates
        for this mesh (``uv.generated``; see :func:`flamefit.model.uv.generate_uv_layout`), made on first use."""
        if self.uv_vt is None:
            from flamefit.model.uv import generated_uv_layout

            self.set_uv(generated_uv_layout(self.v_template, self.faces))
        return UVLayout(self.uv_vt, self.uv_ft, getattr(self, "_uv_source", ""))

    def truncated(self, n_shape: int, n_expr: int) -> FlameModel:
        """A copy that keeps only the first ``n_shape`` identity and ``n_expr`` expression components.

        Buffers other than the blendshapes are shared with this model (no copy); fitting fewer components
        means less memory traffic per evaluation.
        """
        if not (0 <= n_shape <= self.n_shape and 0 <= n_expr <= self.n_expr):
            raise ValueError(f"can only truncate to at most ({self.n_shape}, {self.n_expr}) components, "
                             f"asked for ({n_shape}, {n_expr})")
        if (n_shape, n_expr) == (self.n_shape, self.n_expr):
            return self
        new = copy.copy(self)
        new._buffers = dict(self._buffers)  # own buffer table, shared tensors
        new.shapedirs = torch.cat([self.shapedirs[:n_shape], self.shapedirs[self.n_shape:self.n_shape + n_expr]])
        new.n_shape, new.n_expr = n_shape, n_expr
        return new

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def _param(self, value: torch.Tensor | None, width: int, batch: int, name: str) -> torch.Tensor:
        if value is None:
            return self.v_template.new_zeros(batch, width)
        if value.ndim != 2 or value.shape[0] != batch or value.shape[1] > width:
            raise ValueError(f"{name} must have shape ({batch}, <= {width}), got {tuple(value.shape)}")
        value = value.to(self.v_template.dtype)
        if value.shape[1] < width:
            value = torch.nn.functional.pad(value, (0, width - value.shape[1]))
        return value

    def forward(
        self,
        shape: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        global_pose: torch.Tensor | None = None,
        neck_pose: torch.Tensor | None = None,
        jaw_pose: torch.Tensor | None = None,
        eye_pose: torch.Tensor | None = None,
        translation: torch.Tensor | None = None,
    ) -> FlameOutput:
        poses = (global_pose, neck_pose, jaw_pose, eye_pose, translation)
        given = [t for t in (shape, expression, *poses) if t is not None]
        batch = given[0].shape[0] if given else 1
        p = {name: self._param(v, w, batch, name) for (name, w), v in zip(_POSE_ARGS.items(), poses, strict=True)}
        coeffs = torch.cat(
            [self._param(shape, self.n_shape, batch, "shape"),
             self._param(expression, self.n_expr, batch, "expression")],
            dim=1,
        )
        full_pose = torch.cat(
            [p["global_pose"], p["neck_pose"], p["jaw_pose"], p["eye_pose"]], dim=1
        ).view(batch, -1, 3)
        verts, joints = self._lbs(coeffs, full_pose)
        t = p["translation"].unsqueeze(1)
        return FlameOutput(vertices=verts + t, joints=joints + t)

    def _lbs(self, coeffs: torch.Tensor, full_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`lbs` with the blendshapes and pose correctives as ONE matrix product (one pass over both
        bases forward and one backward) and the joints regressed from precomputed joint blendshapes
        (``J @ (T + S c) = J T + (J S) c``, exact in exact arithmetic); the bases are read every fit iteration."""
        if self.shapedirs.dim() != 2 or self.posedirs.dim() != 2:
            return lbs(coeffs, full_pose, self.v_template, self.shapedirs, self.posedirs, self.j_regressor,
                       self.parents, self.lbs_weights)
        dirs, j_template, j_dirs = self._fused_bases()
        B = coeffs.shape[0]
        rot_mats = axis_angle_to_matrix(full_pose)  # (B,J,3,3)
        eye = torch.eye(3, dtype=coeffs.dtype, device=coeffs.device)
        pose_feature = (rot_mats[:, 1:] - eye).reshape(B, -1)
        v_posed = torch.addmm(self.v_template.reshape(1, -1), torch.cat([coeffs, pose_feature], 1), dirs)
        joints = torch.addmm(j_template.reshape(1, -1), coeffs, j_dirs).view(B, -1, 3)
        posed_joints, transforms = rigid_transforms(rot_mats, joints, self.parents)
        return skin_vertices(v_posed.view(B, -1, 3), transforms[:, :, :3, :], self.lbs_weights), posed_joints

    def _fused_bases(self):
        """(cat(shapedirs, posedirs) (K+P, V*3), J @ v_template (J,3), J @ shapedirs (K, J*3)), cached per
        buffer (rebuilt after ``.to()`` or :meth:`truncated`, which replace the buffers)."""
        key = (self.shapedirs.data_ptr(), self.shapedirs.shape, self.posedirs.data_ptr(), self.v_template.data_ptr(),
               self.j_regressor.data_ptr(), self.shapedirs.dtype, self.shapedirs.device)
        cache = self.__dict__.get("_fused_cache")
        if cache is None or cache[0] != key:
            with torch.no_grad():
                K = self.shapedirs.shape[0]
                V = self.v_template.shape[0]
                dirs = torch.cat([self.shapedirs, self.posedirs]).contiguous()
                j_template = self.j_regressor @ self.v_template
                j_dirs = torch.einsum("jv,kvc->kjc", self.j_regressor, self.shapedirs.view(K, V, 3)).reshape(K, -1)
            cache = (key, dirs, j_template, j_dirs.contiguous())
            self.__dict__["_fused_cache"] = cache
        return cache[1:]

    def extra_repr(self) -> str:
        return f"n_shape={self.n_shape}, n_expr={self.n_expr}, vertices={self.num_vertices}, source={self.source}"


def load_flame(
    path: str | Path | None = None,
    n_shape: int | None = None,
    n_expr: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    uv: str | Path | None = None,
) -> FlameModel:
    """Load a FLAME model file (any supported format) as a :class:`FlameModel`.

    ``path`` None resolves the model as documented in :mod:`flamefit.assets` (argument, then
    ``FLAMEFIT_FLAME_MODEL``, then the config file, then the user data directory). ``n_shape``/``n_expr``
    default to all components in the file (300/100 for FLAME); asking for more than the file has is an error.
    The UV layout is attached as ``model.uv`` when one is found (``uv`` path, ``FLAMEFIT_UV_LAYOUT``/config/
    data dir, or the ``flame-model`` package), else ``model.uv`` is an atlas generated for the mesh.
    """
    from flamefit.assets import resolve_asset
    from flamefit.model.uv import load_uv_layout, packaged_uv_layout

    data = read_flame_file(resolve_asset("flame", path))
    model = FlameModel(
        data,
        n_shape=data.n_shape_total if n_shape is None else n_shape,
        n_expr=data.n_expr_total if n_expr is None else n_expr,
        dtype=dtype,
    )
    uv_path = resolve_asset("uv", uv, required=uv is not None)
    layout = load_uv_layout(uv_path) if uv_path is not None else packaged_uv_layout()
    if layout is not None and layout.ft.shape[0] == model.faces.shape[0]:
        model.set_uv(layout)
    elif uv is not None:
        raise ModelFileError(
            f"{uv}: the UV layout has {layout.ft.shape[0]} faces, the model {model.faces.shape[0]}; "
            "it belongs to another topology."
        )
    return model if device is None else model.to(device)
