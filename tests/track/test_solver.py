"""The window solver's Jacobian: expression columns from the exact vertex derivative match forward differences
through the model, and the landmark-mode cold start needs no single-image initialisation."""

from __future__ import annotations

import torch

from flamefit.track import TrackConfig
from flamefit.track.solver import WindowProblem, _layout, _pack
from flamefit.track.tracker import FrameObs, Identity, Tracker


def _tracker_and_batch(track_fitter, make_clip, n=3):
    fitter = track_fitter[0]
    clip, _ = make_clip("plain")
    ident = Identity(shape=clip.params.shape[0, :fitter.n_shape].numpy(),
                     tex=clip.params.tex[0, :fitter.texture_space.n_components].numpy(), focal_px=float(clip.K[0, 0]),
                     image_size=(clip.height, clip.width))
    tr = Tracker(fitter, ident, TrackConfig(), sink=lambda frames: None)
    frames = [FrameObs(i, i / 25, None, lmks_68=clip.lmks_68_noisy[i]) for i in range(n)]
    batch = tr._landmark_batch(frames)
    return tr, frames, batch, clip


def test_exact_expression_columns_match_forward_differences(track_fitter, make_clip):
    tr, frames, batch, clip = _tracker_and_batch(track_fitter, make_clip)
    p = tr._initial(frames, batch, cold=True)
    p.expression = 0.3 * torch.randn(p.expression.shape, generator=torch.Generator().manual_seed(0))
    p.jaw_pose[:, 0] = 0.1
    prob = WindowProblem(tr.fitter, batch, model=tr._identity_model(batch), dense_idx=tr._dense_idx(batch))
    layout = _layout(p)
    x = _pack(p, layout)
    r_fast, J_fast, _ = prob.jacobian(p, x, layout)
    prob.exact_expression = False
    r_fd, J_fd, _ = prob.jacobian(p, x, layout)
    assert torch.allclose(r_fast, r_fd)
    K = layout[-1][2]
    scale = J_fd.abs().max()
    assert (J_fast[..., :-K] - J_fd[..., :-K]).abs().max() == 0  # the other columns are unchanged
    # forward differences carry O(eps) curvature error; the exact columns agree to that
    assert (J_fast[..., -K:] - J_fd[..., -K:]).abs().max() < 1e-3 * scale


def test_cold_start_is_pnp_of_the_identity(track_fitter, make_clip, monkeypatch):
    tr, frames, batch, clip = _tracker_and_batch(track_fitter, make_clip)

    def fail(*a, **k):
        raise AssertionError("the tracker's landmark cold start must not run the single-image initialisation")

    monkeypatch.setattr(type(tr.fitter), "initial_params", fail)
    p = tr._initial(frames, batch, cold=True)
    # PnP puts the head where the truth is
    z_true = clip.params.cam_translation[:3, 2]
    from flamefit.fit.crop import params_to_original
    from flamefit.track.tracker import _row

    z = torch.stack([params_to_original(_row(p, b), batch.crops[b]).cam_translation[0, 2] for b in range(3)])
    assert torch.allclose(z, z_true, rtol=0.15)  # the truncated identity (50 of its components) and 1.5 px noise
