"""flamefit: fit the FLAME head model to photos and videos, in plain PyTorch (CPU and GPU).

Heavy submodules are imported lazily so that ``import flamefit`` and the CLI start fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_flame": "flamefit.model.flame",
    "FlameModel": "flamefit.model.flame",
    "FlameOutput": "flamefit.model.flame",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flamefit' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
