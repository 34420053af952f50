"""Stages as data, loss terms as objects, sharing across a batch (stand-in model; skipped without ../shared)."""

import dataclasses

import pytest
import torch

from flamefit.errors import ConfigError
from flamefit.fit import synthetic as S
from flamefit.fit import terms as T
from flamefit.fit.config import FitConfig
from flamefit.fit.fitter import Fitter
from flamefit.fit.optimize import Sharing, run_stage
from flamefit.fit.stages import DEFAULT_ORDER, StageName, build_stages, parse_stage_names

from .conftest import fast_config


def test_stages_are_built_from_the_config_in_one_place():
    cfg = FitConfig()
    stages = build_stages(cfg, has68=True, has_dense=False, n_tex=10, free_albedo=False)
    # the coarse photometric stage is off by default (0 iterations): left out
    assert [s.name for s in stages] == [n for n in DEFAULT_ORDER if n is not StageName.PHOTOMETRIC_COARSE]
    by = {s.name: s for s in stages}
    assert by[StageName.RIGID].free == ("global_pose", "cam_translation")
    assert "shape" in by[StageName.LANDMARKS].free and "tex" not in by[StageName.LANDMARKS].free
    assert "shape" not in by[StageName.APPEARANCE].free and "tex" in by[StageName.APPEARANCE].free
    assert by[StageName.OFFSET].free == ("light", "tex_offset", "tex")
    assert not by[StageName.LANDMARKS].photometric and by[StageName.PHOTOMETRIC].resolution == cfg.resolution
    names = {t.name for t in by[StageName.PHOTOMETRIC].terms}
    assert {"lmk68", "photo", "shape_prior", "eye_closure"} <= names and "lmk_dense" not in names
    assert by[StageName.LANDMARKS].lr_scale["shape"] == cfg.optim.lr_scale.shape
    # config values reach the stages: iterations, schedule, early stopping, zero iterations drop a stage
    cfg2 = dataclasses.replace(cfg, rigid=dataclasses.replace(cfg.rigid, iters=0),
                               photometric=dataclasses.replace(cfg.photometric, resolution=96,
                                                               early_stop_patience=7),
                               photometric_coarse=dataclasses.replace(cfg.photometric_coarse, iters=5))
    st2 = {s.name: s for s in build_stages(cfg2, has68=True, has_dense=True, n_tex=0, free_albedo=True)}
    assert StageName.RIGID not in st2 and st2[StageName.PHOTOMETRIC].resolution == 96
    assert st2[StageName.PHOTOMETRIC_COARSE].resolution == cfg.photometric_coarse.resolution
    assert st2[StageName.PHOTOMETRIC].early_stop_patience == 7
    assert "tex_offset" in st2[StageName.PHOTOMETRIC].free and "tex" not in st2[StageName.PHOTOMETRIC].free
    assert "lmk_dense" in {t.name for t in st2[StageName.LANDMARKS].terms}
    s = st2[StageName.LANDMARKS]
    assert s.lr_factor(0) == 1.0 and s.lr_factor(s.iters - 1) == pytest.approx(cfg.optim.lr_final_fraction)


def test_unknown_stage_names_are_errors():
    assert parse_stage_names(["rigid", "texture"]) == (StageName.RIGID, StageName.TEXTURE)
    with pytest.raises(ConfigError, match="unknown stage"):
        parse_stage_names(["rigid", "photometric2"])


@pytest.fixture(scope="module")
def lm_fitter(standin):
    model, lmk, ts = standin
    return Fitter(model, texture_space=ts, landmarks68=lmk, config=fast_config())


def test_lr_scale_from_the_config_is_used(standin, lm_fitter):
    """optim.lr_scale.shape=0 freezes the identity: the landmark stage leaves shape at its initial value."""
    model, lmk, ts = standin
    case = S.make_case(lm_fitter, seed=5, height=160, width=150)
    f = Fitter(model, texture_space=ts, landmarks68=lmk, config=fast_config("optim.lr_scale.shape=0"))
    batch = f.prepare(case.target)
    p0 = f.initial_params(batch)
    stage = next(s for s in f.stages(batch=batch) if s.name is StageName.LANDMARKS)
    p1, log = run_stage(f, stage, p0, batch)
    assert torch.equal(p1.shape, p0.shape)
    assert not torch.equal(p1.expression, p0.expression) and log.loss_end < log.loss_start


