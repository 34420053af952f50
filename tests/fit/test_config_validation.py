"""Config validation (fit/config_check.py via validate_config): every bad value is a ConfigError naming the key,
the value and the allowed range, raised by load_config before any work."""

from __future__ import annotations

import dataclasses

import pytest

from flamefit.errors import ConfigError
from flamefit.fit.config import FitConfig, load_config, read_config_file, validate_config
from flamefit.fit.config_check import rule_for


@pytest.mark.parametrize("override, key, allowed", [
    ("photometric.lr=.nan", "photometric.lr", "finite"),
    ("photometric.lr=.inf", "photometric.lr", "finite"),
    ("photometric.lr=-0.1", "photometric.lr", "(0, 10]"),
    ("landmarks.lr=0", "landmarks.lr", "(0, 10]"),
    ("weights.photo=-1", "weights.photo", ">= 0"),
    ("weights.lmk68=.nan", "weights.lmk68", "finite"),
    ("camera.fov_deg=0", "camera.fov_deg", "(0, 180)"),
    ("camera.fov_deg=180", "camera.fov_deg", "(0, 180)"),
    ("camera.fov_deg=-5", "camera.fov_deg", "(0, 180)"),
    ("camera.focal_px=0", "camera.focal_px", "> 0"),
    ("camera.focal_px=-300", "camera.focal_px", "> 0"),
    ("n_shape=-1", "n_shape", "[0, 10000]"),
    ("init.n_expr=-3", "init.n_expr", "[0, 10000]"),
    ("texture.n_tex=-1", "texture.n_tex", "[0, 10000]"),
    ("photometric.iters=100000000", "photometric.iters", "[0, 100000]"),
    ("rigid.iters=-1", "rigid.iters", "[0, 100000]"),
    ("resolution=8", "resolution", "[32, 4096]"),
    ("resolution=100000", "resolution", "[32, 4096]"),
    ("texture.skin_rgb=[0.5, 2, 0.5]", "texture.skin_rgb", "[0, 1]"),
    ("texture.light=sh4", "texture.light", "'sh9'"),
    ("texture.mode=banana", "texture.mode", "'auto'"),
    ("adam_beta2=1", "adam_beta2", "[0, 1)"),
])
def test_bad_values_name_key_value_and_range(override, key, allowed):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    msg = str(info.value)
    assert f"`{key}`" in msg and allowed in msg, msg
    assert "\n" not in msg


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError, match=r"2 problems.*`camera\.fov_deg` = 200.*`weights\.photo` = -1"):
        load_config(overrides=["weights.photo=-1", "camera.fov_deg=200"])


def test_defaults_and_edge_values_pass():
    validate_config(FitConfig())
    load_config(overrides=["photometric.iters=0", "weights.photo=0", "camera.fov_deg=179.9", "n_shape=0",
                           "camera.focal_px=1000", "texture.fit_resolution=0"])


def test_new_fields_are_covered_by_naming_conventions():
    # Engineers add fields later: a learning rate, a weight or an iteration count gets its rule from its name.
    assert rule_for("refine.lr").lo_open and rule_for("refine.lr").lo == 0
    assert rule_for("weights.new_term").lo == 0
    assert rule_for("tracking.refine_iters").hi == 100000
    assert rule_for("init.n_light") is not None

    @dataclasses.dataclass
    class Extra:
        some_new_float: float = float("nan")

    @dataclasses.dataclass
    class Cfg(FitConfig):
        extra: Extra = dataclasses.field(default_factory=Extra)

    with pytest.raises(ConfigError, match="`extra.some_new_float` = nan must be a finite number"):
        validate_config(Cfg())


def test_config_file_errors_name_the_file(tmp_path):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("photometric:\n  iters: 5 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml is not UTF-8"):
        load_config(latin)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        read_config_file(listy)
    bad_value = tmp_path / "bad.toml"
    bad_value.write_text("[camera]\nfov_deg = nan\n")
    with pytest.raises(ConfigError, match="camera.fov_deg"):
        load_config(bad_value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == FitConfig()
