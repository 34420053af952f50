"""The batched Levenberg-Marquardt core and the landmark stages solved with it (least-squares forms of the terms)."""

import dataclasses

import pytest
import torch

from flamefit.errors import ConfigError
from flamefit.fit import synthetic as S
from flamefit.fit import terms as T
from flamefit.fit.config import load_config
from flamefit.fit.fitter import Fitter
from flamefit.fit.lm import levenberg_marquardt
from flamefit.fit.optimize import Sharing, evaluate, lm_applies, run_stage
from flamefit.fit.stages import StageName

from .conftest import fast_config


def _curves(n_items: int):
    """Items: fit y = a * exp(b t) + c to noiseless samples (nonlinear in b); truth per item."""
    t = torch.linspace(0, 1, 25, dtype=torch.float64)
    truth = torch.tensor([[2.0, -1.5, 0.3], [0.5, 1.2, -0.2], [-1.0, 0.4, 1.0]], dtype=torch.float64)[:n_items]
    y = truth[:, :1] * torch.exp(truth[:, 1:2] * t) + truth[:, 2:]

    def residuals(x, items, ref):
        return x[:, :1] * torch.exp(x[:, 1:2] * t) + x[:, 2:] - y[items]
    return residuals, truth


def test_lm_solves_a_nonlinear_least_squares_problem_per_item():
    residuals, truth = _curves(3)
    x0 = torch.zeros(3, 3, dtype=torch.float64)
    steps = torch.full((3,), 1e-6, dtype=torch.float64)
    res = levenberg_marquardt(residuals, x0, 100, steps, torch.tensor([False, True, False]), rel_tol=1e-12)
    assert torch.allclose(res.x, truth, atol=1e-5), res.x
    assert bool((res.loss_end < 1e-12).all()) and bool((res.loss_start > 0.1).all())
    # items are independent: each alone reaches the same solution
    for b in range(3):
        def one(x, items, ref, b=b):
            return residuals(x, torch.full_like(items, b), ref)
        r1 = levenberg_marquardt(one, x0[b:b + 1], 100, steps, torch.tensor([False, True, False]), rel_tol=1e-12)
        assert torch.allclose(r1.x[0], res.x[b], atol=1e-8)


@pytest.fixture(scope="module")
def lm_setup(standin):
    model, lmk, ts = standin
    f = Fitter(model, texture_space=ts, landmarks68=lmk, config=fast_config())
    case = S.make_case(f, seed=31, height=170, width=160)
    batch = f.prepare(case.target)
    return f, batch, f.initial_params(batch)


def test_least_squares_forms_equal_the_terms(lm_setup):
    """0.5 |r|^2 of every term's residuals is the term's value, for points in the quadratic and the linear part of
    the Huber loss (the initial fit is off by several pixels on some points)."""
    f, batch, p0 = lm_setup
    p = p0.detach()
    p.expression = p.expression + 0.5  # move the points: some beyond the Huber threshold
    p.jaw_pose = p.jaw_pose + 0.1
    stage = next(s for s in f.stages(batch=batch) if s.name is StageName.LANDMARKS)
    ctx = T.FitContext(f, batch, p)
    d = (ctx.lmk68_px - batch.lmk68).norm(dim=-1) / batch.resolution
    assert bool((d > 0.02).any()) and bool((d < 0.02).any())
    for term in stage.terms:
        r = term.residuals(ctx)
        assert r is not None and r.shape[0] == 1, term.name
        assert float(0.5 * r.pow(2).sum()) == pytest.approx(float(term(ctx)), rel=1e-5, abs=1e-12), term.name


def test_lm_landmark_stage_beats_adam_from_the_same_start(lm_setup):
    f, batch, p0 = lm_setup
    stages = {s.name: s for s in f.stages(batch=batch)}
    assert stages[StageName.LANDMARKS].solver == "lm"  # the default
    out = {}
    for solver in ("adam", "lm"):
        p = p0
        for name in (StageName.RIGID, StageName.LANDMARKS):
            p, log = run_stage(f, dataclasses.replace(stages[name], solver=solver), p, batch)
        out[solver] = (p, log)
    p_lm, log_lm = out["lm"]
    assert log_lm.iters_run <= stages[StageName.LANDMARKS].lm_iters and log_lm.loss_end < log_lm.loss_start
    assert log_lm.loss_end <= out["adam"][1].loss_end * 1.001
    # the log reports the stage's own objective at the kept parameters
    total, _ = evaluate(stages[StageName.LANDMARKS], T.FitContext(f, batch, p_lm))
    assert float(total.sum()) == pytest.approx(log_lm.loss_end, rel=1e-5)


