"""--device / --threads validation and the threads policy (flamefit/commands/_options.py)."""

from __future__ import annotations

import pytest
import torch

from flamefit.bench.common import threads_info
from flamefit.commands._options import ENV_THREADS, resolve_threads, setup_torch
from flamefit.errors import ConfigError


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("device", ["banana", "gpu", "cuda:x", "cuda:-1", ""])
def test_bad_device_names_valid_forms(device):
    with pytest.raises(ConfigError, match="valid forms: cpu, cuda, cuda:N"):
        setup_torch(device, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when no GPU is visible")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_gpu_says_use_cpu(device):
    with pytest.raises(ConfigError, match="no CUDA device is visible.*use --device cpu"):
        setup_torch(device, 1)


@pytest.mark.parametrize("threads", [-1, 0, "0", "-3", "many", 10**6, "1.5"])
def test_bad_threads(threads):
    with pytest.raises(ConfigError, match="threads"):
        setup_torch("cpu", threads)


def test_default_is_one_thread(monkeypatch, restore_threads):
    monkeypatch.delenv(ENV_THREADS, raising=False)
    torch.set_num_threads(2)
    assert setup_torch("cpu", None) == torch.device("cpu")
    assert torch.get_num_threads() == 1
    assert threads_info()["threads"] == 1


def test_env_and_flag_order(monkeypatch, restore_threads):
    monkeypatch.setenv(ENV_THREADS, "2")
    assert resolve_threads(None) == 2
    assert resolve_threads("3") == 3  # the flag wins
    setup_torch("CPU", None)
    assert torch.get_num_threads() == 2
    monkeypatch.setenv(ENV_THREADS, "auto")
    assert resolve_threads(None) is None  # torch's own default, left alone
    monkeypatch.setenv(ENV_THREADS, "-1")
    with pytest.raises(ConfigError, match=r"\$FLAMEFIT_THREADS"):
        resolve_threads(None)


def test_bench_prints_threads_and_load(capsys, monkeypatch, synthetic_model_path, restore_threads):
    import json

    from flamefit.cli import main

    monkeypatch.delenv(ENV_THREADS, raising=False)
    torch.set_num_threads(2)
    assert main(["bench", "model", "--flame", str(synthetic_model_path), "--repeats", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)  # stdout stays one JSON object
    assert report["environment"]["threads"] == 1  # the default policy was applied before the benchmark ran
    assert "loadavg_1_5_15min" in report["environment"]
    assert "bench: threads 1 (of" in err and "load average" in err
    assert main(["bench", "--threads", "2", "model", "--flame", str(synthetic_model_path), "--repeats", "1"]) == 0
    assert "bench: threads 2 (of" in capsys.readouterr().err
