"""The tracker's default temporal weights for :class:`flamefit.fit.terms.TemporalTerm` (velocity and acceleration
of the per-frame fields: head pose, jaw, expression, eyes, neck, camera translation; per frame^2 units of the field:
radians, sd, metres). A weight is a number for all of a field's components or one per component."""

from __future__ import annotations

DEFAULT_ACCEL = {"global_pose": 4.0, "neck_pose": 4.0, "jaw_pose": 2.0, "eye_pose": 0.2, "expression": 0.02,
                 "cam_translation": 800.0}
# the camera's depth (z) has the velocity weight of x/y: 100x more (as before) held a head that moves towards or
# away from the camera at one distance (see flamefit.track.smoother.DEFAULT_LAMBDA for the measurements)
DEFAULT_VELOCITY = {"global_pose": 0.1, "neck_pose": 0.1, "jaw_pose": 0.05, "eye_pose": 0.02, "expression": 0.002,
                    "cam_translation": (20.0, 20.0, 20.0)}