def test_a_new_term_is_one_small_class(lm_fitter):
    """A custom term plugs into a stage without touching the loop: a strong pull of expression 0 to 1.5 wins."""

    @dataclasses.dataclass
    class ExprTarget(T.LossTerm):
        def value(self, ctx):
            return (ctx.params.expression[:, 0] - 1.5).pow(2)

    case = S.make_case(lm_fitter, seed=6, height=160, width=150)
    batch = lm_fitter.prepare(case.target)
    p0 = lm_fitter.initial_params(batch)
    stage = next(s for s in lm_fitter.stages(batch=batch) if s.name is StageName.LANDMARKS)
    stage = dataclasses.replace(stage, terms=stage.terms + (ExprTarget("expr_target", 10.0),), iters=200)
    p1, log = run_stage(lm_fitter, stage, p0, batch)
    assert abs(float(p1.expression[0, 0]) - 1.5) < 0.15 and "expr_target" in log.terms


def test_shared_identity_across_a_batch(lm_fitter):
    """Sharing.video(): one shape for all frames (per-frame pose/expression), temporal smoothness couples frames."""
    cases = [S.make_case(lm_fitter, seed=s, height=160, width=150) for s in (7, 8)]
    raws = lm_fitter.fit_batch([c.target for c in cases], stages=("rigid", "landmarks"), sharing=Sharing.video())
    assert torch.equal(raws[0].params.shape, raws[1].params.shape)
    assert not torch.equal(raws[0].params.expression, raws[1].params.expression)
    p = raws[0].params
    both = p._map(lambda t: torch.cat([t, t + 0.1]))
    ctx = T.FitContext(lm_fitter, None, both)
    smooth = T.TemporalTerm("smooth", 1.0, {}, {"jaw_pose": 1.0})(ctx)
    assert smooth.shape == (2,) and float(smooth.sum()) == pytest.approx(3 * 0.01, rel=1e-4)


def test_coarse_photometric_stage_renders_at_its_own_resolution(standin, lm_fitter):
    """A photometric stage at a lower resolution uses the image resampled to it and intrinsics scaled to it: the
    loss it reaches is close to the same parameters' loss at the full resolution."""
    from flamefit.fit.optimize import evaluate

    model, lmk, ts = standin
    f = Fitter(model, texture_space=ts, landmarks68=lmk,
               config=fast_config("photometric_coarse.iters=6", "photometric_coarse.resolution=64"))
    case = S.make_case(lm_fitter, seed=9, height=160, width=150)
    raw = f.fit(case.target, stages=("rigid", "landmarks", "photometric_coarse"))
    log = raw.stages[-1]
    assert log.name == "photometric_coarse" and log.loss_end < log.loss_start
    batch = f.prepare(case.target)
    coarse = next(s for s in f.stages(batch=batch) if s.name is StageName.PHOTOMETRIC_COARSE)
    fine = next(s for s in f.stages(batch=batch) if s.name is StageName.PHOTOMETRIC)
    assert batch.level(64).image.shape == (1, 64, 64, 3) and coarse.resolution == 64
    with torch.no_grad():
        lc = float(evaluate(coarse, T.FitContext(f, batch, raw.params, 64))[1]["photo"].sum())
        lf = float(evaluate(fine, T.FitContext(f, batch, raw.params, fine.resolution))[1]["photo"].sum())
    assert abs(lc - lf) < 0.25 * lf, (lc, lf)


def test_a_bad_config_built_in_code_fails_in_the_constructor(synthetic_setup):
    model, dense, ts = synthetic_setup
    cfg = FitConfig()
    bad = dataclasses.replace(cfg, photometric=dataclasses.replace(cfg.photometric, lr=float("nan")))
    with pytest.raises(ConfigError, match="photometric.lr"):
        Fitter(model, texture_space=ts, dense_landmarks=dense, config=bad)


def test_fit_images_fits_a_batch_and_returns_one_result_each(standin, lm_fitter):
    from flamefit.fit.api import fit_images

    model, lmk, ts = standin
    f = Fitter(model, texture_space=ts, landmarks68=lmk,
               config=fast_config("landmarks.iters=5", "appearance.iters=2", "photometric.iters=2", "offset.iters=2"))
    targets = [S.make_case(lm_fitter, seed=s, height=120, width=110).target for s in (21, 22)]
    results = fit_images(targets, f)
    assert [r.name for r in results] == ["synthetic-21", "synthetic-22"]
    assert all(r.render.shape == (120, 110, 3) and r.lmks_68_fit.shape == (68, 2) for r in results)
    assert not (results[0].shape == results[1].shape).all()
