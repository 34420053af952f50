"""Stages, end-to-end recovery and results on synthetic renders (stand-in model; skipped without ../shared)."""

import json

import numpy as np
import pytest
import torch

from flamefit.errors import ConfigError
from flamefit.fit import synthetic as S
from flamefit.fit.fitter import Fitter
from flamefit.fit.result import make_result
from flamefit.render.camera import project_points

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
    batch = fitter.prepare(case.target)
    params = fitter.initial_params(batch)
    v, _ = fitter.vertices(params)
    pts = fitter.model_points(params, v)["68"]
    px = project_points(fitter.to_camera(params, pts), params.intrinsics())[0]
    err = (px - batch.lmk68[0]).norm(dim=-1)[17:].mean()  # crop pixels (128 px crop)
    assert float(err) < 4.0
    # deterministic
    again = fitter.initial_params(batch)
    assert torch.equal(again.global_pose, params.global_pose) and torch.equal(again.shape, params.shape)


def test_stages_reduce_the_loss_well_below_its_initial_value(fitter, case, full_fit):
    """Not by construction (the kept iterate is never worse than a stage's start): the full objective at the fit
    must be far below its value at the initial parameters (PnP + linear shape + closed-form light), and the
    landmark and photometric stages must each make real progress."""
    from flamefit.fit.optimize import evaluate
    from flamefit.fit.stages import StageName
    from flamefit.fit.terms import FitContext

    names = [s.name for s in full_fit.stages]
    assert names == ["rigid", "landmarks", "appearance", "photometric", "offset"]
    batch = fitter.prepare(case.target)
    p0 = fitter.initial_params(batch)
    fitter.init_light(p0, batch)
    photo = next(s for s in fitter.stages(batch=batch) if s.name is StageName.PHOTOMETRIC)
    p1 = full_fit.params.detach()
    p1.tex_offset = None  # the photometric stage's objective (PCA texture, no offset) at both points
    with torch.no_grad():
        start = float(evaluate(photo, FitContext(fitter, batch, p0, photo.resolution))[0].sum())
        end = float(evaluate(photo, FitContext(fitter, batch, p1, photo.resolution))[0].sum())
    assert end < 0.6 * start, (start, end)
    by = {s.name: s for s in full_fit.stages}
    assert by["landmarks"].loss_end < 0.7 * by["landmarks"].loss_start, by["landmarks"]
    assert by["photometric"].loss_end < 0.8 * by["photometric"].loss_start, by["photometric"]


def test_end_to_end_beats_mean_face(fitter, case, full_fit):
    region = S.face_region(fitter.model, fitter.landmarks68).numpy()
    err = _errors(fitter, full_fit.params, case, region)
    mean = full_fit.params.detach()
    mean.shape = torch.zeros_like(mean.shape)
    mean.expression = torch.zeros_like(mean.expression)
    base = _errors(fitter, mean, case, region)
    assert err["aligned_mm"] < 0.7 * base["aligned_mm"], (err, base)


@pytest.fixture(scope="module")
def small_cases(fitter):
    return [S.make_case(fitter, seed=s, height=150, width=140) for s in (11, 12, 13)]


def test_batch_items_do_not_interact(fitter, small_cases):
    """The batched objective is a sum of per-item objectives: item b's loss and gradient in a batch of 3 equal
    those of item b fitted alone (to float rounding), for the landmark and the photometric stages."""
    from flamefit.fit.optimize import evaluate
    from flamefit.fit.terms import FitContext

    bb = fitter.prepare([c.target for c in small_cases])
    b1 = fitter.prepare([small_cases[1].target])
    pb, p1 = fitter.initial_params(bb), fitter.initial_params(b1)
    for p, b in ((pb, bb), (p1, b1)):
        fitter._with_offset(p)
        fitter.init_light(p, b)
    for stage in fitter.stages(batch=bb)[1:4]:  # landmarks, appearance, photometric
        grads, losses = [], []
        for p, b in ((pb, bb), (p1, b1)):
            q = p.detach()
            q.requires_grad_(list(stage.free))
            total, _ = evaluate(stage, FitContext(fitter, b, q, stage.resolution or None))
            total.sum().backward()
            losses.append(total.detach())
            grads.append({n: getattr(q, n).grad for n in stage.free})
        assert float(losses[0][1]) == pytest.approx(float(losses[1][0]), rel=1e-5)
        for n in stage.free:
            g_b, g_1 = grads[0][n][1:2], grads[1][n]
            assert float((g_b - g_1).abs().max()) <= 1e-3 * float(g_1.abs().max()) + 1e-9, (stage.name, n)


