"""Each job names its worker for the run spec (``module:attribute``); the run layer resolves only such names and
knows no job by a short name of its own."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("module, constant, cls", [
    ("flamefit.jobs.photo", "FIT_WORKER", "FitWorker"),
    ("flamefit.jobs.photo", "DETECT_WORKER", "DetectWorker"),
    ("flamefit.jobs.track", "WORKER", "TrackWorker"),
    ("flamefit.jobs.texspace", "WORKER", "UnwrapWorker"),
])
def test_a_jobs_worker_name_resolves_to_its_class(module, constant, cls):
    import importlib

    from flamefit.run import RunSpec, make_worker
    from flamefit.run.worker import worker_factory

    mod = importlib.import_module(module)
    name = getattr(mod, constant)
    assert name == f"{module}:{cls}"
    assert worker_factory(name) is getattr(mod, cls)
    worker = make_worker(RunSpec(worker=name))  # built from the spec alone, nothing loaded before setup()
    assert isinstance(worker, getattr(mod, cls))


def test_the_run_layer_knows_no_short_worker_names():
    from flamefit.errors import ConfigError
    from flamefit.run.worker import worker_factory

    with pytest.raises(ConfigError, match="module:attribute"):
        worker_factory("fit")
    with pytest.raises(ConfigError, match="cannot load worker"):
        worker_factory("flamefit.jobs.photo:NoSuchWorker")