def test_lm_falls_back_to_adam_where_it_does_not_apply(lm_setup):
    f, batch, p0 = lm_setup
    stage = next(s for s in f.stages(batch=batch) if s.name is StageName.LANDMARKS)
    assert lm_applies(stage, p0, Sharing())
    assert not lm_applies(stage, p0, Sharing.video())  # a shared identity couples the items

    @dataclasses.dataclass
    class NoLeastSquares(T.LossTerm):
        def value(self, ctx):
            return ctx.params.jaw_pose.abs().sum(-1)

    odd = dataclasses.replace(stage, terms=stage.terms + (NoLeastSquares("l1", 1.0),), iters=3)
    assert not lm_applies(odd, p0, Sharing())
    _, log = run_stage(f, odd, p0, batch)
    assert log.iters_run == 3 and "l1" in log.terms  # Adam's iterations
    photo = next(s for s in f.stages(batch=batch) if s.name is StageName.PHOTOMETRIC)
    assert not lm_applies(dataclasses.replace(photo, solver="lm"), p0, Sharing())


def test_solver_config_is_validated():
    assert load_config().landmarks.solver == "lm" and load_config().rigid.solver == "lm"
    assert load_config(overrides=["landmarks.solver=adam"]).landmarks.solver == "adam"
    with pytest.raises(ConfigError, match="landmarks.solver"):
        load_config(overrides=["landmarks.solver=newton"])
    with pytest.raises(ConfigError, match="photometric.solver"):
        load_config(overrides=["photometric.solver=lm"])
    with pytest.raises(ConfigError, match="lm_rel_tol"):
        load_config(overrides=["landmarks.lm_rel_tol=-1"])


def test_lm_stages_in_a_batch_equal_single_fits_exactly(standin):
    """Every residual call holds one item's rows, and no step size depends on the batch: the landmark stages of
    B items solved together are bitwise those of each item alone (focal length free as well)."""
    model, lmk, ts = standin
    f = Fitter(model, texture_space=ts, landmarks68=lmk, config=fast_config("camera.optimize_focal=true"))
    targets = [S.make_case(f, seed=s, height=150, width=140).target for s in (51, 52)]
    both = f.fit_batch(targets, stages=("rigid", "landmarks"))
    for t, raw_b in zip(targets, both, strict=True):
        raw_1 = f.fit(t, stages=("rigid", "landmarks"))
        for name in ("shape", "expression", "global_pose", "neck_pose", "cam_translation", "focal_px"):
            assert torch.equal(getattr(raw_b.params, name), getattr(raw_1.params, name)), name
        assert [s.iters_run for s in raw_b.stages] == [s.iters_run for s in raw_1.stages]


def test_jaw_prior_weighs_opening_sideways_and_closing_apart(lm_setup):
    """The jaw prior: the opening under its weight, the sideways turn and roll under ``lateral``, a jaw closed past
    closed under ``closed``; its least-squares form is the same loss and ``value`` the loss over the weight."""
    f, batch, p0 = lm_setup
    p = p0.detach()
    term = T.JawPriorTerm("jaw_prior", 1e-3, lateral=1.0, closed=10.0)
    for jaw, want in (([0.2, 0.0, 0.0], 1e-3 * 0.04), ([0.2, 0.05, -0.02], 1e-3 * 0.04 + 0.0025 + 0.0004),
                      ([-0.1, 0.0, 0.0], 1e-3 * 0.01 + 10 * 0.01)):
        p.jaw_pose = torch.tensor([jaw], dtype=p.jaw_pose.dtype)
        ctx = T.FitContext(f, batch, p)
        assert float(term(ctx)) == pytest.approx(want, rel=1e-5)
        assert float(0.5 * term.residuals(ctx).pow(2).sum()) == pytest.approx(want, rel=1e-5)
        assert float(term.value(ctx)) == pytest.approx(want / 1e-3, rel=1e-5)
    # the fit config's weights reach the stages' jaw prior
    f2 = Fitter(f.model, texture_space=f.texture_space, landmarks68=f.landmarks68,
                config=fast_config("weights.jaw_lateral_prior=0.5", "weights.jaw_closed=2"))
    stage = next(s for s in f2.stages(batch=batch) if s.name is StageName.LANDMARKS)
    jaw = next(t for t in stage.terms if t.name == "jaw_prior")
    assert isinstance(jaw, T.JawPriorTerm) and (jaw.lateral, jaw.closed) == (0.5, 2.0)
