"""The zero-lag smoother: the banded solve equals the dense least-squares solution, fixed past frames are continued
without a step, shots are never mixed, frames without a face pass through in order, images are not held."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamefit.fit.params import FlameParams
from flamefit.track.smoother import ZeroLagSmoother, whittaker
from flamefit.track.tracker import FrameObs, TrackedFrame


def _dense(y, lam, w):
    n = len(y)
    D = np.diff(np.eye(n), 2, axis=0)
    return np.stack([np.linalg.solve(lam[c] * D.T @ D + np.diag(w), w * y[:, c]) for c in range(y.shape[1])], 1)


@pytest.mark.parametrize("T", [2, 3, 4, 17])
def test_banded_solve_equals_dense(T):
    rng = np.random.default_rng(T)
    y = rng.normal(size=(T, 3))
    lam = np.array([0.0, 3.0, 1e4])
    w = np.ones(T)
    w[:2] = 1e9  # pinned frames
    for weights in (None, w):
        got = whittaker(y, lam, weights)
        want = _dense(y, lam, np.ones(T) if weights is None else weights) if T >= 3 else y
        assert np.allclose(got, want, atol=1e-8)
        assert np.array_equal(got[:, 0], y[:, 0])  # lam 0: untouched
    if T >= 3:
        assert np.allclose(whittaker(y, lam, w)[:2], y[:2], atol=1e-6)  # pinned frames stay


def _frame(i, value, shot=0, image=True):
    p = FlameParams.zeros(1, 4, 5)
    p.cam_translation = torch.tensor([[0.0, 0.0, 1.0 + value]])
    p.expression = torch.full((1, 5), float(value))
    img = np.zeros((8, 6, 3), np.uint8) if image else None
    return TrackedFrame(FrameObs(i, i / 25, img), p, "ok", False, 0.1, shot)


def test_stream_is_smooth_in_order_and_never_mixes_shots():
    got = []
    sm = ZeroLagSmoother(got.extend, lag=4)
    rng = np.random.default_rng(0)
    truth = np.linspace(0, 0.2, 30)
    frames = [_frame(i, truth[i] + rng.normal(0, 0.02)) for i in range(30)]
    frames += [_frame(30, 5.0, shot=1)]  # a new shot far away: must not pull the last frames of shot 0
    frames += [TrackedFrame(FrameObs(31, 31 / 25, None), None, "no_face")]
    frames += [_frame(32 + i, 5.0, shot=2) for i in range(3)]
    for fr in frames:
        sm([fr])
    assert len(got) < len(frames)  # frames are held for their future
    sm.finish()
    assert [f.obs.index for f in got] == list(range(35))
    z = np.array([float(f.params.cam_translation[0, 2]) - 1 for f in got[:30]])
    raw = np.array([float(f.params.cam_translation[0, 2]) - 1 for f in frames[:30]])
    assert np.abs(np.diff(z, 2)).mean() < 0.2 * np.abs(np.diff(raw, 2)).mean()  # depth smoothed
    assert abs(z[-1] - truth[-1]) < 0.05  # not dragged towards shot 1
    assert float(got[30].params.cam_translation[0, 2]) == pytest.approx(6.0)
    assert got[31].params is None and got[31].status == "no_face"
    assert all(f.residual is None for f in got if f.params is not None)  # the forward residual no longer applies
    # images are not held, but the frame size is kept for the writer (without memory)
    assert got[0].obs.image.shape == (8, 6, 3) and got[0].obs.image.strides == (0, 0, 0)


def test_known_frames_are_continued_without_a_step():
    got = []
    sm = ZeroLagSmoother(got.extend, lag=3)
    # a resumed run: two written frames moving at constant velocity, then new (noise-free) frames continuing it
    for i in range(2):
        sm.known(_frame(i, 0.01 * i).params, 0)
    for i in range(2, 12):
        sm([_frame(i, 0.01 * i)])
    sm.finish()
    z = np.array([float(f.params.cam_translation[0, 2]) - 1 for f in got])
    assert np.allclose(z, 0.01 * np.arange(2, 12), atol=1e-6)
