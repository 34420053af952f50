"""Temporal loss terms for video windows (items of the batch = consecutive frames, in time order).

:class:`TemporalTerm` penalises the velocity and acceleration of per-frame fields (head pose, jaw, expression,
eyes, neck, camera translation). It also sees ``history``: the last already-written frames before the window,
frozen, so the frames at the start of a window are smoothed against what came before it and there is no seam at
window boundaries. It couples the items on purpose (``couples_items``): the optimiser then keeps the best iterate
of the whole window rather than of each frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from flamefit.fit.terms import LossTerm

# per-field weights (per frame^2 units of the field: radians, sd, metres) -- see TrackConfig for the defaults
DEFAULT_ACCEL = {"global_pose": 4.0, "neck_pose": 4.0, "jaw_pose": 2.0, "eye_pose": 0.2, "expression": 0.02,
                 "cam_translation": 800.0}
# the camera's depth (z) has the velocity weight of x/y: 100x more (as before) held a head that moves towards or
# away from the camera at one distance (see flamefit.track.smoother.DEFAULT_LAMBDA for the measurements)
DEFAULT_VELOCITY = {"global_pose": 0.1, "neck_pose": 0.1, "jaw_pose": 0.05, "eye_pose": 0.02, "expression": 0.002,
                    "cam_translation": (20.0, 20.0, 20.0)}


@dataclass
class TemporalTerm(LossTerm):
    """``sum_f accel[f] |x[t+1] - 2 x[t] + x[t-1]|^2 + velocity[f] |x[t] - x[t-1]|^2`` over the window (a weight is a
    number, or one per component), with the
    frozen ``history`` rows (field -> (H, D) tensor, oldest first) in front of the window's frames. Each pair's
    and triple's cost is put on its last frame (the sum is what is minimised)."""

    accel: dict = field(default_factory=lambda: dict(DEFAULT_ACCEL))
    velocity: dict = field(default_factory=lambda: dict(DEFAULT_VELOCITY))
    history: dict = field(default_factory=dict)
    couples_items: bool = True

    def value(self, ctx):
        p = ctx.params
        B = p.batch_size
        out = p.shape.new_zeros(B)
        for name in set(self.accel) | set(self.velocity):
            x = getattr(p, name)
            if x is None:
                continue
            x = x.flatten(1)
            h = self.history.get(name)
            H = 0
            if h is not None and len(h):
                h = h.to(x).flatten(1)
                H = h.shape[0]
                x = torch.cat([h, x], 0)
            wv = _dim_weights(self.velocity.get(name, 0.0), x)
            if wv is not None and x.shape[0] >= 2:
                v = ((x[1:] - x[:-1]).pow(2) * wv).sum(-1)  # pair (t-1, t) -> frame t
                out = out + v[max(H - 1, 0):][-B:] if H else out + torch.cat([v.new_zeros(1), v])
            wa = _dim_weights(self.accel.get(name, 0.0), x)
            if wa is not None and x.shape[0] >= 3:
                a = ((x[2:] - 2 * x[1:-1] + x[:-2]).pow(2) * wa).sum(-1)  # triple (t-2, t-1, t) -> frame t
                pad = max(B + 2 - x.shape[0] + 0, 0)  # frames without two predecessors get nothing
                a = torch.cat([a.new_zeros(pad), a]) if pad else a
                out = out + a[-B:]
        return out


def _dim_weights(w, x: torch.Tensor) -> torch.Tensor | None:
    """(D,) weights for the flattened field ``x`` (T,D) from a number or one value per component; None if all 0."""
    t = torch.as_tensor(w, dtype=x.dtype, device=x.device).reshape(-1)
    if not bool((t != 0).any()):
        return None
    return t.expand(x.shape[1]) if t.numel() == 1 else t
