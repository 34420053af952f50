import numpy as np
import pytest
import torch

from flamefit.errors import ModelFileError
from flamefit.model.texture_space import (
    TextureSpace,
    load_texture_space,
    resize_map,
    smoothness_loss,
    symmetry_loss,
)


def _official(tmp_path, h=8, w=6, k=4):
    rng = np.random.default_rng(0)
    mean = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    tex_dir = rng.normal(0, 10, (h, w, 3, k)).astype(np.float32)
    path = tmp_path / "FLAME_texture.npz"
    np.savez(path, mean=mean, tex_dir=tex_dir, vt=rng.uniform(0, 1, (10, 2)), ft=np.zeros((3, 3), np.uint32))
    return path, mean, tex_dir


def test_official_format_bgr255_to_rgb01(tmp_path):
    path, mean, tex_dir = _official(tmp_path)
    ts = load_texture_space(path)
    assert ts.kind == "flame" and ts.n_components == 4 and ts.resolution == (8, 6)
    assert np.allclose(ts.mean.numpy(), mean[..., ::-1] / 255, atol=1e-6)  # BGR -> RGB
    code = torch.tensor([[1.0, 0, -2.0, 0]])
    expected = (mean + tex_dir[..., 0] - 2 * tex_dir[..., 2])[..., ::-1] / 255
    assert np.allclose(ts(code)[0].numpy(), expected, atol=1e-5)
    assert ts.vt.shape == (10, 2) and ts.ft.dtype == torch.int64
    assert load_texture_space(path, n_components=2).n_components == 2
    assert ts(torch.zeros(2, 0)).shape == (2, 8, 6, 3)  # empty code -> mean


def test_bfm_format(tmp_path):
    rng = np.random.default_rng(1)
    side, k = 4, 3
    mu = rng.uniform(0, 1, side * side * 3).astype(np.float32)
    pc = rng.normal(0, 0.1, (side * side * 3, k)).astype(np.float32)
    path = tmp_path / "FLAME_albedo_from_BFM.npz"
    np.savez(path, MU=mu, PC=pc, specMU=mu, specPC=pc)
    ts = load_texture_space(path)
    assert ts.kind == "bfm" and ts.n_components == k and ts.resolution == (side, side)
    assert np.allclose(ts.mean.numpy(), mu.reshape(side, side, 3)[..., ::-1], atol=1e-6)
    c = torch.tensor([[0.0, 1.0, 0.0]])
    assert np.allclose(ts(c)[0].numpy(), (mu + pc[:, 1]).reshape(side, side, 3)[..., ::-1], atol=1e-5)
    assert ts.spec_mean is not None


def test_bad_files(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_texture_space(tmp_path / "nope.npz")
    other = tmp_path / "other.npz"
    np.savez(other, foo=np.zeros(3))
    with pytest.raises(ModelFileError, match="mean/tex_dir"):
        load_texture_space(other)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError):
        load_texture_space(junk)


def test_free_albedo_and_priors():
    ts = TextureSpace.free(16, (0.8, 0.6, 0.5))
    assert ts.n_components == 0 and ts.kind == "free"
    assert torch.allclose(ts(None, batch=1)[0, 3, 3], torch.tensor([0.8, 0.6, 0.5]))
    flat = torch.ones(1, 16, 16, 3)
    assert float(smoothness_loss(flat)) == 0 and float(symmetry_loss(flat)) == 0
    noisy = torch.rand(1, 16, 16, 3)
    assert float(smoothness_loss(noisy)) > 0.01
    left = torch.zeros(1, 16, 16, 3)
    left[:, :, :8] = 1
    assert float(symmetry_loss(left)) > 0.5
    assert resize_map(noisy, (8, 8)).shape == (1, 8, 8, 3)


def test_standin_texture(shared_assets):
    ts = load_texture_space(shared_assets / "flame_standin" / "standin_texture.npz")
    assert ts.n_components == 50 and ts.resolution == (256, 256)
    assert 0 <= float(ts.mean.min()) and float(ts.mean.max()) <= 1
