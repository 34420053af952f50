"""Long videos on many workers, the tracking side: a time range cut into overlapping segments.

The time range is cut into segments of ``segment_s`` seconds; each segment OWNS the frames with
``own_start_s <= time_s < own_end_s`` (so every frame belongs to exactly one segment) and starts tracking
``warmup_s`` earlier: those warm-up frames are tracked (history for the temporal terms and the warm start) but
never written, so the segment's first owned frame does not start cold and there is no jump at the seam.

The segments run in parallel as run items through :mod:`flamefit.jobs.track` (its ``TrackWorker`` and
``track_parallel``), which fits the identity once and gives every segment ``DIR/identity.npz``.
"""

from __future__ import annotations

import math

from flamefit.errors import ConfigError


def plan_segments(duration_s: float, segment_s: float, warmup_s: float = 1.0, start_s: float | None = None,
                  end_s: float | None = None) -> list[dict]:
    """Segments covering [start_s, end_s) (default: the whole video) with their warm-up starts."""
    if not segment_s > 0 or warmup_s < 0:
        raise ConfigError(f"segments need --segment-s > 0 and a warm-up >= 0, got {segment_s}, {warmup_s}")
    t0 = start_s or 0.0
    t1 = end_s if end_s is not None else duration_s
    n = max(1, math.ceil((t1 - t0) / segment_s - 1e-9))
    out = []
    for k in range(n):
        own0 = t0 + k * segment_s
        own1 = t1 if k == n - 1 else t0 + (k + 1) * segment_s
        out.append({"index": k, "start_s": max(t0, own0 - warmup_s) if k else start_s, "own_start_s": own0 if k
                    else None, "own_end_s": own1 if k < n - 1 else end_s})
    return out
