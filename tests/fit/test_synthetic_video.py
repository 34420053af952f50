"""Synthetic clips with known motion: determinism, truth consistent with the pixels, blinks, talking, noise, mp4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamefit.errors import ConfigError
from flamefit.fit.synthetic_video import BLINK_COMPONENT, ClipMotion, make_synthetic_clip
from flamefit.model.lbs import axis_angle_to_matrix
from flamefit.render.camera import PerspectiveCamera
from flamefit.render.mesh_renderer import render_mesh


@pytest.fixture(scope="module")
def standin_clip(standin):
    model, lmk, ts = standin
    torch.set_num_threads(1)
    # 4 s at 25 fps: blinks every 1.5-3.5 s, so at least one
    return make_synthetic_clip(model, landmarks68=lmk, texture_space=ts, n_frames=100, fps=25, height=128,
                               width=128, seed=3)


def truth_masks(model, clip, frames) -> np.ndarray:
    """Silhouettes re-rendered from the clip's ground-truth vertices and camera (independent of its images)."""
    p = clip.params
    idx = torch.as_tensor(frames)
    cam = PerspectiveCamera(p.intrinsics()[idx], axis_angle_to_matrix(p.cam_rotation[idx]),
                            p.cam_translation[idx], clip.height, clip.width)
    out = render_mesh(torch.as_tensor(clip.vertices[frames]), model.faces, cam, antialias=False)
    return out.mask.numpy()


def test_deterministic_from_seed(standin):
    model, lmk, ts = standin
    kw = dict(landmarks68=lmk, texture_space=ts, n_frames=6, fps=25, height=64, width=64, landmark_noise_px=1.0)
    a = make_synthetic_clip(model, seed=5, **kw)
    b = make_synthetic_clip(model, seed=5, **kw)
    c = make_synthetic_clip(model, seed=6, **kw)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.lmks_68_noisy, b.lmks_68_noisy)
    assert torch.equal(a.params.expression, b.params.expression)
    assert not np.array_equal(a.images, c.images)
    assert not torch.equal(a.params.shape, c.params.shape)


