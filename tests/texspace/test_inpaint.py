"""Inpainting network: strokes, masking, determinism, checkpoints/resume, that it learns, inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamefit.errors import ModelFileError
from flamefit.texspace.inpaint import (
    InpaintConfig,
    InpaintNet,
    complete,
    inpaint_maps,
    load_inpainter,
    train_inpainter,
)
from flamefit.texspace.strokes import free_form_strokes, training_holes


@pytest.fixture(autouse=True)
def _one_thread():
    # small convolutions on a loaded 2-core machine run far faster on one thread than on several
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_strokes_are_random_free_form_and_reproducible():
    a = free_form_strokes(64, 64, np.random.default_rng(3))
    b = free_form_strokes(64, 64, np.random.default_rng(3))
    c = free_form_strokes(64, 64, np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    fracs = [free_form_strokes(64, 64, np.random.default_rng(s)).mean() for s in range(20)]
    assert 0.0 < min(fracs) and max(fracs) < 0.7 and np.std(fracs) > 0.01  # varied sizes, never everything


def test_training_holes_stay_inside_the_visible_region():
    vis = torch.zeros(3, 48, 48, dtype=torch.bool)
    vis[:, 8:40, 4:30] = True
    holes = training_holes(vis, torch.Generator().manual_seed(0))
    assert holes.shape == vis.shape and not (holes & ~vis).any()
    assert all(holes[i].sum() >= 0.02 * vis[i].sum() for i in range(3))
    again = training_holes(vis, torch.Generator().manual_seed(0))
    assert torch.equal(holes, again)


def test_complete_keeps_known_texels():
    net = InpaintNet(4)
    maps = torch.rand(2, 16, 16, 3)
    known = torch.rand(2, 16, 16) > 0.5
    out = complete(net, maps, known)
    assert out.shape == maps.shape
    assert torch.equal(out[known], maps[known])
    assert (out >= 0).all() and (out <= 1).all()
    with pytest.raises(ValueError, match="multiple of 4"):
        complete(net, torch.rand(1, 10, 12, 3), torch.ones(1, 10, 12, dtype=torch.bool))


def _data(n=6, size=16):
    g = torch.Generator().manual_seed(5)
    colour = torch.rand(n, 1, 1, 3, generator=g)
    ramp = torch.linspace(0, 0.3, size).view(1, 1, size, 1)
    maps = (colour * 0.7 + ramp).clamp(0, 1).expand(n, size, size, 3).contiguous()
    vis = torch.ones(n, size, size, dtype=torch.bool)
    vis[:, :, : size // 4] = False
    return maps, vis


def _cfg(**kw):
    base = dict(steps=6, batch_size=2, base_channels=4, seed=11, crop=None, checkpoint_every=3, max_width_frac=0.2)
    base.update(kw)
    return InpaintConfig(**base)


def test_training_is_deterministic_and_resume_matches(tmp_path):
    maps, vis = _data()
    a = train_inpainter(maps, vis, _cfg())
    b = train_inpainter(maps, vis, _cfg())
    assert a.history == b.history
    for pa, pb in zip(a.net.parameters(), b.net.parameters(), strict=True):
        assert torch.equal(pa, pb)
    ckpt = tmp_path / "inpaint.pt"
    first = train_inpainter(maps, vis, _cfg(steps=3), checkpoint=ckpt)
    assert first.step == 3 and ckpt.is_file()
    assert not list(tmp_path.glob(".*tmp*"))  # atomic save leaves no temp files
    resumed = train_inpainter(maps, vis, _cfg(steps=6), checkpoint=ckpt)
    assert resumed.step == 6 and len(resumed.history) == 6
    assert np.allclose(resumed.history, a.history, rtol=1e-5, atol=1e-7)
    for pa, pb in zip(a.net.parameters(), resumed.net.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)
    net = load_inpainter(ckpt)
    for pa, pb in zip(net.parameters(), resumed.net.parameters(), strict=True):
        assert torch.equal(pa, pb)
    # a finished checkpoint is not trained further
    again = train_inpainter(maps, vis, _cfg(steps=6), checkpoint=ckpt)
    assert again.step == 6 and len(again.history) == 6


def test_training_crops_and_learns():
    maps, vis = _data(n=8, size=32)
    res = train_inpainter(maps, vis, _cfg(steps=80, batch_size=4, base_channels=6, lr=5e-3, crop=16))
    h = np.array(res.history)
    assert h[-15:].mean() < 0.7 * h[:15].mean()
    known = vis.clone()
    known[:, 10:20, 12:24] = False
    filled = inpaint_maps(res.net, maps * known.unsqueeze(-1), known)
    hole = vis & ~known
    err_net = (filled - maps).abs()[hole].mean()
    untrained = train_inpainter(maps, vis, _cfg(steps=0, base_channels=6)).net
    err_start = (inpaint_maps(untrained, maps * known.unsqueeze(-1), known) - maps).abs()[hole].mean()
    err_zero = maps[hole].abs().mean()
    assert err_net < 0.9 * err_start and err_net < 0.1 * err_zero  # deterministic (seeded)
    assert torch.equal(filled[known], (maps * known.unsqueeze(-1))[known])


def test_bad_checkpoints(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_inpainter(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="cannot read"):
        load_inpainter(bad)
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, other)
    with pytest.raises(ModelFileError, match="not a flamefit inpainting checkpoint"):
        load_inpainter(other)
