"""Validation at load: damaged or hostile model, texture-space and landmark files give one clear ModelFileError
naming the file (never a traceback, a crash in a kernel, or silent wrong values)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from flamefit.errors import ModelFileError
from flamefit.model.flame_file import read_flame_file
from flamefit.model.landmarks import MeshLandmarks, load_ringnet_68
from flamefit.model.safe_pickle import load_restricted
from flamefit.model.synthetic import synthetic_flame_dict
from flamefit.model.texture_space import load_texture_space


def write_pickle(path, obj):
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


# -- model pickles -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("hello", "'v_template' is a str"),
    ({"a": 1}, "'v_template' is a dict"),
    ([[1.0, 2.0], [3.0]], "'v_template' is not a numeric array"),
    (np.array([["a", "b", "c"]], dtype=object), "'v_template' holds object values"),
    (np.array([["a", "b", "c"]]), "'v_template' holds <U1 values"),
])
def test_non_numeric_v_template(tmp_path, value, expected):
    d = synthetic_flame_dict()
    d["v_template"] = value
    path = write_pickle(tmp_path / "model.pkl", d)
    with pytest.raises(ModelFileError, match=expected) as info:
        read_flame_file(path)
    assert str(path) in str(info.value)


def test_deeply_nested_pickle(tmp_path):
    n = 100_000  # built from opcodes: the unpickler is iterative, our conversion must not recurse unboundedly
    path = tmp_path / "deep.pkl"
    path.write_bytes(b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b".")
    with pytest.raises(ModelFileError, match="nested more than .* levels deep or refer to themselves") as info:
        read_flame_file(path)
    assert str(path) in str(info.value)


def test_self_referencing_pickle(tmp_path):
    loop: list = []
    loop.append(loop)
    d = synthetic_flame_dict()
    d["v_template"] = loop
    d["self"] = d
    path = write_pickle(tmp_path / "selfref.pkl", d)
    with pytest.raises(ModelFileError, match="refer to themselves"):
        read_flame_file(path)
    with pytest.raises(ModelFileError, match="refer to themselves"):
        load_restricted(path)


# -- texture spaces -------------------------------------------------------------------------------------------

def _texture(h=8, w=8, k=2, t=6, f=4):
    rng = np.random.default_rng(0)
    return {
        "mean": rng.uniform(0, 255, (h, w, 3)).astype(np.float32),
        "tex_dir": rng.normal(0, 10, (h, w, 3, k)).astype(np.float32),
        "vt": rng.uniform(0, 1, (t, 2)),
        "ft": rng.integers(0, t, (f, 3)).astype(np.uint32),
    }


def test_valid_texture_space_loads(tmp_path):
    np.savez(tmp_path / "tex.npz", **_texture())
    ts = load_texture_space(tmp_path / "tex.npz")
    assert ts.n_components == 2 and ts.vt.shape == (6, 2) and ts.ft.shape == (4, 3)


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.update(vt=d["vt"][:, :1]), r"vt has shape \(6, 1\), expected \(T, 2\)"),  # used to abort the process
    (lambda d: d.update(vt=d["vt"][None]), r"vt has shape \(1, 6, 2\)"),
    (lambda d: d.update(vt=d["vt"] * 50), r"vt values span .* expected texture coordinates in \[0, 1\]"),
    (lambda d: d.update(ft=d["ft"].astype(np.int64) + 6), "ft indexes texture coordinates .* but vt has 6"),
    (lambda d: d.update(ft=d["ft"].astype(np.int64) - 7), "ft indexes texture coordinates -"),
    (lambda d: d.update(ft=d["ft"][:, :2]), r"ft has shape \(4, 2\)"),
    (lambda d: d.update(ft=d["ft"] + 0.5), "ft holds non-integer values"),
    (lambda d: d.pop("ft"), "only one of 'vt' and 'ft'"),
    (lambda d: d["mean"].__setitem__((0, 0, 0), np.nan), "'mean' holds NaN or infinite values"),
    (lambda d: d["tex_dir"].__setitem__((0, 0, 0, 0), np.inf), "'tex_dir' holds NaN or infinite values"),
    (lambda d: d.update(vt=np.full((6, 2), np.nan)), "'vt' holds NaN"),
    (lambda d: d.update(mean=d["mean"].astype(np.complex64)), "'mean' has dtype complex64"),
    (lambda d: d.update(mean=np.array([["a"]])), "'mean' has dtype <U1"),
    (lambda d: d.update(mean=d["mean"][..., :2]), r"mean has shape \(8, 8, 2\)"),
    (lambda d: d.update(tex_dir=d["tex_dir"][:4]), r"tex_dir has shape \(4, 8, 3, 2\)"),
])
def test_bad_texture_space_is_a_clear_error(tmp_path, mutate, expected):
    d = _texture()
    mutate(d)
    path = tmp_path / "tex.npz"
    np.savez(path, **d)
    with pytest.raises(ModelFileError, match=expected) as info:
        load_texture_space(path)
    assert str(path) in str(info.value)


def test_object_array_npz_is_refused_without_unpickling(tmp_path):
    d = _texture()
    d["mean"] = np.array([{"a": 1}], dtype=object)
    path = tmp_path / "obj.npz"
    np.savez(path, **d)
    with pytest.raises(ModelFileError, match="'mean' holds Python objects") as info:
        load_texture_space(path)
    assert str(path) in str(info.value)


def test_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ModelFileError, match="junk.npz"):
        load_texture_space(path)


# -- landmark embeddings ------------------------------------------------------------------------------------

def _embedding_files(tmp_path, s_idx=None, s_bary=None, d_idx=None):
    rng = np.random.default_rng(1)
    static = {"lmk_face_idx": np.arange(51) if s_idx is None else s_idx,
              "lmk_b_coords": np.full((51, 3), 1 / 3) if s_bary is None else s_bary}
    dyn_idx = rng.integers(0, 100, (79, 17)) if d_idx is None else d_idx
    dynamic = {"lmk_face_idx": list(dyn_idx), "lmk_b_coords": list(np.full((79, 17, 3), 1 / 3))}
    sp = write_pickle(tmp_path / "flame_static_embedding.pkl", static)
    dp = tmp_path / "flame_dynamic_embedding.npy"
    np.save(dp, np.array(dynamic, dtype=object), allow_pickle=True)
    return sp, dp


def test_embedding_validation_at_load(tmp_path):
    sp, dp = _embedding_files(tmp_path)
    lmk = load_ringnet_68(sp, dp)
    lmk.validate_against(100)
    with pytest.raises(ModelFileError, match="face indices span 0 to 50, but the model has 50 faces"):
        lmk.validate_against(50)

    bad_idx = np.arange(51)
    bad_idx[3] = -2
    sp, dp = _embedding_files(tmp_path, s_idx=bad_idx)
    with pytest.raises(ModelFileError, match="flame_static_embedding.pkl: landmark face indices span -2"):
        load_ringnet_68(sp, dp)
    bary = np.full((51, 3), 1 / 3)
    bary[0, 0] = np.nan
    sp, dp = _embedding_files(tmp_path, s_bary=bary)
    with pytest.raises(ModelFileError, match="barycentric coordinates hold NaN"):
        load_ringnet_68(sp, dp)
    sp, dp = _embedding_files(tmp_path, s_bary=np.full((51, 2), 0.5))
    with pytest.raises(ModelFileError, match="expected 51 static landmarks"):
        load_ringnet_68(sp, dp)


def test_mesh_landmarks_validate_against():
    lmk = MeshLandmarks(torch.tensor([0, 5, 9]), torch.full((3, 3), 1 / 3))
    lmk.validate_against(10)
    with pytest.raises(ModelFileError, match="span 0 to 9, but the model has 9 faces"):
        lmk.validate_against(9, "dense correspondence")


def test_npz_given_as_model_says_what_it_is(tmp_path):
    np.savez(tmp_path / "FLAME_texture.npz", **_texture())
    with pytest.raises(ModelFileError, match="zip archive .* not a pickled model file"):
        read_flame_file(tmp_path / "FLAME_texture.npz")
