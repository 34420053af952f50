"""Video tracking: per-frame FLAME through a video, streaming, with a shared identity and temporal terms.

    from flamefit.track import TrackConfig, track_video, MediaPipeFrames
    track_video("clip.mp4", "out/", fitter, MediaPipeFrames(), TrackConfig(mode="landmarks"))

:mod:`flamefit.track.tracker` (the streaming windowed tracker, identity fit; its windows are solved by
:mod:`flamefit.fit`'s one solver with :class:`flamefit.fit.terms.TemporalTerm`), :mod:`flamefit.track.terms` (the
default temporal weights), :mod:`flamefit.track.outputs` (per-frame files, identity, summary, point cache),
:mod:`flamefit.track.video` (decode -> detect -> track -> write, resumable), :mod:`flamefit.track.segments`
(a video cut into overlapping segments; :mod:`flamefit.jobs.track` runs them in parallel on the run layer).
"""

from flamefit.track.tracker import FrameObs, Identity, TrackConfig, TrackedFrame, Tracker, fit_identity
from flamefit.track.video import GivenLandmarks, MediaPipeFrames, render_overlay, track_video

__all__ = ["FrameObs", "GivenLandmarks", "Identity", "MediaPipeFrames", "TrackConfig", "TrackedFrame", "Tracker",
           "fit_identity", "render_overlay", "track_video"]
