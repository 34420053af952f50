"""Fixtures for the fitter tests: the stand-in model + embeddings + texture (skip without ../shared), and a
fully synthetic setup (sphere-head model from ``flamefit.model.synthetic``, random dense landmarks, planar UVs)
that runs on a fresh clone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamefit.fit.config import load_config


def fast_config(*extra: str):
    """Small iteration counts and a low internal resolution: the tests check behaviour, not accuracy. The short
    photometric stage keeps the step the accuracy bounds here were set with (the default's larger step is tuned for
    its 100 iterations on the stand-in model)."""
    return load_config(overrides=["resolution=128", "rigid.iters=15", "landmarks.iters=40", "appearance.iters=5",
                                  "photometric.iters=25", "photometric.lr=0.05", "offset.iters=8",
                                  "texture_only.iters=10", "n_shape=50", "n_expr=30", "texture.n_tex=20",
                                  "texture.free_resolution=32", "texture.fit_resolution=64", *extra])




@pytest.fixture(scope="session")
def standin_env(shared_assets, tmp_path_factory):
    """Environment variables that point flamefit's model resolution at the stand-in assets."""
    return {
        "FLAMEFIT_FLAME_MODEL": str(shared_assets / "flame_standin" / "standin_flame2023.pkl"),
        "FLAMEFIT_TEXTURE_SPACE": str(shared_assets / "flame_standin" / "standin_texture.npz"),
        "FLAMEFIT_LANDMARKS_STATIC": str(shared_assets / "flame_landmarks" / "flame_static_embedding.pkl"),
        "FLAMEFIT_LANDMARKS_DYNAMIC": str(shared_assets / "flame_landmarks" / "flame_dynamic_embedding.npy"),
    }


@pytest.fixture(scope="session")
def synthetic_setup(synthetic_model_path):
    """(model, dense MeshLandmarks, free TextureSpace with planar UVs) on the small synthetic model."""
    from flamefit.model.flame import FlameModel
    from flamefit.model.flame_file import read_flame_file
    from flamefit.model.landmarks import MeshLandmarks
    from flamefit.model.texture_space import TextureSpace

    data = read_flame_file(synthetic_model_path)
    model = FlameModel(data, n_shape=data.n_shape_total, n_expr=10)
    v = model.v_template.numpy()
    f = model.faces.numpy()
    rng = np.random.default_rng(0)
    centre = v[f].mean(1)
    front = np.nonzero((centre[:, 2] > 0.3 * np.abs(v[:, 2]).max()) & (np.arange(len(f)) < len(f) * 0.9))[0]
    pick = rng.choice(front, size=min(60, len(front)), replace=False)
    bary = rng.dirichlet([2, 2, 2], size=len(pick))
    dense = MeshLandmarks(torch.as_tensor(pick), torch.as_tensor(bary, dtype=torch.float32))
    lo, hi = v.min(0), v.max(0)
    vt = (v[:, :2] - lo[:2]) / (hi[:2] - lo[:2])  # planar UVs (front view)
    ts = TextureSpace.free(32, (0.7, 0.55, 0.45), vt=vt, ft=f)
    return model, dense, ts
