"""68 model landmarks derived from the MediaPipe-478 correspondence: format, surface, silhouette, vs RingNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamefit.fit.derived68 import CONTOUR_LEVEL, N_YAW_BINS, bin_yaw_deg, landmarks68_from_dense, view_direction
from flamefit.model.landmarks import Landmarks68, MeshLandmarks, yaw_bin


def _normals(P, F):
    fn = np.cross(P[F[:, 1]] - P[F[:, 0]], P[F[:, 2]] - P[F[:, 0]])
    vn = np.zeros_like(P)
    for k in range(3):
        np.add.at(vn, F[:, k], fn)
    return vn / np.linalg.norm(vn, axis=1, keepdims=True)


def _contour(lmk: Landmarks68, P, F, normals):
    """Points (79,17,3) and interpolated unit normals (79,17,3) of the contour in every yaw bin."""
    corners = F[lmk.dynamic_face_idx.numpy()]  # (79,17,3)
    b = lmk.dynamic_bary.double().numpy()[..., None]
    pts = (P[corners] * b).sum(2)
    n = (normals[corners] * b).sum(2)
    return pts, n / np.linalg.norm(n, axis=-1, keepdims=True)


def test_bins_and_views_match_ringnets_yaw_binning():
    bins = np.arange(N_YAW_BINS)
    yaw = bin_yaw_deg(bins)
    assert yaw[0] == 0 and yaw[39] == 39 and yaw[40] == -1 and yaw[78] == -39
    assert (yaw_bin(torch.tensor(np.radians(yaw))).numpy() == bins).all()
    # a head turned to its left (+yaw) shows the camera its right side (-x)
    assert view_direction(np.array([30.0]))[0, 0] < 0 and np.allclose(view_direction(np.array([0.0])), [[0, 0, 1]])


@pytest.fixture(scope="module")
def synthetic(synthetic_model_path):
    import flamefit

    model = flamefit.load_flame(synthetic_model_path)
    P, F = model.v_template.double().numpy(), model.faces.numpy()
    head = (F < 1 + 11 * 20 + 1).all(1)  # the synthetic head sphere's vertices come first
    c = P[F].mean(1)
    rng = np.random.default_rng(0)
    front = np.flatnonzero(head & (c[:, 2] > 0.8 * P[:, 2].max()))
    dense = MeshLandmarks(torch.as_tensor(rng.choice(front, 478)),
                          torch.as_tensor(rng.dirichlet([2, 2, 2], 478), dtype=torch.float32))
    return model, dense, P, F, head


def test_format_and_static_points_are_the_closest_surface_points(synthetic):
    from flamefit.observe.mp68 import MP_TO_68

    model, dense, P, F, head = synthetic
    lmk = landmarks68_from_dense(dense, model)
    assert isinstance(lmk, Landmarks68) and "MediaPipe" in lmk.source
    assert lmk.static.face_idx.shape == (51,) and lmk.static.bary.shape == (51, 3)
    assert lmk.dynamic_face_idx.shape == (79, 17) and lmk.dynamic_bary.shape == (79, 17, 3)
    for b in (lmk.static.bary, lmk.dynamic_bary):
        assert (b >= -1e-6).all() and torch.allclose(b.sum(-1), torch.ones(()), atol=1e-5)
    assert head[lmk.static.face_idx.numpy()].all() and head[lmk.dynamic_face_idx.numpy()].all()  # not the eyes
    verts = torch.as_tensor(P)[None]
    means = MP_TO_68[17:] @ dense.project(verts, model.faces)[0].numpy()
    static = lmk.static.project(verts, model.faces)[0].numpy()
    # each static point is on the surface and no farther from its mean than any head vertex
    d = np.linalg.norm(static - means, axis=1)
    nearest_vertex = np.linalg.norm(P[None, np.unique(F[head])] - means[:, None], axis=2).min(1)
    assert (d <= nearest_vertex + 1e-9).all()
    # it projects like RingNet's: (B,68,3), the contour picked by yaw
    out = lmk.project(verts.expand(2, -1, -1), model.faces, torch.tensor([0.0, 0.5], dtype=torch.float64))
    assert out.shape == (2, 68, 3) and torch.isfinite(out).all()
    assert not torch.allclose(out[0, :17], out[1, :17]) and torch.allclose(out[0, 17:], out[1, 17:])


def test_inner_points_are_the_detectors_map_of_the_models_478(synthetic):
    """The fit compares the model's 68 with MP_TO_68 @ detected 478: the model side must be the same map of the
    model's 478 (on any pose), not the surface points (those biased the lip and eyelid gaps)."""
    from flamefit.observe.mp68 import MP_TO_68

    model, dense, P, F, _ = synthetic
    lmk = landmarks68_from_dense(dense, model)
    dt = model.v_template.dtype
    out = model(expression=torch.randn(2, model.n_expr, dtype=dt, generator=torch.Generator().manual_seed(0)) * 0.5,
                jaw_pose=torch.tensor([[0.3, 0.0, 0.0], [0.1, 0.0, 0.0]], dtype=dt)).vertices
    pts = lmk.project(out, model.faces)
    want = torch.as_tensor(MP_TO_68[17:], dtype=dt) @ dense.project(out, model.faces)
    assert torch.allclose(pts[:, 17:], want, atol=1e-6)
    surface = lmk.static.project(out, model.faces)
    assert (pts[:, 17:] - surface).norm(dim=-1).max() > 1e-4  # really not the surface points
    # the contour is still the yaw-binned surface contour, and the landmark faces cover the mixed points
    assert torch.allclose(pts[:, :17], barycentric_contour(lmk, out, model.faces), atol=1e-7)
    used = set(lmk.face_indices().tolist())
    mapped = np.flatnonzero(np.abs(MP_TO_68[17:]).sum(0) > 0)  # the 478 points the map uses, and no others
    assert set(dense.face_idx[torch.as_tensor(mapped)].tolist()) <= used and set(lmk.static.face_idx.tolist()) <= used
    assert len(lmk.mix_points) == len(mapped) < len(dense)