def test_truth_matches_the_pixels(standin, standin_clip):
    model = standin[0]
    clip = standin_clip
    frames = [0, 37, 99]
    masks = truth_masks(model, clip, frames)
    from scipy.ndimage import binary_dilation

    outside = ~binary_dilation(masks.any(0), iterations=2)  # anti-aliasing blends one pixel beyond the mask
    # static background: every pixel outside all heads is the same in all frames (no pixel noise here)
    assert np.array_equal(clip.images[0][outside], clip.images[99][outside])
    # the head is where the truth says: pixels covered in one frame but not in another changed
    only0 = masks[0] & ~masks[2]
    assert only0.sum() > 20
    changed = np.abs(clip.images[0].astype(int) - clip.images[99].astype(int)).sum(-1) > 0
    assert changed[only0].mean() > 0.95
    # the projected 68 landmarks lie on the rendered face
    for k, f in enumerate(frames):
        xy = np.floor(clip.lmks_68[f]).astype(int)
        assert masks[k][xy[:, 1], xy[:, 0]].mean() > 0.95
    # camera-frame vertices and K give the same pixels as the renderer's camera
    K = clip.K
    v = clip.verts_cam[37]
    px = v[:, :2] / v[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    assert np.all((px > 0) & (px < 128))


def test_motion_is_smooth_and_talks_and_blinks(standin_clip):
    clip = standin_clip
    lm = clip.lmks_68
    nose = lm[:, 27:36]  # rigid points: the head's own motion (the mouth talks, the eyes blink)
    acc = np.abs(nose[2:] - 2 * nose[1:-1] + nose[:-2])
    vel = np.abs(nose[1:] - nose[:-1])
    assert acc.mean() < 0.2 * vel.mean()  # smooth: accelerations far below speeds
    assert vel.mean() > 0.1  # and it moves (px per frame at 128 px)
    # blinks: the eyelids (upper-lower landmark distance) close on the blink frames
    assert 0 < clip.blink_frames.sum() < 30
    lids = (np.linalg.norm(lm[:, [37, 38, 43, 44]] - lm[:, [41, 40, 47, 46]], axis=-1)).mean(1)
    assert lids[clip.blink_frames].mean() < 0.5 * lids[~clip.blink_frames].mean()
    assert clip.params.expression[clip.blink_frames, BLINK_COMPONENT].min() > 1.0
    # talking: the inner-lip gap follows the jaw opening
    gap = np.linalg.norm(lm[:, [61, 62, 63]] - lm[:, [67, 66, 65]], axis=-1).mean(1)
    jaw = clip.params.jaw_pose[:, 0].numpy()
    assert jaw.max() > 0.1 and np.corrcoef(gap, jaw)[0, 1] > 0.8
    # identity, texture, light and camera rotation are the same in every frame
    p = clip.params
    for name in ("shape", "tex", "light", "cam_rotation", "focal_px"):
        value = getattr(p, name)
        assert torch.equal(value, value[:1].expand_as(value)), name
    assert p.global_pose[:, 1].abs().max() > 0.2  # head turns


def test_detector_noise_statistics(standin):
    model, lmk, ts = standin
    clip = make_synthetic_clip(model, landmarks68=lmk, n_frames=200, fps=25, height=64, width=64, seed=1,
                               landmark_noise_px=2.0, landmark_noise_corr=0.5, keep_frames=False)
    noise = clip.lmks_68_noisy - clip.lmks_68
    sigma = 2.0 * 64 / 256
    assert noise.std() == pytest.approx(sigma, rel=0.05)
    lag1 = (noise[1:] * noise[:-1]).mean() / noise.var()
    assert lag1 == pytest.approx(0.5, abs=0.05)
    assert clip.images is None and clip.lmks_dense is None and clip.lmks_dense_noisy is None
    white = make_synthetic_clip(model, landmarks68=lmk, n_frames=3, height=32, width=32, seed=1)
    assert white.lmks_68_noisy is None  # no noise asked: no noisy copy (not a duplicate of the truth)


def test_writes_an_mp4(standin, tmp_path):
    from flamefit.observe.video import probe_video, read_video

    model, lmk, ts = standin
    path = tmp_path / "clip.mp4"
    clip = make_synthetic_clip(model, landmarks68=lmk, texture_space=ts, n_frames=12, fps=24, height=96, width=96,
                               seed=2, video_path=path)
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count, info.fps) == (96, 96, 12, 24)
    frames = list(read_video(path))
    assert [f.index for f in frames] == list(range(12))
    assert np.allclose([f.time_s for f in frames], clip.times_s)
    mse = np.mean((frames[5].image.astype(float) - clip.images[5]) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 28  # the video holds the same frames (lossy coding aside)


def test_fresh_clone_model_with_dense_points(synthetic_setup, tmp_path):
    """No shared assets: the small synthetic model, a dense correspondence, a free texture with planar UVs."""
    model, dense, ts = synthetic_setup
    clip = make_synthetic_clip(model, dense=dense, texture_space=ts, n_frames=10, fps=10, height=64, width=64,
                               seed=0, landmark_noise_px=1.0, pixel_noise=0.01, keep_frames=False,
                               video_path=tmp_path / "c.mp4", motion=ClipMotion(blink_sd=0.0))
    assert clip.lmks_68 is None and clip.lmks_68_noisy is None
    assert clip.lmks_dense.shape == (10, len(dense), 2) and clip.lmks_dense_noisy.shape == (10, len(dense), 2)
    assert np.isfinite(clip.lmks_dense).all()
    assert (tmp_path / "c.mp4").exists()
    arrays = clip.truth_arrays()
    assert {"param_shape", "verts_cam", "K", "lmks_dense", "lmks_dense_noisy"} <= set(arrays)
    assert "lmks_68" not in arrays
    assert not clip.blink_frames.any()


def test_rejects_bad_arguments(synthetic_setup):
    model = synthetic_setup[0]
    with pytest.raises(ConfigError):
        make_synthetic_clip(model, n_frames=0)
    with pytest.raises(ConfigError):
        make_synthetic_clip(model, n_frames=2, landmark_noise_corr=1.0)


def test_shot_cuts_and_lost_face(standin):
    model, lmk, ts = standin
    clip = make_synthetic_clip(model, landmarks68=lmk, texture_space=ts, n_frames=30, fps=25, height=96, width=96,
                               seed=4, cuts=(12, 20), face_absent=(5, 6, 7), landmark_noise_px=1.0)
    assert clip.shot.tolist() == [0] * 12 + [1] * 8 + [2] * 10
    assert clip.face_visible.tolist() == [i not in (5, 6, 7) for i in range(30)]
    for name in ("lmks_68", "lmks_68_noisy"):
        a = getattr(clip, name)
        assert np.isnan(a[[5, 6, 7]]).all() and np.isfinite(a[clip.face_visible]).all()
    # lost face: the frames show the shot's background only (identical to each other), the face is back at 8
    assert np.array_equal(clip.images[5], clip.images[6]) and np.array_equal(clip.images[6], clip.images[7])
    masks = truth_masks(model, clip, [4, 8])
    assert masks.any(axis=(1, 2)).all()
    assert (clip.images[8] != clip.images[7]).any(-1)[masks[1]].mean() > 0.95
    # cuts: the landmarks jump far more between shots than within one
    step = np.linalg.norm(clip.lmks_68[1:] - clip.lmks_68[:-1], axis=-1).mean(1)
    within = np.nanmax(np.delete(step, [4, 5, 6, 7, 11, 19]))
    assert step[11] > 3 * within and step[19] > 3 * within
    # and the background changes at a cut (the pixels outside both heads differ)
    from scipy.ndimage import binary_dilation

    m = truth_masks(model, clip, [11, 12])
    outside = ~binary_dilation(m.any(0), iterations=2)
    assert (clip.images[11] != clip.images[12]).any(-1)[outside].mean() > 0.9
    assert clip.config["cuts"] == [12, 20] and clip.config["face_absent"] == [5, 6, 7]
    with pytest.raises(ConfigError):
        make_synthetic_clip(model, n_frames=5, cuts=(0,))
    with pytest.raises(ConfigError):
        make_synthetic_clip(model, n_frames=5, face_absent=(9,))
