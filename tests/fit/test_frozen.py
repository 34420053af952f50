"""Geometry-frozen stages render once (flamefit.fit.frozen): same loss and gradients as a full render each time."""

import dataclasses

import pytest
import torch

from flamefit.fit import synthetic as S
from flamefit.fit.fitter import Fitter
from flamefit.fit.frozen import FrozenRender
from flamefit.fit.optimize import evaluate, run_stage
from flamefit.fit.stages import StageName
from flamefit.fit.terms import FitContext

from .conftest import fast_config


def _loss_and_grads(fitter, stage, params, batch, cached: bool):
    q = params.detach()
    q.requires_grad_(list(stage.free))
    pixels = FrozenRender(fitter, q, batch.level(stage.resolution)) if cached else None
    total, _ = evaluate(stage, FitContext(fitter, batch, q, stage.resolution, pixels))
    total.sum().backward()
    return total.detach(), {n: getattr(q, n).grad.clone() for n in stage.free}


def _perturbed(fitter, params, batch):
    """Parameters away from any optimum (non-zero gradients everywhere), with an offset map and the light
    initialised as the fitter does."""
    g = torch.Generator().manual_seed(0)
    p = params.detach()
    fitter._with_offset(p)
    fitter.init_light(p, batch)
    p.tex = p.tex + 0.5 * torch.randn(p.tex.shape, generator=g)
    p.light = p.light + 0.05 * torch.randn(p.light.shape, generator=g)
    p.tex_offset = p.tex_offset + 0.05 * torch.randn(p.tex_offset.shape, generator=g)
    return p


def _assert_same(fitter, stage, p, batch):
    l_full, g_full = _loss_and_grads(fitter, stage, p, batch, cached=False)
    l_cache, g_cache = _loss_and_grads(fitter, stage, p, batch, cached=True)
    assert torch.allclose(l_cache, l_full, rtol=1e-5, atol=1e-7), (l_cache, l_full)
    for n in stage.free:
        a, b = g_full[n], g_cache[n]
        assert float(a.abs().max()) > 0, n
        assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max()), (stage.name, n)


@pytest.fixture(scope="module")
def pca_fitter(standin):
    model, lmk, ts = standin
    return Fitter(model, texture_space=ts, landmarks68=lmk, config=fast_config())


@pytest.mark.parametrize("light", ["sh9x3", "sh9"])
def test_cached_stages_have_the_loss_and_gradients_of_a_full_render(standin, pca_fitter, light):
    model, lmk, ts = standin
    f = pca_fitter if light == "sh9x3" else Fitter(model, texture_space=ts, landmarks68=lmk,
                                                   config=fast_config(f"texture.light={light}"))
    cases = [S.make_case(pca_fitter, seed=s, height=150, width=140) for s in (41, 42)]
    batch = f.prepare([c.target for c in cases])  # two items: each one's pixels are its own block
    p = _perturbed(f, f.initial_params(batch), batch)
    stages = {s.name: s for s in f.stages(batch=batch)}
    for name in (StageName.APPEARANCE, StageName.OFFSET):
        assert stages[name].frozen_render
        _assert_same(f, stages[name], p, batch)
    assert not stages[StageName.PHOTOMETRIC].frozen_render  # geometry free: renders every iteration


def test_free_albedo_and_fit_texture_stage_on_the_synthetic_model(synthetic_setup):
    """Fresh-clone setup: free albedo (the offset is the albedo) and fit-texture's `texture` stage."""
    from flamefit.fit.targets import FitTarget

    model, dense, ts = synthetic_setup
    f = Fitter(model, texture_space=ts, dense_landmarks=dense, config=fast_config())
    with torch.no_grad():
        p = f.initial_params(f.prepare(FitTarget(image=torch.zeros(96, 96, 3).numpy(),
                                                 lmks_dense=torch.rand(dense.face_idx.shape[0], 2).numpy() * 40
                                                 + 28)))
        p.global_pose[:] = 0.0
        p.cam_translation[:] = torch.tensor([0.0, 0.0, 0.6])
        verts, _ = f.vertices(p)
        img = f.render_image(p, 96, 96)["rgb"][0].clamp(0, 1).numpy()
        from flamefit.render.camera import project_points
        lm = project_points(f.to_camera(p, f.dense.project(verts, f.faces)), p.intrinsics())[0].numpy()
    batch = f.prepare(FitTarget(image=img * 0.8 + 0.1, lmks_dense=lm))
    q = _perturbed(f, f.initial_params(batch), batch)
    stages = {s.name: s for s in f.stages(("appearance", "texture"), batch=batch)}
    assert "tex_offset" in stages[StageName.APPEARANCE].free
    for stage in stages.values():
        assert stage.frozen_render
        _assert_same(f, stage, q, batch)


def test_a_cached_stage_runs_as_the_uncached_one(pca_fitter):
    """The whole offset stage with and without the cache: the same loss trajectory (to float rounding)."""
    f = pca_fitter
    case = S.make_case(f, seed=43, height=150, width=140)
    batch = f.prepare(case.target)
    p = _perturbed(f, f.initial_params(batch), batch)
    stage = next(s for s in f.stages(batch=batch) if s.name is StageName.OFFSET)
    logs = [run_stage(f, dataclasses.replace(stage, frozen_render=c), p, batch)[1] for c in (False, True)]
    assert logs[1].loss_start == pytest.approx(logs[0].loss_start, rel=1e-5)
    assert logs[1].loss_end == pytest.approx(logs[0].loss_end, rel=1e-3)
    assert logs[1].loss_end < 0.9 * logs[1].loss_start


def test_offset_regularizers_in_one_node_match_the_loss_functions():
    from flamefit.fit import losses as L

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 7, 3, generator=g, dtype=torch.float64)
    w = torch.tensor([0.3, 1.7, 0.9], dtype=torch.float64)
    p = type("P", (), {"tex_offset": None})()
    grads = []
    for fused in (True, False):
        p.tex_offset = x.clone().requires_grad_(True)
        ctx = FitContext(None, None, p)
        if fused:
            vals = ctx.offset_regularizers
        else:
            o = p.tex_offset
            vals = torch.stack([L.map_l2(o), L.map_smoothness(o), L.map_symmetry(o)], 1)
        (vals * w).sum().backward()
        grads.append((vals.detach(), p.tex_offset.grad))
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-12)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-14)