def barycentric_contour(lmk, verts, faces):
    from flamefit.model.landmarks import barycentric_points

    return barycentric_points(verts, faces, lmk.dynamic_face_idx[0], lmk.dynamic_bary[0])


def test_landmarks68_mix_shape_is_checked():
    dense = MeshLandmarks(torch.zeros(5, dtype=torch.int64), torch.full((5, 3), 1 / 3))
    args = (torch.zeros(51, dtype=torch.int64), torch.full((51, 3), 1 / 3), torch.zeros(79, 17, dtype=torch.int64),
            torch.full((79, 17, 3), 1 / 3))
    with pytest.raises(ValueError, match="static_mix must be"):
        Landmarks68(*args, static_mix=np.ones((51, 4)), mix_points=dense)
    with pytest.raises(ValueError, match="go together"):
        Landmarks68(*args, static_mix=np.ones((51, 5)))


def test_contour_follows_the_silhouette(synthetic):
    model, dense, P, F, _ = synthetic
    lmk = landmarks68_from_dense(dense, model)
    pts, n = _contour(lmk, P, F, _normals(P, F))
    for b in range(N_YAW_BINS):
        yaw = bin_yaw_deg(b)
        facing = n[b] @ view_direction(np.array([yaw]))[0]
        far = range(9, 16) if yaw > 0 else range(1, 8)  # the side turned away from the camera
        if abs(yaw) >= 10:
            # on the outline seen from that yaw: the surface grazes the view there
            assert np.abs(facing[list(far)] - CONTOUR_LEVEL).max() < 0.12, (b, facing)
    # turning the head moves the far side forward (to the silhouette) and never the near side forward
    assert (pts[30, 9:16, 2] > pts[0, 9:16, 2] + 1e-3).all()
    assert (pts[69, 1:8, 2] > pts[0, 1:8, 2] + 1e-3).all()  # bin 69 = -30 degrees
    assert (pts[30, 1:8, 2] <= pts[0, 1:8, 2] + 1e-6).all()


