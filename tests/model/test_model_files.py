"""Restricted unpickling, validation of damaged files, and where model files are found."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from flamefit.errors import ModelFileError, UnsafePickleError
from flamefit.model.flame_file import read_flame_file
from flamefit.model.safe_pickle import load_restricted
from flamefit.model.synthetic import synthetic_flame_dict


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_carrying_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "generic_model.pkl"
    d = synthetic_flame_dict()
    d["payload"] = _Evil(marker)
    path.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(UnsafePickleError) as info:
        read_flame_file(path)
    msg = str(info.value)
    assert "posix.system" in msg or "os.system" in msg
    assert str(path) in msg
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load"),
                                         ("torch", "load")])
def test_other_globals_are_refused(tmp_path, module, name):
    data = f"c{module}\n{name}\n(S'1'\ntR.".encode()
    path = tmp_path / "x.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        load_restricted(path)


def test_malicious_npy_object_array_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "flame_dynamic_embedding.npy"
    np.save(path, np.array([_Evil(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError):
        load_restricted(path)
    assert not marker.exists()


def _write(path, d):
    path.write_bytes(pickle.dumps(d, protocol=4))
    return path


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (lambda d: d.pop("posedirs"), "missing key.*posedirs"),
        (lambda d: d.__setitem__("v_template", d["v_template"][:, :2]), "v_template has shape"),
        (lambda d: d.__setitem__("f", d["f"] + 100000), "f indexes vertex"),
        (lambda d: d.__setitem__("weights", d["weights"] * 2), "do not sum to 1"),
        (lambda d: d.__setitem__("posedirs", d["posedirs"][:, :, :10]), "posedirs has shape"),
        (lambda d: d.__setitem__("kintree_table", np.array([[-1, 0, 0, 0, 0], [0, 1, 2, 3, 4]])), "kinematic tree"),
        (lambda d: d["v_template"].__setitem__((0, 0), np.nan), "NaN"),
    ],
)
def test_damaged_files_say_what_is_wrong(tmp_path, mutate, expected):
    d = synthetic_flame_dict()
    d.pop("n_shape")
    mutate(d)
    path = _write(tmp_path / "bad.pkl", d)
    with pytest.raises(ModelFileError, match=expected) as info:
        read_flame_file(path)
    assert str(path) in str(info.value)


def test_truncated_foreign_and_texture_files(tmp_path):
    good = _write(tmp_path / "good.pkl", {k: v for k, v in synthetic_flame_dict().items() if k != "n_shape"})
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="truncated"):
        read_flame_file(truncated)
    with pytest.raises(ModelFileError, match="expected a pickled dict"):
        read_flame_file(_write(tmp_path / "list.pkl", [1, 2, 3]))
    with pytest.raises(ModelFileError, match="texture space"):
        read_flame_file(_write(tmp_path / "tex.pkl", {"mean": np.zeros(3), "tex_dir": np.zeros(3)}))
    text = tmp_path / "readme.pkl"
    text.write_text("hello")
    with pytest.raises(ModelFileError):
        read_flame_file(text)
    with pytest.raises(ModelFileError, match="not found"):
        read_flame_file(tmp_path / "nope.pkl")


def test_resolution_order_and_missing_model_message(tmp_path, monkeypatch, synthetic_model_path):
    from flamefit.assets import resolve_asset

    monkeypatch.setenv("FLAMEFIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLAMEFIT_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.delenv("FLAMEFIT_FLAME_MODEL", raising=False)
    with pytest.raises(ModelFileError, match="flame.is.tue.mpg.de") as info:
        resolve_asset("flame")
    assert "FLAMEFIT_FLAME_MODEL" in str(info.value)
    # data dir
    (tmp_path / "data").mkdir()
    data_file = tmp_path / "data" / "generic_model.pkl"
    data_file.write_bytes(synthetic_model_path.read_bytes())
    assert resolve_asset("flame") == data_file
    # config beats data dir; relative to the config file
    cfg_model = tmp_path / "cfg_model.pkl"
    cfg_model.write_bytes(b"x")
    (tmp_path / "config.toml").write_text('[paths]\nflame = "cfg_model.pkl"\n')
    assert resolve_asset("flame") == cfg_model
    # environment beats config
    monkeypatch.setenv("FLAMEFIT_FLAME_MODEL", str(synthetic_model_path))
    assert resolve_asset("flame") == synthetic_model_path
    # explicit beats everything; a wrong explicit path is an error, not a fall-through
    assert resolve_asset("flame", data_file) == data_file
    with pytest.raises(ModelFileError, match="given by argument"):
        resolve_asset("flame", tmp_path / "typo.pkl")


def test_cli_model_info(synthetic_model_path):
    out = subprocess.run([sys.executable, "-m", "flamefit", "model", "info", str(synthetic_model_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "FLAME 2023" in out.stdout and "sha256" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "flamefit", "model", "info", str(synthetic_model_path) + ".missing"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "not found" in bad.stderr and "Traceback" not in bad.stderr


def _model_info_json(capsys, *args):
    import json

    from flamefit.cli import main

    code = main(["model", "info", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def _synthetic_texture(path, n_faces, with_uv=True):
    rng = np.random.default_rng(0)
    arrays = {"mean": rng.uniform(0, 255, (8, 8, 3)).astype(np.float32),
              "tex_dir": rng.normal(0, 1, (8, 8, 3, 3)).astype(np.float32)}
    if with_uv:
        arrays["vt"] = rng.uniform(0, 1, (20, 2))
        arrays["ft"] = rng.integers(0, 20, (n_faces, 3))
    np.savez(path, **arrays)
    return path


def test_model_info_says_what_each_asset_enables(capsys, tmp_path, monkeypatch, synthetic_model_path):
    n_faces = read_flame_file(synthetic_model_path).faces.shape[0]
    # only the model: the texture space and the RingNet embedding are missing, and info says what happens instead
    code, report, _ = _model_info_json(capsys, synthetic_model_path)
    assert code == 0
    assets = report["assets"]
    assert assets["flame"]["status"] == "found" and "fitting" in assets["flame"]["enables"]
    assert assets["texture_space"]["status"] == "not found"
    assert "free per-texel albedo" in assets["texture_space"]["without_it"]
    assert assets["landmarks_68"]["status"] == "not found" and assets["landmarks_68"]["without_it"]
    assert assets["uv"]["status"] in ("generated", "not found")
    assert report["features"]["pca_texture"] is False

    # a texture space holding vt/ft IS a UV layout (info used to say "uv: not found")
    monkeypatch.setenv("FLAMEFIT_TEXTURE_SPACE", str(_synthetic_texture(tmp_path / "tex.npz", n_faces)))
    code, report, _ = _model_info_json(capsys, synthetic_model_path)
    assert code == 0
    ts, uv = report["assets"]["texture_space"], report["assets"]["uv"]
    assert ts["status"] == "found" and ts["components"] == 3 and ts["has_uv"] and ts["resolution"] == [8, 8]
    assert uv["status"] == "found" and "tex.npz (its vt/ft)" in uv["source"] and "textured meshes" in uv["enables"]
    assert report["features"]["pca_texture"] and report["features"]["textured_mesh"]

    # an invalid texture space is reported as such, and the exit code says an asset is broken
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "bad.npz", mean=np.zeros((8, 8, 3)), tex_dir=np.zeros((8, 8, 3, 1)),
             vt=rng.uniform(0, 1, (20, 1)), ft=np.zeros((n_faces, 3), np.int64))
    monkeypatch.setenv("FLAMEFIT_TEXTURE_SPACE", str(tmp_path / "bad.npz"))
    code, report, err = _model_info_json(capsys, synthetic_model_path)
    assert code == 3 and "texture_space" in err
    assert report["assets"]["texture_space"]["status"] == "invalid"
    assert "vt has shape (20, 1)" in report["assets"]["texture_space"]["error"]


def test_model_info_table(capsys, synthetic_model_path):
    from flamefit.cli import main

    assert main(["model", "info", str(synthetic_model_path)]) == 0
    out = capsys.readouterr().out
    assert "what each enables" in out and "texture_space" in out and "without it" in out
