"""The UV layout from each source users have: texture npz, OBJ, *_vt.npy pair, the flame-model package."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import flamefit
from flamefit.errors import ModelFileError
from flamefit.model.uv import load_uv_layout, packaged_uv_layout


def test_uv_from_texture_npz_and_npy_pair_agree(shared_assets):
    from_npz = load_uv_layout(shared_assets / "flame_standin" / "standin_texture.npz")
    from_npy = load_uv_layout(shared_assets / "flame_uv" / "flame_vt.npy")
    assert from_npz.vt.shape == (5118, 2) and from_npz.ft.shape == (9976, 3)
    np.testing.assert_allclose(from_npz.vt.numpy(), from_npy.vt.numpy(), atol=1e-6)
    assert (from_npz.ft == from_npy.ft).all()
    assert 0 <= from_npz.vt.min() and from_npz.vt.max() <= 1


def test_load_flame_attaches_uv_and_rejects_foreign_topology(standin_2023, shared_assets, synthetic_model_path):
    model = flamefit.load_flame(standin_2023, uv=shared_assets / "flame_uv" / "flame_vt.npy")
    assert model.uv is not None and model.uv.ft.shape == model.faces.shape
    model = model.double()
    assert model.uv.vt.dtype == model.v_template.dtype  # follows .to()/.double()
    with pytest.raises(ModelFileError, match="another topology"):
        flamefit.load_flame(synthetic_model_path, uv=shared_assets / "flame_uv" / "flame_vt.npy")


def test_uv_from_installed_flame_model_package(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "flame_model"
    (pkg / "assets").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    vt = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.save(pkg / "assets" / "flame_vt.npy", vt)
    np.save(pkg / "assets" / "flame_ft.npy", np.array([[0, 1, 2]], dtype=np.uint32))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("flame_model", None)
    layout = packaged_uv_layout()
    assert layout is not None and layout.ft.tolist() == [[0, 1, 2]]
    np.testing.assert_allclose(layout.vt.numpy(), vt)


def test_bad_uv_sources_have_clear_errors(tmp_path):
    npz = tmp_path / "other.npz"
    np.savez(npz, a=np.zeros(3))
    with pytest.raises(ModelFileError, match="no UV layout"):
        load_uv_layout(npz)
    obj = tmp_path / "plain.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(ModelFileError, match="no texture coordinates"):
        load_uv_layout(obj)
    bad = tmp_path / "bad_vt.npy"
    np.save(bad, np.zeros((3, 2)))
    np.save(tmp_path / "bad_ft.npy", np.array([[0, 1, 7]]))
    with pytest.raises(ModelFileError, match="indexes texture coordinate 7"):
        load_uv_layout(bad)