def test_batched_equals_one_by_one(fitter, small_cases):
    """Independent images fitted as one batch give the results of fitting them one by one (per-item losses,
    keep-best and early stopping; Adam is per element). Float rounding differs between batch sizes and Adam
    amplifies it on near-zero gradients, so results are compared where they matter: mesh, camera, landmarks."""
    cfg = fast_config("photometric.iters=10", "landmarks.iters=20", "offset.iters=4",
                      "photometric.early_stop_patience=3", "photometric.early_stop_rel=0.01")
    f = Fitter(fitter.model, texture_space=fitter.full_texture_space, landmarks68=fitter.landmarks68, config=cfg)
    batch = f.fit_batch([c.target for c in small_cases])
    for c, raw_b in zip(small_cases, batch, strict=True):
        raw_1 = f.fit(c.target)
        rb, r1 = make_result(f, raw_b), make_result(f, raw_1)
        dv = np.abs(rb.vertices - r1.vertices)
        assert dv.mean() < 1e-4 and dv.max() < 1e-3  # metres (different images' fits differ by millimetres)
        assert np.abs(rb.cam - r1.cam).max() < 1e-3
        assert np.abs(rb.lmks_68_fit - r1.lmks_68_fit).max() < 0.2  # pixels
        assert np.abs(rb.light - r1.light).max() < 0.02
        assert np.abs(rb.albedo - r1.albedo).mean() < 2e-3
        assert [s.iters_run for s in raw_b.stages] == [s.iters_run for s in raw_1.stages]


def test_recovers_pose_and_camera_of_a_synthetic_head(fitter, case, full_fit):
    from flamefit.fit.crop import params_to_original

    p = params_to_original(full_fit.params, full_fit.crop)
    gt = case.params
    assert torch.allclose(p.global_pose, gt.global_pose, atol=0.12), (p.global_pose, gt.global_pose)
    # where the face is in the image is well determined; its distance less (scale-depth ambiguity of one view)
    v, _ = fitter.vertices(p)
    cam = fitter.to_camera(p, v)[0]
    gt_cam = case.vertices_cam[0]
    px = project_points(cam.mean(0, keepdim=True)[None], p.intrinsics())
    px_gt = project_points(gt_cam.mean(0, keepdim=True)[None], gt.intrinsics())
    assert float((px - px_gt).norm()) < 3.0, (px, px_gt)  # pixels of a 200 px image
    assert abs(float(cam[:, 2].mean() / gt_cam[:, 2].mean()) - 1) < 0.15


def test_landmark_stage_without_photometric(fitter, case):
    raw = fitter.fit(case.target, stages=("rigid", "landmarks"))
    result = make_result(fitter, raw)
    err = np.linalg.norm(result.lmks_68_fit - case.lmks_68_clean, axis=1)[17:].mean()
    assert err < 3.0  # original pixels (200 px image), against noise-free landmarks


def test_unknown_stage_is_a_clear_error(fitter, case):
    with pytest.raises(ConfigError, match="unknown stage"):
        fitter.fit(case.target, stages=("rigid", "photometrc"))


def test_nan_input_raises_a_clear_error_naming_the_image(fitter, case):
    from flamefit.fit.optimize import FitDivergedError

    target = S.make_case(fitter, seed=3, height=200, width=180).target
    target.image = target.image.copy()
    target.image[60:140, 50:130] = np.nan
    target.name = "broken-image"
    with pytest.raises(FitDivergedError, match="broken-image.*appearance"):
        fitter.fit(target)


