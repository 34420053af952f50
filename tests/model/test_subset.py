"""FLAME at a vertex subset: exact at the kept vertices, with a known identity folded in, and its exact derivative
by the shape / expression coefficients (the solver's Jacobian columns for them)."""

from __future__ import annotations

import pytest
import torch

from flamefit.model.subset import SubsetFlame


def _kwargs(model, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"shape": 0.8 * torch.randn(B, model.n_shape, generator=g),
            "expression": 0.8 * torch.randn(B, model.n_expr, generator=g),
            "global_pose": 0.3 * torch.randn(B, 3, generator=g), "neck_pose": 0.2 * torch.randn(B, 3, generator=g),
            "jaw_pose": torch.tensor([[0.2, 0.0, 0.0]] * B), "eye_pose": 0.1 * torch.randn(B, 6, generator=g)}


@pytest.fixture(scope="module")
def small(standin):
    model = standin[0].truncated(20, 10)
    sub = SubsetFlame(model, torch.arange(0, model.faces.shape[0], 37))
    return model, sub


def test_subset_is_exact_and_identity_folds(small):
    model, sub = small
    kw = _kwargs(model)
    full = model(**kw).vertices[:, sub.vertex_idx]
    assert torch.allclose(sub(**kw).vertices, full, atol=1e-5)
    folded = sub.with_identity(kw["shape"][0])
    rest = {k: v[:1] for k, v in kw.items() if k != "shape"}
    assert torch.allclose(folded(**rest).vertices, full[:1], atol=1e-5)
    with pytest.raises(ValueError):
        folded(shape=kw["shape"][:1], **rest)  # a folded model takes no shape


@pytest.mark.parametrize("field", ["shape", "expression"])
def test_coefficient_jacobian_is_the_derivative(small, field):
    model, sub = small
    kw = _kwargs(model, seed=1)
    verts, dv = sub.coefficient_jacobian(field, **kw)
    assert torch.allclose(verts, sub(**kw).vertices)
    K = kw[field].shape[1]
    assert dv.shape == (2, K, sub.num_vertices, 3)
    for k in (0, K // 2, K - 1):
        bumped = dict(kw)
        bumped[field] = kw[field].clone()
        bumped[field][:, k] += 1.0  # the vertices are affine in the coefficients: a unit step is exact
        fd = sub(**bumped).vertices - verts
        assert torch.allclose(dv[:, k], fd, atol=2e-5 * float(fd.abs().max()) + 1e-7)
        assert float(fd.abs().max()) > 0
