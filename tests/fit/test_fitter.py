"""Stages, end-to-end recovery and results on synthetic renders (stand-in model; skipped without ../shared)."""

import json

import numpy as np
import pytest
import torch

from flamefit.fit import synthetic as S
from flamefit.fit.fitter import Fitter
from flamefit.fit.result import make_result

from .conftest import fast_config


@pytest.fixture(scope="module")
def fitter(standin):
    model, lmk, ts = standin
    return Fitter(model, texture_space=ts, landmarks68=lmk, config=fast_config())


@pytest.fixture(scope="module")
def case(fitter):
    return S.make_case(fitter, seed=3, height=200, width=180)


def _errors(fitter, params, case, region):
    v, _ = fitter.vertices(params)
    pred = fitter.to_camera(params, v)[0].detach().numpy()
    return S.vertex_errors_mm(pred, case.vertices_cam[0].numpy(), region)


@pytest.fixture(scope="module")
def full_fit(fitter, case):
    return fitter.fit(case.target)


def test_initialisation_lands_near_the_landmarks(fitter, case):
    data = fitter.prepare(case.target)
    params = fitter.initial_params(data)
    v, _ = fitter.vertices(params)
    pts = fitter.model_points(params, v)["68"]
    from flamefit.fit.landmarks import project_points

    px = project_points(fitter.to_camera(params, pts), params.intrinsics())[0]
    err = (px - data["lmk68"][0]).norm(dim=-1)[17:].mean()  # crop pixels (128 px crop)
    assert float(err) < 4.0
    # deterministic
    again = fitter.initial_params(data)
    assert torch.equal(again.global_pose, params.global_pose) and torch.equal(again.shape, params.shape)


def test_every_stage_lowers_its_loss(full_fit):
    names = [s.name for s in full_fit.stages]
    assert names == ["rigid", "landmarks", "appearance", "photometric", "offset"]
    for s in full_fit.stages:
        assert s.loss_end < s.loss_start, s


def test_end_to_end_beats_mean_face(fitter, case, full_fit):
    region = S.face_region(fitter.model, fitter.landmarks68).numpy()
    err = _errors(fitter, full_fit.params, case, region)
    mean = full_fit.params.detach()
    mean.shape = torch.zeros_like(mean.shape)
    mean.expression = torch.zeros_like(mean.expression)
    base = _errors(fitter, mean, case, region)
    assert err["aligned_mm"] < 0.7 * base["aligned_mm"], (err, base)


def test_landmark_stage_without_photometric(fitter, case):
    raw = fitter.fit(case.target, stages=("rigid", "landmarks"))
    result = make_result(fitter, raw)
    err = np.linalg.norm(result.lmks_68_fit - case.lmks_68_clean, axis=1)[17:].mean()
    assert err < 3.0  # original pixels (200 px image), against noise-free landmarks


def test_result_fields_and_files(fitter, case, full_fit, tmp_path):
    import trimesh

    from flamefit.io.results import is_finished, load_result_params, save_result

    r = make_result(fitter, full_fit)
    H, W = case.target.image.shape[:2]
    assert r.vertices.shape == (5023, 3) and r.pose.shape == (6,) and r.cam.shape == (6,)
    assert r.render.shape == (H, W, 3) and r.overlay.shape == (H, 3 * W, 3) and r.mask.shape == (H, W)
    assert r.lmks_68_fit.shape == (68, 2) and r.albedo.shape == (256, 256, 3)
    # intrinsics are for the original image: projecting the vertices with K and cam lands on the render mask
    import cv2

    R, _ = cv2.Rodrigues(r.cam[:3].astype(np.float64))
    cam_pts = r.vertices @ R.T + r.cam[3:]
    px = cam_pts[:, :2] / cam_pts[:, 2:] * r.K[0, 0] + r.K[:2, 2]
    inside = px[(px[:, 0] > 0) & (px[:, 0] < W) & (px[:, 1] > 0) & (px[:, 1] < H)].astype(int)
    assert r.mask[inside[:, 1], inside[:, 0]].mean() > 0.9
    # synthetic render and fit overlap well
    iou = ((r.mask > 0.5) & (case.skin_mask > 0.5)).sum() / (case.skin_mask > 0.5).sum()
    assert iou > 0.9
    faces = fitter.faces.numpy()
    paths = save_result(r, tmp_path, faces, fitter.vt.numpy(), fitter.ft.numpy(), config=fitter.cfg, name="x")
    assert is_finished(tmp_path, "x")
    doc = json.loads(paths["json"].read_text())
    assert doc["camera"]["opencv"]["K"][0][0] == pytest.approx(float(r.K[0, 0]), rel=1e-5)
    assert np.allclose(np.array(doc["camera"]["opengl"]["view"])[1:3, :3], -R[1:3], atol=1e-5)
    assert doc["config"]["resolution"] == 128
    npz = np.load(paths["npz"])
    assert {"vertices", "shape", "exp", "pose", "lmks_68", "lmks_68_fit", "render", "overlay", "aligned_image",
            "mask", "K", "cam", "param_shape"} <= set(npz.files)
    mesh = trimesh.load(paths["glb"], force="mesh")
    assert len(mesh.faces) == len(faces)
    obj = trimesh.load(paths["obj"], force="mesh", process=False)
    assert len(obj.faces) == len(faces)
    params, size = load_result_params(paths["npz"])
    assert size == (H, W) and torch.allclose(params.shape, full_fit.params.shape)