def test_result_fields_and_files(fitter, case, full_fit, tmp_path):
    import trimesh

    from flamefit.io.results import load_result_params, save_result

    r = make_result(fitter, full_fit)
    H, W = case.target.image.shape[:2]
    assert r.vertices.shape == (5023, 3) and r.pose.shape == (6,) and r.cam.shape == (6,)
    assert r.render.shape == (H, W, 3) and r.overlay.shape == (H, 3 * W, 3) and r.mask.shape == (H, W)
    assert r.lmks_68_fit.shape == (68, 2) and r.albedo.shape == (256, 256, 3) and r.render_scale == 1.0
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
    assert paths
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["camera"]["opencv"]["K"][0][0] == pytest.approx(float(r.K[0, 0]), rel=1e-5)
    assert np.allclose(np.array(doc["camera"]["opengl"]["view"])[1:3, :3], -R[1:3], atol=1e-5)
    assert doc["config"]["resolution"] == 128
    npz = np.load(tmp_path / "x.npz")
    assert {"vertices", "shape", "exp", "pose", "lmks_68", "lmks_68_fit", "render", "overlay", "aligned_image",
            "mask", "K", "cam", "param_shape"} <= set(npz.files)
    assert "param_translation" not in npz.files  # FLAME's own translation is always 0: not written
    mesh = trimesh.load(tmp_path / "x.glb", force="mesh")
    assert len(mesh.faces) == len(faces)
    params, size = load_result_params(tmp_path / "x.npz")
    assert size == (H, W) and torch.allclose(params.shape, full_fit.params.shape)
    assert torch.equal(params.translation, torch.zeros(1, 3))


def test_every_saved_array_is_finite_and_real(fitter, case, full_fit, tmp_path):
    """Every array written is finite, and none that documents a real value is all zeros."""
    from flamefit.io.results import save_result

    r = make_result(fitter, full_fit)
    save_result(r, tmp_path, fitter.faces.numpy(), fitter.vt.numpy(), fitter.ft.numpy(), name="z")
    npz = np.load(tmp_path / "z.npz")
    may_be_zero = {"param_neck_pose", "neck", "param_tex_offset"}  # legitimately ~0 for a synthetic head
    for k in npz.files:
        a = npz[k]
        if a.dtype.kind in "fc":
            assert np.isfinite(a).all(), k
        if a.size and k not in may_be_zero:
            assert np.any(a != 0), f"{k} is all zeros"
    doc = json.loads((tmp_path / "z.json").read_text())
    assert "missing" in doc and "blendshape_scores" in doc["missing"]  # a FitTarget, not an Observation


