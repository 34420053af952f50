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
    from flamefit.model.files import resolve_asset

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
