"""The zero-lag smoother (``TrackConfig.smooth = "zero-lag"``): a two-sided pass over the tracker's output.

The tracker fits each frame with only ``tail`` frames of future, so what the landmarks pin down least -- the
camera depth (apparent size: about 5 mm of noise per frame at 1.5 px of detector noise, more where expressions
trade off against size) -- can only be smoothed causally: it either jitters or freezes and lags behind a head
that moves towards the camera. This smoother sees ``lag`` frames of future and past for every frame and fits
smooth trajectories to the tracker's per-frame values (a Whittaker smoother: per channel
``min_x sum_t (x_t - y_t)^2 + lam sum_t (x_{t+1} - 2 x_t + x_{t-1})^2``, a banded solve), so it has no phase lag.
``lam`` is per field (per component for the camera translation): large for the depth, small for the jaw and
the expression, which change within a syllable.

Streaming with constant memory: frames are held (parameters and landmarks only, no images) until ``lag`` later
frames have arrived; each solve sees the tracker's values of the ``lag`` frames before (so the trend of the depth
comes from the data on both sides, not from the frames handed out) and passes through the last frame handed out
(no step between solves, nor where a resumed run continues the frames of the killed one). A new shot (cut, lost
face) flushes: the smoother never mixes shots, and the last frames of a shot are smoothed one-sided. A segment of a
parallel run tracks ``lag`` frames past its end for this (:func:`flamefit.track.video.track_video`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

FIELDS = ("global_pose", "neck_pose", "jaw_pose", "eye_pose", "expression", "cam_translation")
# lam per field (the cutoff period is about 2 pi lam^(1/4) frames): x/y ~26 frames, depth ~20, the head's rotation
# ~20, jaw/expression/eyes ~9 (a syllable at 25 frames/s takes about 7). Depth was smoothed 100x harder (lam 1e5,
# ~110 frames), tuned on ``flamefit bench track``'s clip, whose head keeps its distance; on ../shared/eval's clip
# (real detector, the head moves 29 mm sd in depth) that froze the depth wrongly: whole-clip error 16.7 -> 4.9 mm
# with lam 100 and the depth velocity weight of x/y, per-frame error and jitter unchanged. x/y were smoothed 10x
# harder than the head's rotation (lam 1000); landmarks trade image x/y against yaw/pitch, and smoothing the two
# unequally shifts their sum in time: on that clip the fitted nose led the truth by ~0.5 frame (lag -1) and the
# whole-clip error was 4.05 mm. With x/y at 300: lag 0, 3.29 mm, jitter ratio 0.29 -> 0.27, per-frame unchanged
# (x/y at 100: lag +1, 3.24 mm; MediaPipe's tracking mode itself trails the truth by ~0.45 frame).
DEFAULT_LAMBDA = {"global_pose": 100.0, "neck_pose": 100.0, "jaw_pose": 4.0, "eye_pose": 4.0,
                  "expression": 4.0, "cam_translation": (300.0, 300.0, 100.0)}
DEFAULT_LAG = 40


def _lambda_vector(lam: dict, row) -> np.ndarray:
    """(C,) smoothing weight per channel of the flattened :data:`FIELDS` of ``row`` (a FlameParams, batch 1)."""
    out = []
    for n in FIELDS:
        d = getattr(row, n).reshape(-1).numel()
        w = np.asarray(lam.get(n, 0.0), np.float64).reshape(-1)
        out.append(np.broadcast_to(w, (d,)) if w.size == 1 else w)
    return np.concatenate(out)


HARD = 1.0e9  # measurement weight of a frame already handed out: the result passes through it
# frames handed out that a solve passes through: one (no step; the rate may change there). Two would also fix the
# rate, and with the depth's stiffness that locks in the first block's trend for the whole shot.
PINNED = 1


def whittaker(y: np.ndarray, lam: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(T,C) -> (T,C): per channel c, ``argmin_x sum_t w_t (x_t - y_t)^2 + lam[c] |D2 x|^2`` (D2: second
    differences; ``weights`` (T,), default 1; :data:`HARD` pins a frame). Channels with lam 0 are returned as
    given."""
    from scipy.linalg import solveh_banded

    y = np.asarray(y, np.float64)
    n = y.shape[0]
    out = y.copy()
    if n < 3:
        return out
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    # D2^T D2 as symmetric bands: main diagonal, first and second off-diagonals
    d2 = np.array([1.0, -2.0, 1.0])
    diag = np.zeros(n)
    for k in range(3):
        diag[k:n - 2 + k] += d2[k] ** 2
    off1 = np.zeros(n - 1)
    off1[0:n - 2] += d2[0] * d2[1]
    off1[1:n - 1] += d2[1] * d2[2]
    off2 = np.full(n - 2, d2[0] * d2[2])
    for c in np.nonzero(np.asarray(lam) > 0)[0]:
        lc = float(lam[c])
        ab = np.zeros((3, n))
        ab[0, 2:] = lc * off2
        ab[1, 1:] = lc * off1
        ab[2] = lc * diag + w
        out[:, c] = solveh_banded(ab, w * y[:, c])
    return out


