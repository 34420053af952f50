import pytest

from flamefit.errors import ConfigError
from flamefit.fit.config import FitConfig, load_config, parse_override, save_config


def test_defaults_are_documented_dataclasses():
    cfg = FitConfig()
    assert cfg.resolution == 224 and cfg.landmarks.iters > 0 and cfg.weights.photo > 0
    assert cfg.texture.light in ("sh9", "sh9x3")


def test_overrides_nested_and_typed():
    cfg = load_config(overrides=["weights.photo=3", "landmarks.iters=5", "texture.skin_rgb=[0.1, 0.2, 0.3]",
                                 "camera.focal_px=500", "weights.shape_prior=1e-6", "texture.light=sh9"])
    assert cfg.weights.photo == 3.0 and isinstance(cfg.weights.photo, float)
    assert cfg.landmarks.iters == 5 and cfg.texture.skin_rgb == (0.1, 0.2, 0.3)
    assert cfg.camera.focal_px == 500.0 and cfg.weights.shape_prior == 1e-6 and cfg.texture.light == "sh9"


@pytest.mark.parametrize("bad", ["weights.phto=1", "landmarks.iters=abc", "texture.light=sh4", "nokey",
                                 "resolution=8", "rigid.lr=0"])
def test_bad_overrides_are_clear_errors(bad):
    with pytest.raises(ConfigError):
        load_config(overrides=[bad])


def test_toml_yaml_files_and_roundtrip(tmp_path):
    toml = tmp_path / "fit.toml"
    toml.write_text("resolution = 256\n[photometric]\niters = 7\n[weights]\nphoto = 1.5\n")
    cfg = load_config(toml, overrides=["photometric.lr=0.5"])
    assert cfg.resolution == 256 and cfg.photometric.iters == 7 and cfg.photometric.lr == 0.5
    assert cfg.weights.photo == 1.5
    saved = save_config(cfg, tmp_path / "used.yaml")
    assert load_config(saved) == cfg
    yml = tmp_path / "fit.yaml"
    yml.write_text("texture:\n  mode: free\n")
    assert load_config(yml).texture.mode == "free"
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("resolution = = 3")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(broken)


def test_parse_override_shape():
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}


def test_former_hard_coded_constants_are_documented_config():
    cfg = load_config(overrides=["optim.lr_scale.shape=1.5", "optim.lr_final_fraction=0.2",
                                 "texture.free_offset_l2_factor=0.3", "texture.smooth_reference_side=64",
                                 "photometric.early_stop_patience=5", "photometric_coarse.resolution=96"])
    assert cfg.optim.lr_scale.shape == 1.5 and cfg.optim.lr_scale.expression == FitConfig().optim.lr_scale.expression
    assert cfg.optim.lr_final_fraction == 0.2 and cfg.texture.free_offset_l2_factor == 0.3
    assert cfg.texture.smooth_reference_side == 64 and cfg.photometric.early_stop_patience == 5
    assert cfg.photometric_coarse.resolution == 96
    with pytest.raises(ConfigError):
        load_config(overrides=["optim.lr_scale.shpe=1"])
