"""Renderer tests: make the small mesh helpers (render_meshes.py) importable under --import-mode=importlib."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(params=["numba", "torch"])
def kernels(request, monkeypatch):
    """Run a test with the numba per-pixel kernels (CPU default) and with the pure-torch ones (CUDA path)."""
    ops = importlib.import_module("flamefit.render._backend")
    if request.param == "numba":
        from flamefit.render._backend import numba_available as _numba_available

        if not _numba_available():
            pytest.skip("numba is not installed")
        monkeypatch.setattr(ops, "NUMBA_KERNELS", True)
    else:
        monkeypatch.setattr(ops, "NUMBA_KERNELS", False)
    return request.param
