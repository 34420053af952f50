"""Work-folder files and the whole-set stages (complete -> PCA) on synthetic maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamefit.errors import InputImageError, ModelFileError
from flamefit.model.texture_space import load_texture_space
from flamefit.texspace.fills import fill_mirror_then_opencv
from flamefit.texspace.store import build_space, complete_maps, load_maps, save_unwrapped
from flamefit.texspace.synthetic import make_synthetic_space, reconstruction_rms


def layout(n=5):
    s = np.linspace(0.05, 0.95, n)
    vt = np.array([[u, v] for v in s for u in s])
    ft = np.array([[j * n + i, j * n + i + 1, (j + 1) * n + i + 1] for j in range(n - 1) for i in range(n - 1)]
                  + [[j * n + i, (j + 1) * n + i + 1, (j + 1) * n + i] for j in range(n - 1) for i in range(n - 1)])
    return vt, ft


def test_unwrapped_files_round_trip_and_build_a_space(tmp_path):
    vt, ft = layout()
    space = make_synthetic_space(vt, ft, 32, 4, seed=3, n_blobs=0, asymmetry=0.0)
    albedo, _ = space.sample(12, torch.Generator().manual_seed(0))
    albedo = albedo.clamp(0, 1)
    weight = torch.zeros(12, 32, 32)
    weight[:, :, :20] = 0.8  # each photo saw the left part of the map
    for i in range(12):
        save_unwrapped(tmp_path / "unwrapped" / f"p{i:02d}.npz", albedo[i] * (weight[i, ..., None] > 0),
                       weight[i], weight[i] > 0, space.region, meta={"source": f"p{i}.jpg"})
    assert not list((tmp_path / "unwrapped").glob(".*"))
    ms = load_maps(sorted((tmp_path / "unwrapped").glob("*.npz")))
    assert ms.names[0] == "p00" and ms.albedo.shape == (12, 32, 32, 3)
    assert torch.allclose(ms.albedo[:, :, :20], albedo[:, :, :20], atol=1e-3)  # float16 on disk
    assert torch.equal(ms.uv_mask, space.region)
    known = ms.known()
    assert not known[:, :, 20:].any()
    done = complete_maps(ms, fill_mirror_then_opencv, batch=5)
    assert done.shape == albedo.shape
    # symmetric maps: the mirrored half comes back (up to the texel grid)
    hidden = space.region.clone()
    hidden[:, :20] = False
    assert (done - albedo).abs()[:, hidden].mean() < 0.02
    out = build_space(done, space.region, vt, ft, tmp_path / "space.npz", n_components=3,
                      preview=tmp_path / "preview.png")
    ts = load_texture_space(out)
    assert ts.n_components == 3 and (tmp_path / "preview.png").is_file()
    held, _ = space.sample(5, torch.Generator().manual_seed(9))
    assert reconstruction_rms(ts.mean, ts.basis, held, space.region, 3) < reconstruction_rms(
        ts.mean, ts.basis, held, space.region, 0)


def test_load_errors(tmp_path):
    with pytest.raises(InputImageError):
        load_maps([])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="Delete it"):
        load_maps([bad])
    save_unwrapped(tmp_path / "a.npz", np.zeros((8, 8, 3)), np.zeros((8, 8)), np.zeros((8, 8)), np.ones((8, 8)))
    save_unwrapped(tmp_path / "b.npz", np.zeros((4, 4, 3)), np.zeros((4, 4)), np.zeros((4, 4)), np.ones((4, 4)))
    with pytest.raises(ModelFileError, match="one layout"):
        load_maps([tmp_path / "a.npz", tmp_path / "b.npz"])
