"""Fixtures for the tracker tests: the stand-in model (skip without ../shared) and small synthetic clips."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def track_fitter(standin):
    """A fitter on the stand-in with small settings (the tests check behaviour, not accuracy)."""
    from flamefit.fit import Fitter, load_config

    torch.set_num_threads(1)
    model, lmk, ts = standin
    cfg = load_config(overrides=["n_shape=50", "n_expr=30", "rigid.iters=15", "landmarks.iters=40",
                                 "texture.n_tex=10", "texture.fit_resolution=64", "texture.free_resolution=32"])
    return Fitter(model, texture_space=ts, landmarks68=lmk, config=cfg), model, lmk, ts


@pytest.fixture(scope="session")
def make_clip(track_fitter, tmp_path_factory):
    """make_clip(name, **kw) -> (clip, mp4 path): a rendered synthetic clip with noisy 'detections' (cached)."""
    from flamefit.fit.synthetic_video import make_synthetic_clip

    _, model, lmk, ts = track_fitter
    cache = {}

    def make(name: str, **kw):
        if name not in cache:
            path = tmp_path_factory.mktemp("clips") / f"{name}.mp4"
            args = dict(n_frames=30, fps=25, height=128, width=128, seed=2, landmark_noise_px=1.5)
            args.update(kw)
            clip = make_synthetic_clip(model, landmarks68=lmk, texture_space=ts, video_path=path, **args)
            cache[name] = (clip, path)
        return cache[name]

    return make
