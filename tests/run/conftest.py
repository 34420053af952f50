"""Fixtures for the run-layer tests: ONE Ray session shared by the whole test run (starting Ray costs ~12 s),
the light test workers importable in spawned processes and Ray actors, and the stand-in model's paths."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session", autouse=True)
def _test_workers_importable():
    """Spawned pool processes inherit sys.path; Ray workers inherit $PYTHONPATH from the driver's Ray start."""
    sys.path.insert(0, str(HERE))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *([old] if old else [])])
    yield
    sys.path.remove(str(HERE))
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="session")
def ray_session(_test_workers_importable):
    """A local Ray with 2 CPUs for the whole session (RayExecutor reuses an initialised Ray)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'flamefit[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def standin_assets(shared_assets):
    """Explicit asset paths of the stand-in model (for RunSpec.assets)."""
    return {
        "flame": str(shared_assets / "flame_standin" / "standin_flame2023.pkl"),
        "texture_space": str(shared_assets / "flame_standin" / "standin_texture.npz"),
        "landmarks_static": str(shared_assets / "flame_landmarks" / "flame_static_embedding.pkl"),
        "landmarks_dynamic": str(shared_assets / "flame_landmarks" / "flame_dynamic_embedding.npy"),
    }
