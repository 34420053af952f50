"""Tracking metrics on analytic signals: jitter, lag, aligned vertex errors, peak RSS."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from flamefit.bench.track_metrics import (
    PeakRSS,
    aligned_errors_mm,
    clip_aligned_errors_mm,
    jitter_px,
    jitter_report,
    lag_frames,
    peak_rss_mb,
    second_difference,
    vertex_error_report,
)


def moving_points(T=60, N=5, wobble_px=0.0, seed=0):
    """(T,N,2): points on a circle moving on a smooth path, plus optional white jitter."""
    t = np.arange(T)[:, None, None]
    base = np.stack([np.cos(np.arange(N)), np.sin(np.arange(N))], -1)[None] * 20
    path = np.concatenate([50 + 30 * np.sin(2 * np.pi * t / 40), 60 + 0.02 * t ** 2], -1)
    pts = base + path
    if wobble_px:
        pts = pts + np.random.default_rng(seed).normal(0, wobble_px, pts.shape)
    return pts


def test_second_difference_of_a_parabola():
    x = 0.5 * 3.0 * np.arange(10.0) ** 2  # acceleration 3 per frame^2
    assert np.allclose(second_difference(x), 3.0)
    with pytest.raises(ValueError):
        second_difference(np.zeros(2))


def test_jitter_zero_for_exact_motion_and_known_for_alternating_error():
    truth = moving_points()
    assert jitter_px(truth, truth) == 0.0
    # an offset or a constant drift has no acceleration: no jitter
    assert jitter_px(truth + 5.0, truth) == pytest.approx(0.0, abs=1e-9)
    assert jitter_px(truth + np.arange(60)[:, None, None] * 0.3, truth) == pytest.approx(0.0, abs=1e-9)
    # +e, -e, +e, ... in x: acceleration error 4e in every frame
    e = 0.25
    alt = truth.copy()
    alt[..., 0] += e * (-1.0) ** np.arange(60)[:, None]
    assert jitter_px(alt, truth) == pytest.approx(4 * e)


def test_jitter_of_white_noise_and_report():
    truth = moving_points(T=400, N=20)
    sigma = 1.0
    noisy = moving_points(T=400, N=20, wobble_px=sigma, seed=1)
    # acc of white noise: each axis N(0, 6 sigma^2); the norm of 2 such: Rayleigh mean sqrt(6) sigma sqrt(pi/2)
    assert jitter_px(noisy, truth) == pytest.approx(math.sqrt(6) * sigma * math.sqrt(math.pi / 2), rel=0.05)
    half = truth + 0.5 * (noisy - truth)
    rep = jitter_report(half, noisy, truth)
    assert rep["jitter_ratio"] == pytest.approx(0.5, rel=1e-6)
    assert set(jitter_report(half, None, truth)) == {"jitter_fit_px"}


def test_jitter_skips_missing_frames():
    truth = moving_points()
    fit = truth.copy()
    fit[10] = np.nan  # a frame without a face: the three accelerations that need it are skipped
    fit[30, :, 0] += 1.0  # a spike: acceleration errors 1, 2, 1 over three frames
    assert jitter_px(fit, truth) == pytest.approx((1 + 2 + 1) / (58 - 3))
    assert math.isnan(jitter_px(np.full_like(truth, np.nan), truth))


@pytest.mark.parametrize("shift", [0, 2, -3])
def test_lag_integer(shift):
    t = np.arange(200)
    truth = np.sin(2 * np.pi * t / 37) + 0.5 * np.sin(2 * np.pi * t / 11 + 1)
    fitted = np.sin(2 * np.pi * (t - shift) / 37) + 0.5 * np.sin(2 * np.pi * (t - shift) / 11 + 1)
    assert lag_frames(fitted, truth) == pytest.approx(shift, abs=0.05)
    assert lag_frames(fitted, truth, subframe=False) == shift


def test_lag_subframe_and_channels_and_offset():
    t = np.arange(300)[:, None]
    periods = np.array([[29.0, 41.0, 53.0]])
    truth = np.sin(2 * np.pi * t / periods)
    fitted = 3.0 + np.sin(2 * np.pi * (t - 1.5) / periods)  # 1.5 frames late, offset (removed)
    assert lag_frames(fitted, truth) == pytest.approx(1.5, abs=0.1)
    assert lag_frames(fitted, truth, derivative=1) == pytest.approx(1.5, abs=0.1)
    # a causal exponential smoother lags; a zero-lag (forward-backward) one does not
    rng = np.random.default_rng(0)
    truth1 = np.sin(2 * np.pi * np.arange(400) / 50)
    noisy = truth1 + rng.normal(0, 0.05, 400)
    a = 0.3
    causal = np.empty_like(noisy)
    causal[0] = noisy[0]
    for i in range(1, 400):
        causal[i] = a * noisy[i] + (1 - a) * causal[i - 1]
    zero_phase = causal.copy()
    for i in range(398, -1, -1):
        zero_phase[i] = a * causal[i] + (1 - a) * zero_phase[i + 1]
    assert lag_frames(causal, truth1) == pytest.approx((1 - a) / a, abs=0.3)  # group delay of the EMA at low f
    assert abs(lag_frames(zero_phase, truth1)) < 0.3
    assert math.isnan(lag_frames(np.ones(50), np.ones(50)))


def test_lag_with_missing_frames():
    t = np.arange(200)
    truth = np.sin(2 * np.pi * t / 31)
    fitted = np.sin(2 * np.pi * (t - 2) / 31)
    fitted[50:60] = np.nan
    assert lag_frames(fitted, truth) == pytest.approx(2, abs=0.05)


def _similarity(v, scale, angle, shift):
    c, s = math.cos(angle), math.sin(angle)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return scale * v @ R.T + shift


def test_vertex_errors_after_alignment():
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 0.05, (1, 200, 3)).repeat(6, 0) + np.array([0, 0, 0.6])
    region = np.ones(200, bool)
    region[150:] = False
    # each frame a different similarity of the truth: per-frame alignment removes it entirely...
    pred = np.stack([_similarity(gt[i], 1 + 0.05 * i, 0.1 * i, [0.01 * i, 0, 0.02 * i]) for i in range(6)])
    assert np.allclose(aligned_errors_mm(pred, gt, region), 0, atol=1e-6)
    # ...one alignment for the whole clip cannot (sizes and distances differ per frame)
    clip = clip_aligned_errors_mm(pred, gt, region)
    assert clip.min() > 1.0
    # the same similarity in every frame: one alignment suffices
    same = np.stack([_similarity(gt[i], 1.1, 0.2, [0.01, 0.02, 0.03]) for i in range(6)])
    assert np.allclose(clip_aligned_errors_mm(same, gt, region), 0, atol=1e-6)
    # a known residual: 1 mm along x on every region vertex survives alignment only as far as it is not a similarity
    bumped = gt.copy()
    bumped[:, :150:2, 0] += 0.001
    bumped[:, 1:150:2, 0] -= 0.001
    assert aligned_errors_mm(bumped, gt, region) == pytest.approx(np.full(6, 1.0), abs=0.05)
    rep = vertex_error_report(pred, gt, region)
    assert rep["frames"] == 6 and rep["per_frame_aligned_mm"] < 1e-6 and rep["clip_aligned_mm"] > 1.0


def test_vertex_errors_skip_missing_frames_and_check_shapes():
    rng = np.random.default_rng(1)
    gt = rng.normal(0, 0.05, (4, 50, 3))
    pred = gt.copy()
    pred[2] = np.nan
    per = aligned_errors_mm(pred, gt)
    assert np.isnan(per[2]) and np.allclose(per[[0, 1, 3]], 0, atol=1e-6)
    clip = clip_aligned_errors_mm(pred, gt)
    assert np.isnan(clip[2]) and np.allclose(clip[[0, 1, 3]], 0, atol=1e-6)
    assert vertex_error_report(pred, gt)["frames"] == 3
    with pytest.raises(ValueError):
        aligned_errors_mm(pred[:, :10], gt)
    with pytest.raises(ValueError):
        aligned_errors_mm(pred, gt, np.ones(10, bool))


def test_peak_rss():
    before = peak_rss_mb()
    assert before > 10
    with PeakRSS() as m:
        block = np.ones(150 * 1024 * 1024 // 8)  # 150 MiB, touched
        del block
    assert m.peak_mb >= before or m.since_reset
    if sys.platform.startswith("linux") and m.since_reset:
        assert m.peak_mb - m.start_mb > 120
        with PeakRSS() as small:
            np.ones(1024)
        assert small.peak_mb - small.start_mb < 60  # the earlier 150 MiB does not count any more
    assert set(m.to_dict()) == {"peak_rss_mb", "start_rss_mb", "peak_is_since_start"}


def test_measure_decode(tmp_path):
    pytest.importorskip("av", reason="PyAV (the `video` extra) is not installed")
    from flamefit.bench.track_metrics import measure_decode
    from flamefit.observe.video import VideoWriter

    with VideoWriter(tmp_path / "v.mp4", fps=10) as w:
        for i in range(20):
            w.write(np.full((32, 32, 3), i * 10, np.uint8))
    rep = measure_decode(tmp_path / "v.mp4", fps=5)
    assert rep["frames"] == 10 and rep["threads"] == 1
    assert rep["frames_per_s"] > 0 and rep["peak_rss_mb"] > 0
