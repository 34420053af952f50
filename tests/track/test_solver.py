"""The tracker's windows go through fit's one solver: the coupled Levenberg-Marquardt mode solves a window's
least-squares problem exactly, the temporal term's residuals are its loss, the identity folded into the landmark
model changes nothing at the landmarks, and the landmark-mode cold start needs no single-image initialisation."""

from __future__ import annotations

import torch

from flamefit.fit.lm import levenberg_marquardt_coupled
from flamefit.fit.params import FlameParams
from flamefit.fit.terms import FitContext, TemporalTerm
from flamefit.track import TrackConfig
from flamefit.track.tracker import FrameObs, Identity, Tracker


def _tracker_and_batch(track_fitter, make_clip, n=3):
    fitter = track_fitter[0]
    clip, _ = make_clip("plain")
    ident = Identity(shape=clip.params.shape[0, :fitter.n_shape].numpy(),
                     tex=clip.params.tex[0, :fitter.texture_space.n_components].numpy(), focal_px=float(clip.K[0, 0]),
                     image_size=(clip.height, clip.width))
    tr = Tracker(fitter, ident, TrackConfig(), sink=lambda frames: None)
    frames = [FrameObs(i, i / 25, None, lmks_68=clip.lmks_68_noisy[i]) for i in range(n)]
    batch = tr._batch(frames)
    return tr, frames, batch, clip


def test_coupled_lm_solves_a_linear_window_exactly():
    """Per-item affine residuals plus residuals coupling neighbouring items: the solution is the joint least-squares
    one (as lstsq of the stacked system gives), not the items' own."""
    g = torch.Generator().manual_seed(0)
    B, P, M = 4, 3, 5
    A = torch.randn(B, M, P, generator=g, dtype=torch.float64)
    b = torch.randn(B, M, generator=g, dtype=torch.float64)
    w = 3.0

    def residuals(x, items, ref):
        return (A[items] @ x.unsqueeze(-1)).squeeze(-1) - b[items]

    def coupled(x):  # velocity of each item from its predecessor (none for the first)
        d = torch.cat([torch.zeros_like(x[:1]), x[1:] - x[:-1]])
        return w * d

    res = levenberg_marquardt_coupled(residuals, coupled, torch.zeros(B, P, dtype=torch.float64), 50,
                                      torch.full((P,), 0.1, dtype=torch.float64), torch.zeros(P, dtype=torch.bool),
                                      rel_tol=1e-14)
    big = torch.zeros(B * M + B * P, B * P, dtype=torch.float64)
    rhs = torch.zeros(B * M + B * P, dtype=torch.float64)
    for i in range(B):
        big[i * M:(i + 1) * M, i * P:(i + 1) * P] = A[i]
        rhs[i * M:(i + 1) * M] = b[i]
    for i in range(1, B):
        r0 = B * M + i * P
        big[r0:r0 + P, i * P:(i + 1) * P] = w * torch.eye(P, dtype=torch.float64)
        big[r0:r0 + P, (i - 1) * P:i * P] = -w * torch.eye(P, dtype=torch.float64)
    x_ls = torch.linalg.lstsq(big, rhs).solution.view(B, P)
    assert torch.allclose(res.x, x_ls, atol=1e-6)
    x_alone = torch.linalg.lstsq(A, b.unsqueeze(-1)).solution.squeeze(-1)
    assert (res.x - x_alone).abs().max() > 1e-2  # the coupling matters here
    assert float(res.loss_end.sum()) < float(res.loss_start.sum())


def test_temporal_residuals_are_its_loss():
    g = torch.Generator().manual_seed(1)
    p = FlameParams.zeros(5, 4, 3)
    p.global_pose = torch.randn(5, 3, generator=g)
    p.cam_translation = torch.randn(5, 3, generator=g)
    past = {"global_pose": torch.randn(1, 3, generator=g), "cam_translation": torch.randn(2, 3, generator=g)}
    for history in ({}, past):
        term = TemporalTerm("t", 0.7, {"global_pose": 4.0, "cam_translation": 800.0},
                            {"global_pose": 0.1, "cam_translation": (20.0, 20.0, 5.0)}, history)
        ctx = FitContext(None, None, p)
        assert torch.allclose(0.5 * term.residuals(ctx).pow(2).sum(-1), term(ctx), rtol=1e-5)
    assert float(term(ctx)[0]) > 0  # the first frame is tied to the history


def test_identity_folded_into_the_landmark_model_is_exact(track_fitter, make_clip):
    tr, frames, batch, clip = _tracker_and_batch(track_fitter, make_clip)
    p = tr._initial(frames, batch, cold=True)
    p.expression = 0.3 * torch.randn(p.expression.shape, generator=torch.Generator().manual_seed(0))
    p.jaw_pose[:, 0] = 0.1
    view = tr._view(batch)
    f = tr.fitter
    verts, faces = view.landmark_vertices(p)
    pts_view = view.model_points(p, verts, faces=faces)
    pts_full = f.model_points(p, f.vertices(p)[0])
    assert torch.allclose(pts_view["68"], pts_full["68"], atol=1e-5)
    q = p._map(lambda t: t)
    q.shape = torch.zeros_like(p.shape)  # the view ignores params.shape: the identity is in its model
    verts, faces = view.landmark_vertices(q)
    assert torch.allclose(view.model_points(q, verts, faces=faces)["68"], pts_view["68"])


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
