"""FLAME evaluated only at the vertices that the landmark embeddings touch.

The landmark stages and the initialisation need landmark positions, not the mesh: a few hundred of FLAME's 5023
vertices. Linear blend skinning is per vertex, and the joints are linear in the shape/expression coefficients
(``J = J_regressor @ (v_template + dirs @ coeffs)``), so restricting the blendshapes, pose correctives and
skinning weights to those vertices gives EXACTLY the full model's positions there, several times cheaper
(forward and backward).

:meth:`SubsetFlame.with_identity` folds a known identity (shape coefficients) into the template: a video's frames
share one shape, and their landmark evaluations then skip the identity blendshapes (exact as well).
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

    def with_identity(self, shape: torch.Tensor) -> SubsetFlame:
        """A copy with the identity ``shape`` (n_shape,) folded into the template and joints: it takes no ``shape``
        argument (passing one raises), so a stale identity cannot be mixed in by mistake."""
        import copy

        out = copy.copy(self)
        ns = self.n_shape
        s = shape.reshape(1, -1).to(self.v_template)
        if s.shape[1] > ns:
            raise ValueError(f"the identity has {s.shape[1]} shape components, the model {ns}")
        ns = s.shape[1]
        out.v_template = self.v_template + (s @ self.shapedirs[:ns]).view(-1, 3)
        out.j_template = self.j_template + (s @ self.j_dirs[:ns]).view(-1, 3)
        out.shapedirs = self.shapedirs[self.n_shape:].contiguous()
        out.j_dirs = self.j_dirs[self.n_shape:].contiguous()
        out.n_shape = 0
        return out

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


    def coefficient_jacobian(self, field: str, shape=None, expression=None, global_pose=None, neck_pose=None,
                             jaw_pose=None, eye_pose=None, translation=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertices (B,n,3), their derivative by the ``field`` ('shape' or 'expression') coefficients given
        (B,K,n,3)), exactly and without a model evaluation per coefficient: the coefficients enter linearly before
        skinning (``R_v E_k``) and through the joints, which move the skinning transforms' translations linearly
        (``sum_j w_vj T_j(Jdir_k)``); the vertices are affine in them. Same keyword arguments as a call."""
        out = self(shape, expression, global_pose, neck_pose, jaw_pose, eye_pose, translation)
        given = shape if field == "shape" else expression
        if field not in ("shape", "expression") or given is None:
            raise ValueError(f"coefficient_jacobian: no {field!r} coefficients given")
        B, K = given.shape
        first = 0 if field == "shape" else self.n_shape
        n = self.v_template.shape[0]
        E = self.shapedirs[first:first + K].view(K, n, 3)
        Jd = self.j_dirs[first:first + K].view(K, -1, 3)
        pose = torch.cat([self._param(global_pose, 3, B, "global_pose"), self._param(neck_pose, 3, B, "neck_pose"),
                          self._param(jaw_pose, 3, B, "jaw_pose"), self._param(eye_pose, 6, B, "eye_pose")],
                         dim=1).view(B, -1, 3).to(E)
        rot = axis_angle_to_matrix(pose)
        _, T = rigid_transforms(rot, self.j_template.unsqueeze(0).expand(B, -1, -1).to(E), self.parents)
        nJ = T.shape[1]
        Rv = (self.lbs_weights @ T[:, :, :3, :3].reshape(B, nJ, 9)).view(B, n, 3, 3)
        _, Tk = rigid_transforms(rot.repeat_interleave(K, 0), Jd.repeat(B, 1, 1), self.parents)  # linear in joints
        dT = Tk[:, :, :3, 3].view(B, K, nJ, 3)
        dv = torch.einsum("bvcd,kvd->bkvc", Rv, E) + torch.einsum("vj,bkjc->bkvc", self.lbs_weights, dT)
        return out.vertices, dv


class _Out:
    __slots__ = ("vertices", "joints")

    def __init__(self, vertices, joints):
        self.vertices, self.joints = vertices, joints
