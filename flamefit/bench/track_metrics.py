"""Tracking metrics for ``flamefit bench track`` (pure numpy): jitter, lag, aligned vertex errors, peak memory.

* :func:`jitter_px`: mean |acceleration(fitted points) - acceleration(truth)| in px/frame^2; the same function on
  the raw detections gives the detector's jitter to compare with (:func:`jitter_report`).
* :func:`lag_frames`: the delay of a fitted signal behind the truth, by normalised cross-correlation (sub-frame
  by parabolic interpolation of the peak).
* :func:`aligned_errors_mm` / :func:`clip_aligned_errors_mm` / :func:`vertex_error_report`: face-region vertex
  errors after a similarity alignment per frame, and after ONE alignment for the whole clip (which exposes a
  tracker that changes head size or distance from frame to frame).
* :func:`peak_rss_mb`, :func:`reset_peak_rss`, :class:`PeakRSS`: peak resident memory of this process.

Frames without a result are NaN rows in the inputs; every metric uses only the frames (or triples, for
accelerations) where everything it needs is finite, and says how many it used.
"""

from __future__ import annotations

import math
import os

import numpy as np

from flamefit.fit.synthetic import similarity_align
from flamefit.texspace.pipeline import peak_rss_mb as peak_rss_mb  # the one definition

# -- jitter ---------------------------------------------------------------------------------------------------------

