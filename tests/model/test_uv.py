"""The UV layout from each source users have: texture npz, OBJ, *_vt.npy pair, the flame-model package."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

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


# ------------------------------------------------------------------------------------------ generated atlas


def _face_region(model):
    """The face seen from the front on FLAME topology (the stand-in): chin to forehead, cheek to cheek."""
    P = model.v_template.double().numpy()
    F = model.faces.numpy()
    c = P[F].mean(1)
    return (c[:, 2] > 0.0) & (c[:, 1] > -0.09) & (c[:, 1] < 0.11) & (np.abs(c[:, 0]) < 0.07) & (F < 3931).all(1)


def _check_valid_atlas(model, layout, raster_px=512):
    from flamefit.model.uv import uv_quality

    assert layout.generated and "generated atlas (flamefit v" in layout.source
    assert "one chart per triangle" not in layout.source
    assert layout.ft.shape == model.faces.shape and layout.vt.shape[1] == 2
    assert layout.vt.dtype == torch.float32 and layout.ft.dtype == torch.int64
    assert 0 <= int(layout.ft.min()) and int(layout.ft.max()) < len(layout.vt)
    q = uv_quality(model.v_template, model.faces, layout, raster_px=raster_px)
    assert q["in_unit_square"] == 1.0 and q["degenerate"] == 0
    assert q["flipped_fraction"] == 0.0 and q["overlap_fraction"] == 0.0
    assert q["atlas_used"] > 0.6  # charts fill most of the square
    # no chart sits on a stretch of the atlas less than 1/8 of what its surface area is due (in texels)
    assert q["area_log2_p05"] > -3.0
    return q


@pytest.fixture(scope="module")
def standin_model(standin_2023):
    return flamefit.load_flame(standin_2023)


def test_model_file_alone_gets_a_generated_atlas(standin_model):
    from flamefit.model.uv import uv_quality

    layout = standin_model.uv
    assert layout is not None and layout.generated
    q = _check_valid_atlas(standin_model, layout, raster_px=512)
    face = _face_region(standin_model)
    q = uv_quality(standin_model.v_template, standin_model.faces, layout, face_mask=face, raster_px=256)
    # the face gets more of the atlas than its share of the surface (measured: 35% vs 22%)
    assert q["region_uv_share"] > 1.4 * q["region_surface_share"]
    # the eyeballs (the stand-in's vertices 3931..) have charts in the strip below the head, the subject's left
    # eye (+x) right of the middle
    vt, ft = layout.vt.numpy(), layout.ft.numpy()
    P, F = standin_model.v_template.numpy(), standin_model.faces.numpy()
    eye = (F >= 3931).all(1)
    assert vt[ft[eye]][..., 1].max() < 0.25 < vt[ft[~eye]][..., 1].max()
    left = eye & (P[F[:, 0], 0] > 0)
    assert vt[ft[left]][..., 0].min() > 0.5 > vt[ft[eye & ~left]][..., 0].max()


def test_generated_atlas_is_mirror_symmetric_and_faces_forward(standin_model):
    """The texture symmetry prior flips the map about u = 0.5: the mirror of a vertex must land at 1 - u."""
    from scipy.spatial import cKDTree

    layout = standin_model.uv
    P = standin_model.v_template.double().numpy()
    F = standin_model.faces.numpy()
    vt, ft = layout.vt.numpy(), layout.ft.numpy()
    first = np.full(len(P), -1)
    n_uv = np.zeros(len(P), int)
    for v, t in zip(F.ravel(), ft.ravel(), strict=True):
        if first[v] != t:
            n_uv[v] += first[v] >= 0 and not np.allclose(vt[first[v]], vt[t])
            first[v] = t if first[v] < 0 else first[v]
    dist, mirror = cKDTree(P).query(P * np.array([-1.0, 1.0, 1.0]))
    ok = (dist < 1e-3) & (n_uv == 0) & (n_uv[mirror] == 0) & (first >= 0)
    du = np.abs(vt[first[ok], 0] + vt[first[mirror[ok]], 0] - 1)
    dv = np.abs(vt[first[ok], 1] - vt[first[mirror[ok]], 1])
    assert ok.sum() > 2000
    assert np.median(du) < 0.005 and np.percentile(du, 95) < 0.02  # measured 0.0026 / 0.0085 (FLAME's: 0.007/0.06)
    assert np.median(dv) < 0.005
    # the nose tip is in the middle of the head chart; the subject's left (+x) is to the right
    nose = int(np.argmax(P[:3931, 2]))
    assert abs(vt[first[nose], 0] - 0.5) < 0.02
    left_cheek = int(np.argmax(P[:3931, 0]))
    assert vt[first[left_cheek], 0] > 0.6


def test_generated_atlas_on_the_synthetic_model(synthetic_model_path):
    model = flamefit.load_flame(synthetic_model_path)  # a closed head sphere: the bottom gets its own cap
    _check_valid_atlas(model, model.uv)
    assert model.uv.vt.dtype == model.v_template.dtype
    assert model.double().uv.vt.dtype == torch.float64


def test_file_layout_wins_over_the_generated_one(standin_2023, shared_assets):
    model = flamefit.load_flame(standin_2023, uv=shared_assets / "flame_uv" / "flame_vt.npy")
    assert not model.uv.generated and model.uv.vt.shape == (5118, 2)


def test_generated_atlas_is_deterministic_and_cached(synthetic_model_path, tmp_path, monkeypatch):
    from flamefit.model import uv as uvmod

    model = flamefit.load_flame(synthetic_model_path)
    a = uvmod.generate_uv_layout(model.v_template, model.faces)
    b = uvmod.generated_uv_layout(model.v_template, model.faces, cache_dir=tmp_path)
    assert torch.equal(a.vt, b.vt) and torch.equal(a.ft, b.ft) and a.source == b.source
    files = list(tmp_path.glob(f"*_uvatlas_v{uvmod.GENERATED_ATLAS_VERSION}.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp*"))

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(uvmod, "generate_uv_layout", fail)
    c = uvmod.generated_uv_layout(model.v_template, model.faces, cache_dir=tmp_path)
    assert torch.equal(c.vt, a.vt) and c.generated
    monkeypatch.undo()
    files[0].write_bytes(b"damaged")
    d = uvmod.generated_uv_layout(model.v_template, model.faces, cache_dir=tmp_path)
    assert torch.equal(d.vt, a.vt)
    # another mesh has another cache entry
    uvmod.generated_uv_layout(model.v_template * 1.01, model.faces, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*_uvatlas_*.npz"))) == 2


def test_mesh_without_disk_charts_gets_one_chart_per_triangle():
    from flamefit.model.uv import generate_uv_layout, uv_quality

    # a torus: no cut into the design's disks exists, so every triangle becomes its own chart
    n, m = 12, 8
    i, j = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    a, b = 2 * np.pi * i.ravel() / n, 2 * np.pi * j.ravel() / m
    verts = np.stack([(1 + 0.3 * np.cos(b)) * np.cos(a), 0.3 * np.sin(b), (1 + 0.3 * np.cos(b)) * np.sin(a)], -1)
    idx = lambda p, q: (p % n) * m + (q % m)  # noqa: E731
    faces = np.array([f for p in range(n) for q in range(m)
                      for f in ([idx(p, q), idx(p + 1, q), idx(p + 1, q + 1)],
                                [idx(p, q), idx(p + 1, q + 1), idx(p, q + 1)])])
    layout = generate_uv_layout(torch.tensor(verts), torch.tensor(faces))
    assert layout.generated and "one chart per triangle" in layout.source
    q = uv_quality(verts, faces, layout, raster_px=256)
    assert q["overlap_fraction"] == 0 and q["degenerate"] == 0 and q["in_unit_square"] == 1
    with pytest.raises(ValueError, match="faces must be"):
        generate_uv_layout(torch.tensor(verts), torch.tensor([[0, 1, 999]]))


def test_texture_fits_through_the_generated_atlas(standin_model):
    """A free texture optimised through the generated UVs reproduces a colour pattern painted on the vertices."""
    from flamefit.render import camera_from_fov, look_at, render_mesh

    model = standin_model
    verts = model.v_template[None].double()
    P = verts[0]
    # a smooth pattern that differs left/right, up/down and front/back: overlapping UVs could not fit it
    albedo = torch.stack([0.5 + 0.4 * torch.sin(40 * P[:, 0]), 0.5 + 0.4 * torch.cos(30 * P[:, 1]),
                          0.5 + 0.4 * torch.sin(25 * P[:, 2] + 10 * P[:, 0])], -1).clamp(0, 1)
    cams = []
    for yaw in (-0.7, 0.7):
        eye = torch.tensor([[0.5 * np.sin(yaw), 0.0, 0.5 * np.cos(yaw)]], dtype=torch.float64)
        R, t = look_at(eye, torch.zeros(1, 3, dtype=torch.float64))
        cams.append(camera_from_fov(0.7, 48, 48, R=R, t=t))
    targets = [render_mesh(verts, model.faces, c, albedo=albedo, antialias=False).rgb for c in cams]
    layout = model.uv.to(dtype=torch.float64)
    tex = torch.full((1, 32, 32, 3), 0.5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([tex], lr=0.08)

    def loss():
        return sum((render_mesh(verts, model.faces, c, texture=(tex, layout.vt, layout.ft), antialias=False).rgb
                    - tg).pow(2).mean() for c, tg in zip(cams, targets, strict=True))

    with torch.no_grad():
        first = float(loss())
    for _ in range(25):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    with torch.no_grad():
        last = float(loss())
    assert last < 0.1 * first, (first, last)  # measured 0.025 (0.67 with the UVs shuffled)
