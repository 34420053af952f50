"""The CLI's error contract: every bad input gives ONE line on stderr and the documented exit code, never a
traceback (issue 8 section 4), run in-process through flamefit.cli.main."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from flamefit import errors
from flamefit.cli import main
from flamefit.model.synthetic import synthetic_flame_dict


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    path = tmp_path / "face.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(path)
    return path


@pytest.fixture
def bad_files(tmp_path):
    d = synthetic_flame_dict()
    d["v_template"] = "not an array"
    (tmp_path / "str_vt.pkl").write_bytes(pickle.dumps(d, protocol=2))
    loop: list = []
    loop.append(loop)
    (tmp_path / "recursive.pkl").write_bytes(pickle.dumps({"v_template": loop}, protocol=2))
    np.savez(tmp_path / "object.npz", mean=np.array([{"a": 1}], dtype=object), tex_dir=np.zeros((1, 1, 3, 1)))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "vt_t1.npz", mean=np.zeros((4, 4, 3)), tex_dir=np.zeros((4, 4, 3, 1)),
             vt=rng.uniform(0, 1, (5, 1)), ft=np.zeros((3, 3), np.int64))
    (tmp_path / "latin1.yaml").write_bytes("photometric:\n  iters: 5 # caf\xe9\n".encode("latin-1"))
    return tmp_path


def run_cli(capsys, args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err, *fragments):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case, code, fragment", [
    ("model info str_vt.pkl", errors.EXIT_MODEL_FILE, "'v_template' is a str"),
    ("model info recursive.pkl", errors.EXIT_MODEL_FILE, "refer to themselves"),
    ("fit IMG --texture-space object.npz", errors.EXIT_MODEL_FILE, "holds Python objects"),
    ("fit IMG --texture-space vt_t1.npz", errors.EXIT_MODEL_FILE, "vt has shape (5, 1)"),
    ("fit IMG --config latin1.yaml", errors.EXIT_USAGE, "is not UTF-8"),
    ("fit IMG --set camera.fov_deg=200", errors.EXIT_USAGE, "`camera.fov_deg` = 200"),
    ("fit IMG --device banana", errors.EXIT_USAGE, "valid forms: cpu, cuda, cuda:N"),
    ("fit IMG --threads -1", errors.EXIT_USAGE, "--threads"),
    ("fit IMG --threads 0", errors.EXIT_USAGE, "--threads"),
    ("bench --threads -1 model", errors.EXIT_USAGE, "--threads"),
    ("fit IMG --no-such-option", errors.EXIT_USAGE, "--no-such-option"),
    ("model info missing.pkl", errors.EXIT_MODEL_FILE, "missing.pkl"),
])
def test_bad_inputs_give_one_line_and_the_documented_code(capsys, tmp_path, bad_files, image, synthetic_model_path,
                                                          case, code, fragment):
    args = []
    for word in case.split():
        if word == "IMG":
            args.append(image)
        elif word.endswith((".pkl", ".npz", ".yaml")):
            args.append(bad_files / word)
        else:
            args.append(word)
    if args[0] == "fit":
        args += ["--flame", synthetic_model_path, "--out", tmp_path / "out", "--no-progress"]
    got, _, err = run_cli(capsys, args)
    assert got == code, err
    assert_one_line_error(err, fragment)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when no GPU is visible")
def test_cuda_without_gpu(capsys, tmp_path, image, synthetic_model_path):
    code, _, err = run_cli(capsys, ["fit", image, "--device", "cuda", "--flame", synthetic_model_path,
                                    "--out", tmp_path / "out", "--no-progress"])
    assert code == errors.EXIT_USAGE
    assert_one_line_error(err, "no CUDA device is visible", "--device cpu")


def test_unexpected_exception_is_one_line_with_distinct_code(capsys, monkeypatch, synthetic_model_path):
    import flamefit.model.flame_file as flame_file

    def boom(*_a, **_k):
        raise RuntimeError("something\ninternal broke")

    monkeypatch.setattr(flame_file, "read_flame_file", boom)
    code, _, err = run_cli(capsys, ["model", "info", synthetic_model_path])
    assert code == errors.EXIT_INTERNAL == 70
    assert_one_line_error(err, "unexpected error (RuntimeError: something internal broke)", "--debug")
    with pytest.raises(RuntimeError):  # --debug lets the traceback through
        main(["--debug", "model", "info", str(synthetic_model_path)])


def test_exit_codes_are_distinct_and_documented():
    classes = [errors.FlamefitError, errors.ConfigError, errors.ModelFileError, errors.UnsafePickleError,
               errors.InputImageError, errors.VideoError, errors.FaceNotFound, errors.NotYetImplemented,
               errors.ItemsFailed, errors.OutputPathError]
    for cls in classes:
        assert cls.exit_code in errors.EXIT_CODES, cls
        assert str(cls.exit_code) in errors.__doc__
    assert errors.EXIT_INTERNAL not in {c.exit_code for c in classes}
    assert len(set(errors.EXIT_CODES)) == len(errors.EXIT_CODES)


def test_landmark_embedding_beyond_the_mesh(capsys, tmp_path, image, synthetic_model_path):
    static = {"lmk_face_idx": np.full(51, 10**6), "lmk_b_coords": np.full((51, 3), 1 / 3)}
    (tmp_path / "static.pkl").write_bytes(pickle.dumps(static, protocol=2))
    dynamic = {"lmk_face_idx": list(np.zeros((79, 17), np.int64)), "lmk_b_coords": list(np.full((79, 17, 3), 1 / 3))}
    np.save(tmp_path / "dynamic.npy", np.array(dynamic, dtype=object), allow_pickle=True)
    code, _, err = run_cli(capsys, ["fit", image, "--flame", synthetic_model_path, "--landmarks-static",
                                    tmp_path / "static.pkl", "--landmarks-dynamic", tmp_path / "dynamic.npy",
                                    "--out", tmp_path / "out", "--no-progress"])
    assert code == errors.EXIT_MODEL_FILE, err
    assert_one_line_error(err, "static.pkl", "face indices span 1000000 to 1000000, but the model has 512 faces")


README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_setup_installs_what_the_test_command_needs():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    setup = next(b for b in blocks if "pip install" in b)
    install = next(line for line in setup.splitlines() if "pip install -e" in line)
    extras = re.search(r"-e \"?\.\[([a-z,]+)\]", install)
    assert extras and "test" in extras.group(1).split(","), install  # plain `-e .` lacks pytest
    assert any("python -m pytest" in b for b in blocks)
    pyproject = tomllib.loads((README.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert any(dep.startswith("pytest") for dep in pyproject["project"]["optional-dependencies"]["test"])


def test_readme_exit_code_table_matches_errors_module():
    section = README.read_text(encoding="utf-8").split("### Errors and exit codes", 1)[1]
    codes = {int(c) for c in re.findall(r"^\| (\d+) \| ", section, flags=re.M)}
    assert codes == set(errors.EXIT_CODES)


@pytest.mark.parametrize("bench", ["model", "render", "fit"])
def test_every_bench_validates_threads_and_device(capsys, bench):
    code, _, err = run_cli(capsys, ["bench", bench, "--threads", "-3"])
    assert code == errors.EXIT_USAGE
    assert_one_line_error(err, "--threads")
    code, _, err = run_cli(capsys, ["bench", bench, "--device", "banana"])
    assert code == errors.EXIT_USAGE
    assert_one_line_error(err, "valid forms")
    if not torch.cuda.is_available():
        code, _, err = run_cli(capsys, ["bench", bench, "--device", "cuda"])
        assert code == errors.EXIT_USAGE
        assert_one_line_error(err, "no CUDA device is visible")


@pytest.mark.parametrize("text, fragment", [
    ("paths = 3\n", "`paths` must be a table"),
    ("[paths]\nflame = 5\n", "[paths] flame must be a path string"),
    ("[paths\n", "invalid TOML config file"),
])
def test_bad_user_config_file(capsys, monkeypatch, tmp_path, text, fragment):
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    monkeypatch.setenv("FLAMEFIT_CONFIG", str(cfg))
    code, _, err = run_cli(capsys, ["model", "info"])
    assert code == errors.EXIT_USAGE
    assert_one_line_error(err, "config.toml", fragment)


def test_no_arguments_shows_help(capsys):
    code, out, err = run_cli(capsys, [])
    assert code == 0 and out.startswith("Usage: flamefit") and "Commands:" in out and not err
