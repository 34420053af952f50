"""Shared fixtures: where the development assets (``../shared/assets``) are, and a tiny synthetic model; for the
run-layer and job tests (tests/run, tests/jobs) ONE Ray session shared by the whole test run (starting Ray costs
~12 s), the light test workers of tests/run importable in spawned processes and Ray actors, and the stand-in model's
paths.

Set ``FLAMEFIT_SHARED_ASSETS`` to point elsewhere. Tests that need the real assets skip with a reason
when they are absent (a fresh clone without ``../shared``); everything else runs on synthetic data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_assets_dir() -> Path | None:
    env = os.environ.get("FLAMEFIT_SHARED_ASSETS")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "assets"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_assets() -> Path:
    path = shared_assets_dir()
    if path is None:
        pytest.skip(
            "needs the development assets in ../shared/assets (stand-in FLAME model, images); "
            "set FLAMEFIT_SHARED_ASSETS to their folder"
        )
    return path


@pytest.fixture(scope="session")
def standin_2023(shared_assets: Path) -> Path:
    return shared_assets / "flame_standin" / "standin_flame2023.pkl"


@pytest.fixture(scope="session")
def standin_2020(shared_assets: Path) -> Path:
    return shared_assets / "flame_standin" / "standin_flame2020_chumpy.pkl"


@pytest.fixture(scope="session")
def synthetic_model_path(tmp_path_factory) -> Path:
    """A small random model in the FLAME 2023 file format (works without ../shared)."""
    from flamefit.model.synthetic import write_synthetic_flame

    path = tmp_path_factory.mktemp("synthetic") / "synthetic_flame2023.pkl"
    write_synthetic_flame(path, seed=0)
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_user_dirs(tmp_path_factory):
    """Keep tests away from the developer's config, data and cache folders (and from leaving files there)."""
    root = tmp_path_factory.mktemp("user_dirs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLAMEFIT_CONFIG", str(root / "config.toml"))
        mp.setenv("FLAMEFIT_DATA_DIR", str(root / "data"))
        mp.setenv("FLAMEFIT_CACHE_DIR", str(root / "cache"))
        for var in ("FLAMEFIT_FLAME_MODEL", "FLAMEFIT_TEXTURE_SPACE", "FLAMEFIT_UV_LAYOUT",
                    "FLAMEFIT_LANDMARKS_STATIC", "FLAMEFIT_LANDMARKS_DYNAMIC", "FLAMEFIT_FACE_LANDMARKER",
                    "FLAMEFIT_NO_SHIPPED_ASSETS"):
            mp.delenv(var, raising=False)
        yield


@pytest.fixture(scope="session")
def standin(shared_assets: Path):
    """(FlameModel, RingNet Landmarks68, TextureSpace) of the stand-in: loaded once for every test that fits."""
    from flamefit.model.flame import FlameModel
    from flamefit.model.flame_file import read_flame_file
    from flamefit.model.landmarks import load_ringnet_68
    from flamefit.model.texture_space import load_texture_space

    model = FlameModel(read_flame_file(shared_assets / "flame_standin" / "standin_flame2023.pkl"))
    lmk = load_ringnet_68(shared_assets / "flame_landmarks" / "flame_static_embedding.pkl",
                          shared_assets / "flame_landmarks" / "flame_dynamic_embedding.npy")
    ts = load_texture_space(shared_assets / "flame_standin" / "standin_texture.npz")
    return model, lmk, ts


RUN_TEST_WORKERS = Path(__file__).resolve().parent / "run"  # flamefit_test_workers.py


@pytest.fixture(scope="session")
def run_test_workers_importable():
    """Spawned pool processes inherit sys.path; Ray workers inherit $PYTHONPATH from the driver's Ray start."""
    import sys

    sys.path.insert(0, str(RUN_TEST_WORKERS))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(RUN_TEST_WORKERS), *([old] if old else [])])
    yield
    sys.path.remove(str(RUN_TEST_WORKERS))
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="session")
def ray_session(run_test_workers_importable):
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
