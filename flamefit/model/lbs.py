"""FLAME's linear blend skinning, as plain batched torch functions (after smplx's ``lbs.py``).

Shapes: B batch, V vertices, J joints (5 for FLAME), K blendshapes. All functions are differentiable and
follow the dtype/device of their inputs.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from flamefit._numba import numba_available


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, (..., 3) -> (..., 3, 3), exact and smooth at zero (Taylor branch, no epsilon bias).
    CPU: one numba kernel forward and one backward (it runs several times per fit iteration on a few vectors,
    where two dozen small torch ops cost far more than the arithmetic)."""
    if _numba_for(axis_angle) and axis_angle.shape[-1] == 3:
        lead = axis_angle.shape[:-1]
        return _Rodrigues.apply(axis_angle.reshape(-1, 3)).view(*lead, 3, 3)
    return _axis_angle_to_matrix_torch(axis_angle)


def _axis_angle_to_matrix_torch(axis_angle: torch.Tensor) -> torch.Tensor:
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # (...,1,1)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    # R = I + a K + b K^2 with K the skew matrix of the (unnormalised) axis-angle vector.
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / safe2)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(skew)
    return eye + a * skew + b * (skew @ skew)


def blend_shapes(coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """(B,K) coefficients x directions -> (B,V,3) offsets.

    ``dirs`` is (K, V*3) (one GEMM; the layout :class:`FlameModel` stores) or FLAME's file layout (V,3,K).
    """
    if dirs.ndim == 3:
        return torch.einsum("bk,vck->bvc", coeffs, dirs)
    return (coeffs @ dirs).view(coeffs.shape[0], -1, 3)


def rigid_transforms(rot_mats: torch.Tensor, joints: torch.Tensor, parents: tuple[int, ...]) -> tuple[
    torch.Tensor, torch.Tensor
]:
    """Chain per-joint rotations along the kinematic tree.

    rot_mats (B,J,3,3), joints (B,J,3) rest-pose joint locations. Returns the posed joints (B,J,3) and the
    relative transforms (B,J,4,4) that map rest-pose points to posed points for each joint.
    """
    rel_joints = joints.clone()
    rel_joints[:, 1:] = joints[:, 1:] - joints[:, list(parents[1:])]
    B, J = joints.shape[:2]
    top = torch.cat([rot_mats, rel_joints.unsqueeze(-1)], dim=-1)  # (B,J,3,4)
    bottom = torch.zeros(B, J, 1, 4, dtype=joints.dtype, device=joints.device)
    bottom[..., 3] = 1.0
    local = torch.cat([top, bottom], dim=-2)  # (B,J,4,4)
    chain = [local[:, 0]]
    for j in range(1, J):
        chain.append(chain[parents[j]] @ local[:, j])
    world = torch.stack(chain, dim=1)
    posed_joints = world[:, :, :3, 3]
    # Remove the rest-pose joint location so the transform applies to rest-pose vertices.
    correction = world[:, :, :3, :3] @ joints.unsqueeze(-1)
    rel = world.clone()
    rel[:, :, :3, 3] = world[:, :, :3, 3] - correction.squeeze(-1)
    return posed_joints, rel


def lbs(
    coeffs: torch.Tensor,
    full_pose: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor,
    j_regressor: torch.Tensor,
    parents: tuple[int, ...],
    weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FLAME skinning.

    coeffs (B,K) shape+expression coefficients for ``shapedirs`` (K,V*3) or (V,3,K); full_pose (B,J,3) axis-angle;
    posedirs (P,V*3) with P = 9*(J-1) (feature ``R_j - I`` row-major for joints 1..J-1); j_regressor (J,V);
    weights (V,J). Returns vertices (B,V,3) and posed joints (B,J,3).
    """
    B = coeffs.shape[0]
    v_shaped = v_template.unsqueeze(0) + blend_shapes(coeffs, shapedirs)
    joints = j_regressor @ v_shaped  # (J,V) @ (B,V,3) broadcasts to (B,J,3)
    rot_mats = axis_angle_to_matrix(full_pose)  # (B,J,3,3)
    eye = torch.eye(3, dtype=coeffs.dtype, device=coeffs.device)
    pose_feature = (rot_mats[:, 1:] - eye).reshape(B, -1)
    v_posed = v_shaped + (pose_feature @ posedirs).view(B, -1, 3)
    posed_joints, transforms = rigid_transforms(rot_mats, joints, parents)
    return skin_vertices(v_posed, transforms[:, :, :3, :], weights), posed_joints


def skin_vertices(v_posed: torch.Tensor, transforms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning: v_posed (B,V,3), the joints' transforms (B,J,3,4), weights (V,J) -> (B,V,3),
    ``(sum_j w_vj T_j) @ [v; 1]``. Differentiable w.r.t. ``v_posed`` and ``transforms`` (the weights are
    constants); one numba pass forward and one backward on CPU, plain torch elsewhere."""
    if _numba_for(v_posed) and transforms.dtype == weights.dtype == v_posed.dtype and not weights.requires_grad:
        return _Skin.apply(v_posed, transforms, weights)
    B = v_posed.shape[0]
    # Blend the joints' 3x4 transforms per vertex with one GEMM, then apply them.
    per_vertex = (weights @ transforms.reshape(B, -1, 12)).view(B, -1, 3, 4)
    R, t = per_vertex[..., :3], per_vertex[..., 3]
    return R[..., 0] * v_posed[..., 0:1] + R[..., 1] * v_posed[..., 1:2] + R[..., 2] * v_posed[..., 2:3] + t


# Use the numba skinning kernels for CPU tensors (tests switch this off to compare with the torch path).
NUMBA_KERNELS = True


def _numba_for(t: torch.Tensor) -> bool:
    return (NUMBA_KERNELS and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
            and numba_available())


class _Skin(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v_posed, transforms, weights):
        from flamefit.model import _lbs_numba as K

        B, V, _ = v_posed.shape
        vp = v_posed.detach().contiguous()
        A = transforms.detach().reshape(B, -1, 12).contiguous()
        w = weights.detach().contiguous()
        out = vp.new_empty(B, V, 3)
        K.skin_forward(vp.numpy(), A.numpy(), w.numpy(), out.numpy())
        ctx.save_for_backward(vp, A, w)
        ctx.t_shape = transforms.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        from flamefit.model import _lbs_numba as K

        vp, A, w = ctx.saved_tensors
        want_v, want_A = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g_v = torch.empty_like(vp) if want_v else vp.new_empty(1, 1, 3)
        g_A = torch.empty_like(A) if want_A else A.new_empty(1, 1, 12)
        K.skin_backward(vp.numpy(), A.numpy(), w.numpy(), g.contiguous().numpy(), want_v, want_A, g_v.numpy(),
                        g_A.numpy())
        return (g_v if want_v else None), (g_A.view(ctx.t_shape) if want_A else None), None


class _Rodrigues(torch.autograd.Function):
    @staticmethod
    def forward(ctx, aa):
        from flamefit.model import _lbs_numba as K

        aa = aa.detach().contiguous()
        out = aa.new_empty(aa.shape[0], 9)
        K.rodrigues_forward(aa.numpy(), out.numpy())
        ctx.save_for_backward(aa)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        from flamefit.model import _lbs_numba as K

        (aa,) = ctx.saved_tensors
        g_aa = torch.empty_like(aa)
        K.rodrigues_backward(aa.numpy(), g.contiguous().numpy(), g_aa.numpy())
        return g_aa
