"""The run-layer tests' light workers (flamefit_test_workers.py, here) importable in spawned processes and Ray
actors for every test of this folder; the shared Ray session and the stand-in paths are in tests/conftest.py."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _test_workers_importable(run_test_workers_importable):
    yield