def test_fit_texture_keeps_geometry(fitter, case, full_fit, tmp_path):
    from flamefit.fit.api import fit_texture
    from flamefit.io.results import save_result

    r = make_result(fitter, full_fit)
    paths = save_result(r, tmp_path, fitter.faces.numpy(), fitter.vt.numpy(), fitter.ft.numpy(), name="y")
    target = S.make_case(fitter, seed=3, height=200, width=180).target
    target.lmks_68 = None  # the saved fit provides the crop
    t = fit_texture(paths["npz"], target, fitter)
    assert np.allclose(t.vertices, r.vertices, atol=1e-6)
    assert np.allclose(t.cam, r.cam, atol=1e-6)
    assert t.timings.get("texture_s", 0) > 0


def test_free_albedo_and_shared_light(standin, case):
    model, lmk, ts = standin
    # texture.mode=free: the texture file only lends its UV layout
    f = Fitter(model, texture_space=ts, landmarks68=lmk,
               config=fast_config("texture.light=sh9", "offset.iters=0", "texture.mode=free"))
    raw = f.fit(case.target)
    assert raw.params.light.shape == (1, 9, 1) and raw.params.tex.shape == (1, 0)
    assert raw.params.tex_offset is not None and float(raw.params.tex_offset.abs().max()) > 0
    photo = [s for s in raw.stages if s.name == "photometric"][0]
    assert photo.loss_end < photo.loss_start


def test_fresh_clone_synthetic_model(synthetic_setup):
    """No ../shared needed: sphere-head model, dense landmarks only, free albedo on planar UVs."""
    model, dense, ts = synthetic_setup
    f = Fitter(model, texture_space=ts, dense_landmarks=dense,
               config=fast_config("n_shape=20", "n_expr=10", "weights.shape_prior=1e-6"))
    c = S.make_case(f, seed=1, height=160, width=150)
    raw = f.fit(c.target)
    region = np.ones(model.num_vertices, bool)
    err = _errors(f, raw.params, c, region)
    mean = raw.params.detach()
    mean.shape = torch.zeros_like(mean.shape)
    mean.expression = torch.zeros_like(mean.expression)
    base = _errors(f, mean, c, region)
    assert err["aligned_mm"] < 0.8 * base["aligned_mm"], (err, base)


def test_crop_maps_points_and_pixels_consistently():
    from flamefit.fit.crop import Crop

    img = np.zeros((50, 80, 3), np.float32)
    img[20, 30] = 1.0  # pixel centre (30.5, 20.5)
    crop = Crop.around(np.array([[10.0, 5.0], [50.0, 45.0]]), size=80, crop_scale=1.0)  # 40 px box -> 80 px
    out = crop.warp(img, interpolation="nearest")
    x, y = crop.to_crop(np.array([30.5, 20.5]))
    assert out[int(y), int(x)].max() == 1.0
    assert np.allclose(crop.to_orig(crop.to_crop(np.array([[1.0, 2.0]]))), [[1.0, 2.0]])
    outside = Crop.around(np.array([[-30.0, -30.0], [10.0, 10.0]]), size=40, crop_scale=1.0)
    valid = outside.warp(np.ones((50, 80), np.float32), border="zero")
    assert valid[0, 0] == 0 and valid[-1, -1] == 1