def test_huge_images_are_rendered_at_a_reduced_size(fitter, full_fit):
    r = make_result(fitter, full_fit, max_render_side=100)
    H, W = r.image_size
    assert 0.45 < r.render_scale < 0.55
    assert r.render.shape[:2] == (round(H * r.render_scale), round(W * r.render_scale))
    assert r.mask.max() > 0.99 and r.render.max() > 0.1  # a real render, not zeros
    assert r.overlay.shape[1] == 3 * r.render.shape[1]
    full = make_result(fitter, full_fit)
    # coverage agrees with the full-size render, downsampled
    import cv2

    small = cv2.resize(full.mask, r.mask.shape[::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(small - r.mask).mean() < 0.05


def test_fit_texture_keeps_geometry_and_detected_landmarks(fitter, case, full_fit, tmp_path):
    from flamefit.fit.api import fit_texture
    from flamefit.io.results import save_result

    r = make_result(fitter, full_fit)
    save_result(r, tmp_path, fitter.faces.numpy(), fitter.vt.numpy(), fitter.ft.numpy(), name="y")
    target = S.make_case(fitter, seed=3, height=200, width=180).target
    detected = target.lmks_68.copy()
    t = fit_texture(tmp_path / "y.npz", target, fitter)
    assert np.allclose(t.vertices, r.vertices, atol=1e-6)
    assert np.allclose(t.cam, r.cam, atol=1e-6)
    assert t.timings.get("texture_s", 0) > 0
    assert np.array_equal(t.lmks_68, detected.astype(np.float32)) and t.landmarks_source == "detected"
    # no detection: the landmarks are absent (not the fit's projection) and the result says why
    target.lmks_68 = None
    t2 = fit_texture(tmp_path / "y.npz", target, fitter)
    assert t2.lmks_68 is None and t2.landmarks_source is None and "lmks_68" in t2.missing


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


def test_missing_uv_layout_fails_before_fitting(synthetic_setup):
    base, dense, _ = synthetic_setup

    class NoUV:  # a model without any UV layout (flamefit's own models always generate one)
        uv = None

        def __getattr__(self, name):
            return getattr(base, name)

    model = NoUV()
    with pytest.raises(ConfigError, match="UV layout"):
        Fitter(model, texture_space=None, dense_landmarks=dense, config=fast_config())
    # landmarks only needs no UVs
    Fitter(model, texture_space=None, dense_landmarks=dense,
           config=fast_config("appearance.iters=0", "photometric.iters=0", "offset.iters=0"))


def test_pca_space_without_uvs_is_refused_on_a_generated_atlas(synthetic_setup):
    """A PCA space's maps are in FLAME's UV layout: without its vt/ft and with only flamefit's generated atlas they
    would be painted onto the wrong texels, so the Fitter refuses up front (a free albedo is fine)."""
    from flamefit.model.texture_space import TextureSpace

    model, dense, _ = synthetic_setup
    assert model.uv is not None and model.uv.generated  # the synthetic model carries no UVs of its own
    mean = torch.full((16, 16, 3), 0.6)
    pca = TextureSpace(mean, torch.randn(3, 16, 16, 3) * 0.05, None, None, kind="flame", source="space.npz")
    with pytest.raises(ConfigError, match="space.npz holds no UV layout"):
        Fitter(model, texture_space=pca, dense_landmarks=dense, config=fast_config())
    Fitter(model, texture_space=None, dense_landmarks=dense, config=fast_config())  # free albedo: the atlas is fine


@pytest.mark.parametrize("solver,bound", [("adam", 0.8), ("lm", 0.85)])
def test_fresh_clone_synthetic_model(synthetic_setup, solver, bound):
    """No ../shared needed: sphere-head model, dense landmarks only, free albedo on planar UVs. With the landmark
    stage solved to convergence (LM) the 60 random points and a near-zero shape prior let the shape follow the
    landmark noise a little more than Adam's 40 small steps do (0.81 vs 0.75 of the mean face's error here; on the
    stand-in FLAME model LM is the more accurate one: `flamefit bench fit`)."""
    model, dense, ts = synthetic_setup
    f = Fitter(model, texture_space=ts, dense_landmarks=dense,
               config=fast_config("n_shape=20", "n_expr=10", "weights.shape_prior=1e-6",
                                  f"landmarks.solver={solver}"))
    c = S.make_case(f, seed=1, height=160, width=150)
    raw = f.fit(c.target)
    region = np.ones(model.num_vertices, bool)
    err = _errors(f, raw.params, c, region)
    mean = raw.params.detach()
    mean.shape = torch.zeros_like(mean.shape)
    mean.expression = torch.zeros_like(mean.expression)
    base = _errors(f, mean, c, region)
    assert err["aligned_mm"] < bound * base["aligned_mm"], (err, base)
    r = make_result(f, raw)
    if f.landmarks68 is None:
        assert r.lmks_68_fit is None and "lmks_68_fit" in r.missing


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


def test_a_model_short_of_components_says_so_in_every_result(synthetic_setup, tmp_path):
    """10 identity components and no expression space: the fit runs on what there is, and each result's
    ``missing`` says what the config asked for and did not get (never an empty ``missing`` on a degraded fit)."""
    import pickle

    from flamefit.model.flame import FlameModel
    from flamefit.model.flame_file import read_flame_file
    from flamefit.model.synthetic import synthetic_flame_dict

    _, dense, ts = synthetic_setup
    d = synthetic_flame_dict(0)
    d["shapedirs"] = d["shapedirs"][..., :10]
    path = tmp_path / "ten_shapes_no_expressions.pkl"
    path.write_bytes(pickle.dumps(d))
    model = FlameModel(read_flame_file(path), n_shape=10, n_expr=0)
    f = Fitter(model, texture_space=ts, dense_landmarks=dense, config=fast_config("n_shape=50", "n_expr=20"))
    assert set(f.degraded) == {"shape_components", "expression"}
    assert "10 identity components" in f.degraded["shape_components"]
    c = S.make_case(f, seed=1, height=160, width=150)
    r = make_result(f, f.fit(c.target))
    assert r.missing["expression"] == f.degraded["expression"] and "shape_components" in r.missing
    full = Fitter(synthetic_setup[0], texture_space=ts, dense_landmarks=dense,
                  config=fast_config("n_shape=20", "n_expr=10"))
    assert not full.degraded