def _flat(row) -> np.ndarray:
    return torch.cat([getattr(row, n).reshape(-1).detach().double().cpu() for n in FIELDS]).numpy()


def _with_values(row, x: np.ndarray):
    q = row._map(lambda t: t.clone())
    o = 0
    for n in FIELDS:
        t = getattr(row, n)
        k = t.numel()
        setattr(q, n, torch.as_tensor(x[o:o + k], dtype=t.dtype, device=t.device).view_as(t))
        o += k
    return q


def _imageless(obs):
    """The observation without its pixels (a zero-size stand-in keeps the frame size for the writer)."""
    if obs.image is None:
        return obs
    return dataclasses.replace(obs, image=np.broadcast_to(np.uint8(0), np.asarray(obs.image).shape))


class ZeroLagSmoother:
    """A sink wrapper: ``ZeroLagSmoother(sink, lag, lam)`` is called with final tracked frames in order (like the
    tracker's sink) and hands smoothed frames to ``sink`` ``lag`` frames later (see the module doc). Frames of a
    new shot (``TrackedFrame.shot`` changes) or without a face flush what is held. Call :meth:`finish` at the end."""

    def __init__(self, sink: Callable, lag: int = DEFAULT_LAG, lam: dict | None = None):
        if lag < 1:
            from flamefit.errors import ConfigError

            raise ConfigError(f"the zero-lag smoother needs a lag of at least 1 frame, got {lag}")
        self.sink = sink
        self.lag = int(lag)
        self.lam = dict(DEFAULT_LAMBDA if lam is None else lam)
        self.held: list = []  # TrackedFrames not yet handed out (raw tracker values)
        # the last <= lag frames handed out (same shot): (tracker value, value handed out); the raw values inform
        # the new frames' smoothing, the last two handed-out values are kept (no step between solves)
        self.past: list[tuple[np.ndarray, np.ndarray]] = []
        self.shot = None
        self._lam_vec = None
        self.seconds = 0.0

    def __call__(self, frames: list) -> None:
        for fr in frames:
            if fr.params is None:  # no face: the shot ends here
                self._flush()
                self.sink([fr])
                continue
            if self.shot is not None and fr.shot != self.shot:
                self._flush()
            self.shot = fr.shot
            self.held.append(dataclasses.replace(fr, obs=_imageless(fr.obs)))
            if len(self.held) >= 2 * self.lag:
                self._emit(len(self.held) - self.lag)

    def finish(self) -> None:
        self._flush()

    def known(self, params, shot: int) -> None:
        """A frame written by an earlier run (resume): it comes after everything held, which is handed out now,
        and its (already smoothed) values become the past of the next frames."""
        if self.held:
            self._emit(len(self.held))
        if self.shot is not None and shot != self.shot:
            self.past = []
        self.shot = shot
        v = _flat(params)  # its tracker value is not stored: the value written stands in for it
        self.past = (self.past + [(v, v)])[-self.lag:]

    def _flush(self) -> None:
        if self.held:
            self._emit(len(self.held))
        self.past = []
        self.shot = None

    def _emit(self, n: int) -> None:
        """Smooth past + held, hand out the first ``n`` held frames."""
        import time

        t0 = time.perf_counter()
        if self._lam_vec is None:
            self._lam_vec = _lambda_vector(self.lam, self.held[0].params)
        raw = [_flat(f.params) for f in self.held]
        P = len(self.past)
        y = np.stack([r for r, _ in self.past[:-PINNED]] + [e for _, e in self.past[-PINNED:]] + raw)
        w = np.ones(len(y))
        w[max(P - PINNED, 0):P] = HARD
        x = whittaker(y, self._lam_vec, w)[P:]
        out = []
        for i in range(n):
            fr = self.held[i]
            out.append(dataclasses.replace(fr, params=_with_values(fr.params, x[i]), residual=None))
        self.past = (self.past + list(zip(raw[:n], x[:n], strict=True)))[-self.lag:]
        self.held = self.held[n:]
        self.seconds += time.perf_counter() - t0
        self.sink(out)
