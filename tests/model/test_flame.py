"""The FLAME layer against an independent float64 numpy implementation of FLAME skinning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flamefit
from flamefit.model.flame_file import read_flame_file
from flamefit.model.safe_pickle import load_restricted


def _rodrigues_np(r: np.ndarray) -> np.ndarray:
    theta = np.linalg.norm(r)
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def flame_numpy(raw: dict, shape, expr, pose5x3, transl, n_shape_total):
    """Textbook FLAME: blendshapes, pose correctives (R_j - I), joint regression, LBS; no torch."""
    sd = np.asarray(raw["shapedirs"])
    coeffs = np.zeros(sd.shape[2])
    coeffs[: len(shape)] = shape
    coeffs[n_shape_total: n_shape_total + len(expr)] = expr
    v_shaped = np.asarray(raw["v_template"]) + sd @ coeffs
    J = raw["J_regressor"] @ v_shaped
    rots = [_rodrigues_np(p) for p in pose5x3]
    feat = np.concatenate([(R - np.eye(3)).ravel() for R in rots[1:]])
    v_posed = v_shaped + np.asarray(raw["posedirs"]) @ feat
    parents = [-1, 0, 1, 1, 1]
    G = []
    for j in range(5):
        T = np.eye(4)
        T[:3, :3] = rots[j]
        T[:3, 3] = J[j] - (J[parents[j]] if parents[j] >= 0 else 0)
        G.append(T if parents[j] < 0 else G[parents[j]] @ T)
    posed_joints = np.array([g[:3, 3] for g in G])
    A = []
    for j in range(5):
        T = G[j].copy()
        T[:3, 3] -= G[j][:3, :3] @ J[j]
        A.append(T)
    A = np.array(A)
    W = np.asarray(raw["weights"])
    verts = np.empty_like(v_posed)
    for i in range(len(v_posed)):
        T = np.tensordot(W[i], A, axes=1)
        verts[i] = T[:3, :3] @ v_posed[i] + T[:3, 3]
    return verts + transl, posed_joints + transl


def _random_params(rng, n_shape, n_expr, scale=0.3):
    return dict(
        shape=rng.normal(size=n_shape),
        expr=rng.normal(size=n_expr),
        pose=rng.normal(scale=scale, size=(5, 3)),
        transl=rng.normal(scale=0.05, size=3),
    )


def _compare(model_path, n_shape, n_expr, n_shape_total, seed=0):
    raw = load_restricted(model_path)
    model = flamefit.load_flame(model_path, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(2):
        p = _random_params(rng, n_shape, n_expr)
        ref_v, ref_j = flame_numpy(raw, p["shape"], p["expr"], p["pose"], p["transl"], n_shape_total)
        t = lambda a: torch.tensor(a, dtype=torch.float64)[None]  # noqa: E731
        out = model(
            shape=t(p["shape"]), expression=t(p["expr"]), global_pose=t(p["pose"][0]), neck_pose=t(p["pose"][1]),
            jaw_pose=t(p["pose"][2]), eye_pose=t(p["pose"][3:].ravel()), translation=t(p["transl"]),
        )
        worst = max(worst, np.abs(out.vertices[0].numpy() - ref_v).max())
        np.testing.assert_allclose(out.joints[0].numpy(), ref_j, atol=1e-9, rtol=0)
    assert worst <= 1e-9, f"max vertex difference {worst} m"


def test_standin_2023_matches_numpy_reference(standin_2023):
    _compare(standin_2023, 300, 100, 300)


def test_standin_2020_chumpy_loads_without_chumpy_and_matches(standin_2020, standin_2023):
    import importlib.util

    assert importlib.util.find_spec("chumpy") is None, "the test must prove loading works without chumpy"
    d2020, d2023 = read_flame_file(standin_2020), read_flame_file(standin_2023)
    assert d2020.format.startswith("FLAME 2020") and d2023.format.startswith("FLAME 2023")
    np.testing.assert_array_equal(d2020.shapedirs, d2023.shapedirs)
    _compare(standin_2020, 300, 100, 300, seed=1)


@pytest.mark.parametrize("chumpy", [False, True])
def test_synthetic_model_matches_numpy_reference(tmp_path, chumpy):
    from flamefit.model.synthetic import write_synthetic_flame

    path = write_synthetic_flame(tmp_path / "m.pkl", seed=3, chumpy=chumpy)
    _compare(path, 20, 10, 20, seed=2)


def test_zero_params_give_template_and_gradients_flow(synthetic_model_path):
    model = flamefit.load_flame(synthetic_model_path)
    out = model()
    torch.testing.assert_close(out.vertices[0], model.v_template)
    shape = torch.zeros(3, model.n_shape, requires_grad=True)
    jaw = torch.zeros(3, 3, requires_grad=True)  # gradient at exactly zero rotation must be finite
    model(shape=shape, jaw_pose=jaw).vertices.square().sum().backward()
    assert torch.isfinite(jaw.grad).all() and shape.grad.abs().sum() > 0


def test_fewer_coefficients_are_zero_padded_and_batch_is_checked(synthetic_model_path):
    model = flamefit.load_flame(synthetic_model_path)
    a = model(shape=torch.ones(1, 5)).vertices
    full = torch.zeros(1, model.n_shape)
    full[:, :5] = 1
    torch.testing.assert_close(a, model(shape=full).vertices)
    with pytest.raises(ValueError, match="shape"):
        model(shape=torch.zeros(2, 5), expression=torch.zeros(3, 5))


def test_n_shape_n_expr_truncate_and_too_many_is_an_error(synthetic_model_path):
    from flamefit.errors import ModelFileError

    model = flamefit.load_flame(synthetic_model_path, n_shape=4, n_expr=2)
    assert model.shapedirs.shape[0] == 6  # (K, V*3)
    with pytest.raises(ModelFileError, match="n_shape=500"):
        flamefit.load_flame(synthetic_model_path, n_shape=500)


def test_float64_and_rotation_at_zero_is_exact():
    from flamefit.model.lbs import axis_angle_to_matrix

    r = torch.tensor([[1e-6, -2e-6, 3e-6], [0.3, -0.2, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    for v, R in zip(r.numpy(), axis_angle_to_matrix(r).numpy(), strict=True):
        np.testing.assert_allclose(R, _rodrigues_np(v), atol=1e-15)


def test_landmarks68_on_standin(shared_assets, standin_2023):
    from flamefit.model.landmarks import load_ringnet_68, yaw_bin

    lm = shared_assets / "flame_landmarks"
    emb = load_ringnet_68(lm / "flame_static_embedding.pkl", lm / "flame_dynamic_embedding.npy")
    model = flamefit.load_flame(standin_2023)
    verts = model().vertices
    pts = emb.project(verts, model.faces)
    assert pts.shape == (1, 68, 3)
    # iBUG order: point 30 is the nose tip, the most forward (+z) of the inner points; 36/45 outer eye corners.
    assert pts[0, 17:, 2].argmax().item() + 17 == 30
    assert pts[0, 36, 0] < pts[0, 45, 0]  # 36 is on the subject's right (-x)
    # Turning the head picks another contour (bins 0..39 positive yaw, 40..78 negative).
    assert yaw_bin(torch.tensor([0.0, 0.3, -0.3])).tolist() == [0, 17, 56]
    turned = emb.project(verts, model.faces, yaw_rad=torch.tensor([0.5]))
    assert not torch.allclose(turned[0, :17], pts[0, :17]) and torch.allclose(turned[0, 17:], pts[0, 17:])


def test_mesh_landmarks_and_vertex_matrix_agree(synthetic_model_path):
    from flamefit.model.landmarks import MeshLandmarks, landmark_vertex_matrix

    model = flamefit.load_flame(synthetic_model_path)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, model.faces.shape[0], (7,), generator=g)
    bary = torch.rand(7, 3, generator=g)
    bary = bary / bary.sum(1, keepdim=True)
    lmk = MeshLandmarks(idx, bary)
    verts = model(shape=torch.randn(2, model.n_shape, generator=g)).vertices
    W = landmark_vertex_matrix(idx, bary, model.faces, model.num_vertices)
    torch.testing.assert_close(lmk.project(verts, model.faces), W @ verts)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_cuda_matches_cpu(synthetic_model_path):
    model = flamefit.load_flame(synthetic_model_path, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    params = {"shape": torch.randn(4, model.n_shape, generator=g), "jaw_pose": 0.3 * torch.randn(4, 3, generator=g),
              "eye_pose": 0.2 * torch.randn(4, 6, generator=g)}
    cpu = model(**params).vertices
    gpu = model.to("cuda")(**{k: v.cuda() for k, v in params.items()}).vertices
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-9, rtol=0)


def test_truncated_model_equals_zero_padded_full_model(synthetic_model_path):
    model = flamefit.load_flame(synthetic_model_path, dtype=torch.float64)
    small = model.truncated(5, 3)
    assert (small.n_shape, small.n_expr) == (5, 3) and model.n_shape == 20  # the original is untouched
    g = torch.Generator().manual_seed(0)
    shape = torch.randn(2, 5, generator=g, dtype=torch.float64)
    expr = torch.randn(2, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(small(shape=shape, expression=expr).vertices,
                               model(shape=shape, expression=expr).vertices)
    with pytest.raises(ValueError, match="at most"):
        model.truncated(50, 3)


@pytest.mark.parametrize("batch", [1, 2])
def test_skinning_kernels_match_torch_and_finite_differences(monkeypatch, batch):
    """The numba skinning (forward and backward) gives the torch formulation's values and gradients, and its
    gradients agree with finite differences."""
    from flamefit.model import lbs

    g = torch.Generator().manual_seed(4)
    vp = torch.randn(batch, 40, 3, generator=g, dtype=torch.float64)
    A = torch.randn(batch, 5, 3, 4, generator=g, dtype=torch.float64)
    w = torch.rand(40, 5, generator=g, dtype=torch.float64)
    w[3] = 0.0  # a vertex with no weight
    w = w / w.sum(1, keepdim=True).clamp(min=1e-12)
    go = torch.randn(batch, 40, 3, generator=g, dtype=torch.float64)
    results = []
    for kernels in (True, False):
        monkeypatch.setattr(lbs, "NUMBA_KERNELS", kernels)
        x, t = vp.clone().requires_grad_(True), A.clone().requires_grad_(True)
        out = lbs.skin_vertices(x, t, w)
        results.append((out, *torch.autograd.grad(out, (x, t), go)))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(lbs, "NUMBA_KERNELS", True)
    assert torch.autograd.gradcheck(lambda x, t: lbs.skin_vertices(x, t, w),
                                    (vp.clone().requires_grad_(True), A.clone().requires_grad_(True)))


def test_rodrigues_kernel_matches_torch_formula_and_finite_differences():
    """axis_angle_to_matrix's numba path (CPU) equals the torch formula, values and gradients, including the
    Taylor branch at and near zero, and its gradient agrees with finite differences."""
    from flamefit.model import lbs

    g = torch.Generator().manual_seed(5)
    aa = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    aa[0, 0] = 0.0
    aa[0, 1] = torch.tensor([1e-5, -2e-5, 3e-6], dtype=torch.float64)  # inside the Taylor branch
    aa[1, 1] = torch.tensor([3.1, 0.0, 0.05], dtype=torch.float64)  # near pi
    go = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    x = aa.clone().requires_grad_(True)
    R = lbs.axis_angle_to_matrix(x)
    assert "Rodrigues" in type(R.grad_fn.next_functions[0][0]).__name__  # the kernel ran
    ref = lbs._axis_angle_to_matrix_torch(x)
    torch.testing.assert_close(R, ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.autograd.grad(R, x, go)[0], torch.autograd.grad(ref, x, go)[0], rtol=1e-12,
                               atol=1e-13)
    assert torch.autograd.gradcheck(lbs.axis_angle_to_matrix, (aa[1:].clone().requires_grad_(True),))
    assert lbs.axis_angle_to_matrix(aa.float()).dtype == torch.float32