def test_cached_per_mesh_and_correspondence(synthetic, tmp_path, monkeypatch):
    import flamefit.fit.derived68 as d68

    model, dense, *_ = synthetic
    first = landmarks68_from_dense(dense, model, cache_dir=tmp_path)
    files = list(tmp_path.glob("*_landmarks68_v*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp*"))

    def fail(*args):
        raise AssertionError("derived again although cached")

    monkeypatch.setattr(d68, "_derive", fail)
    again = landmarks68_from_dense(dense, model, cache_dir=tmp_path)
    assert torch.equal(again.dynamic_face_idx, first.dynamic_face_idx)
    assert torch.equal(again.static.bary, first.static.bary)
    monkeypatch.undo()
    files[0].write_bytes(b"damaged")
    fixed = landmarks68_from_dense(dense, model, cache_dir=tmp_path)
    assert torch.equal(fixed.dynamic_bary, first.dynamic_bary)
    other = MeshLandmarks(dense.face_idx.flip(0), dense.bary.flip(0))  # another correspondence, another entry
    landmarks68_from_dense(other, model, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*_landmarks68_v*.npz"))) == 2


def test_rejects_a_correspondence_of_another_mesh(synthetic):
    from flamefit.errors import ModelFileError

    model, dense, *_ = synthetic
    with pytest.raises(ValueError, match="478"):
        landmarks68_from_dense(MeshLandmarks(dense.face_idx[:68], dense.bary[:68]), model)
    bad = MeshLandmarks(dense.face_idx + 100000, dense.bary)
    with pytest.raises(ModelFileError, match="another mesh"):
        landmarks68_from_dense(bad, model)


# ------------------------------------------------------------------------------------------ on the stand-in


@pytest.fixture(scope="module")
def standin_derived(shared_assets, tmp_path_factory):
    pytest.importorskip("mediapipe")
    from flamefit.fit.correspondence import dense_correspondence
    from flamefit.model import load_flame
    from flamefit.model.landmarks import load_ringnet_68

    model = load_flame(shared_assets / "flame_standin" / "standin_flame2023.pkl")
    dense = dense_correspondence(model)  # cached in the test session's cache dir
    emb = shared_assets / "flame_landmarks"
    ringnet = load_ringnet_68(emb / "flame_static_embedding.pkl", emb / "flame_dynamic_embedding.npy")
    return model, dense, landmarks68_from_dense(dense, model), ringnet


def test_close_to_ringnets_embedding_on_the_standin(standin_derived):
    from flamefit.bench.landmarks68 import geometry

    model, _, derived, ringnet = standin_derived
    g = geometry(model, ringnet, derived)
    # measured: static 2.9 mm mean (eyes 1.5, mouth 1.7, nose 3.1, brows 6.8); contour 8.9 mm over all bins,
    # 11.8 mm in the frontal one
    assert g["static51_mean_mm"] < 3.5 and g["static_eyes_mean_mm"] < 2.5 and g["static_mouth_mean_mm"] < 2.5
    assert g["contour_frontal_mean_mm"] < 14 and g["contour_mean_mm"] < 11


def test_contour_is_mirror_symmetric_on_the_standin(standin_derived):
    """Bin +yaw mirrored (x -> -x, point i -> 16 - i) is bin -yaw: both sides are derived alike."""
    model, _, derived, _ = standin_derived
    P, F = model.v_template.double().numpy(), model.faces.numpy()
    pts, _ = _contour(derived, P, F, _normals(P, F))
    mirror = pts[:, ::-1] * np.array([-1.0, 1.0, 1.0])
    for b_pos, b_neg in ((0, 0), (20, 59), (39, 78)):
        err_mm = np.linalg.norm(pts[b_pos] - mirror[b_neg], axis=1) * 1000
        assert np.median(err_mm) < 5.0, (b_pos, err_mm.round(1))


def test_a_fit_with_the_model_file_alone_gives_real_lmks_68_fit(standin_derived, shared_assets):
    """No RingNet embedding, no UV file: the fit uses the derived 68 points and the generated atlas."""
    from flamefit.fit.api import target_from_input
    from flamefit.fit.fitter import Fitter
    from flamefit.fit.result import make_result

    from .conftest import fast_config

    model, dense, derived, _ = standin_derived
    assert model.uv.generated
    # landmark stages only: the photometric ones do not change what is tested here, and cost the most
    fitter = Fitter(model, landmarks68=derived, dense_landmarks=dense,
                    config=fast_config("appearance.iters=0", "photometric.iters=0", "offset.iters=0"))
    image = shared_assets / "images" / "ffhq_256" / "00000.png"
    result = make_result(fitter, fitter.fit(target_from_input(image)))
    ref = np.load(shared_assets / "images" / "ffhq_256" / "landmarks68" / "00000.npy")
    pred = np.asarray(result.lmks_68_fit)
    assert pred.shape == (68, 2) and np.isfinite(pred).all()
    nme = np.linalg.norm(pred - ref, axis=1).mean() / np.linalg.norm(ref[36] - ref[45])
    assert nme < 0.08, nme  # RingNet's embedding gives ~0.04 on this image