def second_difference(x: np.ndarray) -> np.ndarray:
    """(T,...) -> (T-2,...): ``x[t+1] - 2 x[t] + x[t-1]``, the acceleration per frame^2 (NaN where a frame is)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 3:
        raise ValueError(f"an acceleration needs at least 3 frames, got {x.shape[0]}")
    return x[2:] - 2 * x[1:-1] + x[:-2]


def jitter_px(points: np.ndarray, truth: np.ndarray) -> float:
    """Mean Euclidean norm of ``acc(points) - acc(truth)`` over frames and points, in px/frame^2.

    ``points`` and ``truth``: (T,N,2) pixel positions of the same N points in T consecutive frames (NaN for a
    frame without a result: the accelerations that need it are skipped). Subtracting the truth's acceleration
    leaves the jitter (and any lag-induced error) rather than the head's own motion. NaN if nothing is left.
    """
    p, g = np.asarray(points, np.float64), np.asarray(truth, np.float64)
    if p.shape != g.shape or p.ndim != 3:
        raise ValueError(f"points and truth must both be (T,N,D), got {p.shape} and {g.shape}")
    d = np.linalg.norm(second_difference(p) - second_difference(g), axis=-1)  # (T-2,N)
    d = d[np.isfinite(d)]
    return float(d.mean()) if d.size else float("nan")


def jitter_report(fitted: np.ndarray, detected: np.ndarray | None, truth: np.ndarray) -> dict[str, float]:
    """Jitter of the fitted points, of the raw detections, and their ratio (the issue's target: <= 0.35)."""
    out = {"jitter_fit_px": jitter_px(fitted, truth)}
    if detected is not None:
        raw = jitter_px(detected, truth)
        out["jitter_raw_px"] = raw
        out["jitter_ratio"] = out["jitter_fit_px"] / raw if raw > 0 else float("nan")
    return out


# -- lag ------------------------------------------------------------------------------------------------------------

def lag_frames(fitted: np.ndarray, truth: np.ndarray, max_lag: int = 10, subframe: bool = True,
               derivative: int = 0) -> float:
    """Delay of ``fitted`` behind ``truth`` in frames: positive when ``fitted[t] ~ truth[t - lag]``.

    Both (T,) or (T,...) (channels are pooled: one lag for all). Each channel's mean is removed; the lag maximises
    the normalised cross-correlation over ``-max_lag..max_lag`` on the frames where both are finite; with
    ``subframe`` a parabola through the peak and its neighbours refines it. ``derivative=1`` correlates frame
    differences instead (insensitive to slow offsets; noisier). NaN when the signals do not vary.
    """
    f = np.asarray(fitted, np.float64).reshape(len(fitted), -1)
    g = np.asarray(truth, np.float64).reshape(len(truth), -1)
    if f.shape != g.shape:
        raise ValueError(f"fitted and truth must have the same shape, got {f.shape} and {g.shape}")
    for _ in range(derivative):
        f, g = np.diff(f, axis=0), np.diff(g, axis=0)
    T = f.shape[0]
    max_lag = int(min(max_lag, T - 2))
    if max_lag < 1:
        raise ValueError(f"need more frames than 2 + max_lag for a lag, got {T}")
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.full(len(lags), np.nan)
    for i, lag in enumerate(lags):
        a = f[max(lag, 0): T + min(lag, 0)]  # fitted[t + lag]
        b = g[max(-lag, 0): T - max(lag, 0)]  # truth[t]
        ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
        if ok.sum() < 3:
            continue
        a = a[ok] - a[ok].mean(0)
        b = b[ok] - b[ok].mean(0)
        den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
        if den > 0:
            corr[i] = float((a * b).sum()) / den
    if not np.isfinite(corr).any():
        return float("nan")
    k = int(np.nanargmax(corr))
    best = float(lags[k])
    if subframe and 0 < k < len(lags) - 1 and np.isfinite(corr[k - 1]) and np.isfinite(corr[k + 1]):
        c0, c1, c2 = corr[k - 1], corr[k], corr[k + 1]
        curv = c0 - 2 * c1 + c2
        if curv < 0:
            best += 0.5 * (c0 - c2) / curv
    return best


# -- vertex errors ----------------------------------------------------------------------------------------------------

def _check_verts(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None):
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if p.shape != g.shape or p.ndim != 3 or p.shape[-1] != 3:
        raise ValueError(f"pred and gt must both be (T,V,3), got {p.shape} and {g.shape}")
    if region is not None:
        region = np.asarray(region, bool)
        if region.shape != (p.shape[1],):
            raise ValueError(f"region must be ({p.shape[1]},) bool, got {region.shape}")
        p, g = p[:, region], g[:, region]
    return p, g


def aligned_errors_mm(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """(T,) mean face-region vertex distance per frame after a similarity alignment (Umeyama) OF THAT FRAME, mm.
    Frames with a non-finite prediction are NaN."""
    p, g = _check_verts(pred, gt, region)
    out = np.full(p.shape[0], np.nan)
    for t in range(p.shape[0]):
        if np.isfinite(p[t]).all():
            out[t] = np.linalg.norm(similarity_align(p[t], g[t]) - g[t], axis=1).mean() * 1000
    return out


def clip_aligned_errors_mm(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """(T,) mean face-region vertex distance per frame after ONE similarity alignment of the whole clip (all finite
    frames together), mm. Camera-frame vertices of a tracker that keeps one head size and distance stay close to
    their per-frame aligned error; independent fits that trade size for distance per frame do not."""
    p, g = _check_verts(pred, gt, region)
    ok = np.isfinite(p).all((1, 2))
    out = np.full(p.shape[0], np.nan)
    if not ok.any():
        return out
    n = p.shape[1]
    aligned = similarity_align(p[ok].reshape(-1, 3), g[ok].reshape(-1, 3)).reshape(-1, n, 3)
    out[ok] = np.linalg.norm(aligned - g[ok], axis=-1).mean(1) * 1000
    return out


def vertex_error_report(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> dict[str, float]:
    """Medians of the per-frame and whole-clip aligned errors (mm), their ratio (target <= 2), frames used."""
    per = aligned_errors_mm(pred, gt, region)
    clip = clip_aligned_errors_mm(pred, gt, region)
    ok = np.isfinite(per)
    med_per = float(np.median(per[ok])) if ok.any() else float("nan")
    med_clip = float(np.median(clip[ok])) if ok.any() else float("nan")
    return {"per_frame_aligned_mm": med_per, "clip_aligned_mm": med_clip,
            "clip_over_frame": med_clip / med_per if med_per > 0 else float("nan"), "frames": int(ok.sum())}


# -- memory ----------------------------------------------------------------------------------------------------------

def current_rss_mb() -> float | None:
    """Resident set size now (MiB), or None where /proc is not available."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the peak to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``); False where that is not
    possible, in which case peaks measured later include everything before."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """``with PeakRSS() as m: work()`` -> ``m.peak_mb`` (peak RSS during the block), ``m.start_mb`` (RSS at entry)
    and ``m.since_reset`` (False: the peak may be from earlier in the process, measure in a fresh process)."""

    def __enter__(self) -> PeakRSS:
        self.since_reset = reset_peak_rss()
        self.start_mb = current_rss_mb()
        self.peak_mb = float("nan")
        return self

    def __exit__(self, *exc) -> None:
        self.peak_mb = peak_rss_mb()

    def to_dict(self) -> dict:
        return {"peak_rss_mb": self.peak_mb, "start_rss_mb": self.start_mb, "peak_is_since_start": self.since_reset}


def measure_decode(path, **reader_kwargs) -> dict:
    """Decode a video with :func:`flamefit.observe.video.read_video` (``threads=1`` unless given) and report frames,
    seconds, frames/s and the peak RSS during the decode (see :class:`PeakRSS`)."""
    import time

    from flamefit.observe.video import read_video

    reader_kwargs.setdefault("threads", 1)
    n = 0
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        for _ in read_video(path, **reader_kwargs):
            n += 1
        seconds = time.perf_counter() - t0
    return {"frames": n, "seconds": seconds, "frames_per_s": n / seconds if seconds > 0 else float("nan"),
            "threads": reader_kwargs["threads"], **mem.to_dict()}
