"""Whether numba can be imported: one check for every layer that has numba kernels (model, render, fit)."""

from __future__ import annotations

import functools


@functools.cache
def numba_available() -> bool:
    """Whether numba can be imported (checked once)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True
