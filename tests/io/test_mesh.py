"""Exported meshes read back with trimesh (an independent reader) keep vertices, faces and UVs."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

import flamefit
from flamefit.io.mesh import save_glb, save_obj, save_ply, split_uv_seams
from flamefit.model.uv import load_uv_layout, read_obj_uv


@pytest.fixture(scope="module")
def mesh(synthetic_model_path):
    model = flamefit.load_flame(synthetic_model_path)
    v = model().vertices[0].numpy()
    f = model.faces.numpy()
    # A UV layout with seams: spherical projection, with a separate vt per corner on every 7th face.
    uv_v = np.stack([np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi) + 0.5, v[:, 1] / 0.2 + 0.5], axis=1)
    vt = np.concatenate([uv_v, np.full((3, 2), 0.25)])
    ft = f.copy()
    ft[::7] = [len(uv_v), len(uv_v) + 1, len(uv_v) + 2]
    tex = np.random.default_rng(0).random((32, 48, 3)).astype(np.float32)
    return v, f, vt, ft, tex


def test_obj_with_texture_round_trips(tmp_path, mesh):
    v, f, vt, ft, tex = mesh
    path = save_obj(tmp_path / "head.obj", v, f, vt=vt, ft=ft, texture=tex)
    assert (tmp_path / "head.mtl").exists() and (tmp_path / "head.png").exists()
    v2, f2, vt2, ft2 = read_obj_uv(path)
    np.testing.assert_allclose(v2, v, atol=1e-6)
    np.testing.assert_array_equal(f2, f)
    np.testing.assert_allclose(vt2[ft2], vt[ft], atol=1e-6)
    loaded = trimesh.load(path, process=False)
    assert len(loaded.faces) == len(f)
    assert loaded.visual.uv is not None and loaded.visual.material.image.size == (48, 32)
    # our own UV loader reads the layout from the OBJ
    layout = load_uv_layout(path)
    np.testing.assert_allclose(layout.vt.numpy()[layout.ft.numpy()], vt[ft], atol=1e-6)


def test_ply_round_trips(tmp_path, mesh):
    v, f, *_ = mesh
    colors = np.random.default_rng(1).random((len(v), 3))
    path = save_ply(tmp_path / "head.ply", v, f, vertex_colors=colors)
    loaded = trimesh.load(path, process=False)
    np.testing.assert_allclose(loaded.vertices, v, atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, f)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], np.round(colors * 255).astype(np.uint8))


def test_glb_round_trips_with_uvs(tmp_path, mesh):
    v, f, vt, ft, tex = mesh
    path = save_glb(tmp_path / "head.glb", v, f, vt=vt, ft=ft, texture=tex)
    scene = trimesh.load(path, process=False)
    loaded = next(iter(scene.geometry.values())) if isinstance(scene, trimesh.Scene) else scene
    sv, sf, suv, src = split_uv_seams(v, f, vt, ft)
    assert len(loaded.faces) == len(f) and len(loaded.vertices) == len(sv)
    # every corner keeps its position and UV
    np.testing.assert_allclose(loaded.vertices[loaded.faces], v[f], atol=1e-6)
    np.testing.assert_allclose(loaded.visual.uv[loaded.faces], vt[ft], atol=1e-6)
    assert loaded.visual.material.baseColorTexture.size == (48, 32)


def test_texture_without_uvs_is_an_error(tmp_path, mesh):
    v, f, *_ , tex = mesh
    with pytest.raises(ValueError, match="texture coordinates"):
        save_obj(tmp_path / "x.obj", v, f, texture=tex)
