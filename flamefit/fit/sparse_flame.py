"""FLAME evaluated only at the vertices that the landmark embeddings touch.

The landmark stages and the initialisation need landmark positions, not the mesh: a few hundred of FLAME's 5023
vertices. Linear blend skinning is per vertex, and the joints are linear in the shape/expression coefficients
(``J = J_regressor @ (v_template + dirs @ coeffs)``), so restricting the blendshapes, pose correctives and
skinning weights to those vertices gives EXACTLY the full model's positions there, several times cheaper
(forward and backward).
"""

from __future__ import annotations

import torch

from flamefit.model.lbs import axis_angle_to_matrix, rigid_transforms


class SubsetFlame:
    """Callable like :class:`flamefit.model.flame.FlameModel` (same keyword arguments); returns an object with
    ``vertices`` (B,n,3) at the kept vertices and ``joints`` (B,J,3). ``faces`` (F,3) index the kept vertices
    (faces with a dropped vertex point at vertex 0 and must not be used)."""

    def __init__(self, model, keep_faces: torch.Tensor):
        faces = model.faces
        used = torch.unique(faces[keep_faces.reshape(-1).to(faces.device)].reshape(-1))
        V = model.v_template.shape[0]
        remap = torch.zeros(V, dtype=torch.int64, device=faces.device)
        remap[used] = torch.arange(used.shape[0], device=faces.device)
        self.vertex_idx = used
        self.faces = remap[faces]
        self.n_shape, self.n_expr = model.n_shape, model.n_expr
        self.parents = model.parents
        n = used.shape[0]
        K = model.shapedirs.shape[0]
        dirs = model.shapedirs.view(K, V, 3)
        self.v_template = model.v_template[used]
        self.shapedirs = dirs[:, used].reshape(K, n * 3).contiguous()
        self.j_template = model.j_regressor @ model.v_template  # (J,3)
        self.j_dirs = torch.einsum("jv,kvc->kjc", model.j_regressor, dirs).reshape(K, -1).contiguous()
        P = model.posedirs.shape[0]
        self.posedirs = model.posedirs.view(P, V, 3)[:, used].reshape(P, n * 3).contiguous()
        self.lbs_weights = model.lbs_weights[used]
        self._param = model._param

    @property
    def num_vertices(self) -> int:
        return self.vertex_idx.shape[0]

    def __call__(self, shape=None, expression=None, global_pose=None, neck_pose=None, jaw_pose=None, eye_pose=None,
                 translation=None):
        given = [t for t in (shape, expression, global_pose, neck_pose, jaw_pose, eye_pose, translation)
                 if t is not None]
        B = given[0].shape[0] if given else 1
        coeffs = torch.cat([self._param(shape, self.n_shape, B, "shape"),
                            self._param(expression, self.n_expr, B, "expression")], dim=1)
        pose = torch.cat([self._param(global_pose, 3, B, "global_pose"), self._param(neck_pose, 3, B, "neck_pose"),
                          self._param(jaw_pose, 3, B, "jaw_pose"), self._param(eye_pose, 6, B, "eye_pose")],
                         dim=1).view(B, -1, 3)
        v_shaped = self.v_template.unsqueeze(0) + (coeffs @ self.shapedirs).view(B, -1, 3)
        joints = self.j_template.unsqueeze(0) + (coeffs @ self.j_dirs).view(B, -1, 3)
        rot = axis_angle_to_matrix(pose)
        eye = torch.eye(3, dtype=coeffs.dtype, device=coeffs.device)
        v_posed = v_shaped + ((rot[:, 1:] - eye).reshape(B, -1) @ self.posedirs).view(B, -1, 3)
        posed_joints, transforms = rigid_transforms(rot, joints, self.parents)
        per_vertex = (self.lbs_weights @ transforms[:, :, :3, :].reshape(B, -1, 12)).view(B, -1, 3, 4)
        R, t = per_vertex[..., :3], per_vertex[..., 3]
        verts = R[..., 0] * v_posed[..., 0:1] + R[..., 1] * v_posed[..., 1:2] + R[..., 2] * v_posed[..., 2:3] + t
        tr = self._param(translation, 3, B, "translation").unsqueeze(1)
        return _Out(verts + tr, posed_joints + tr)


class _Out:
    __slots__ = ("vertices", "joints")

    def __init__(self, vertices, joints):
        self.vertices, self.joints = vertices, joints
