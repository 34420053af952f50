"""What every render module shares: numba availability, the kernel switch, constants, corner-index helpers.

A leaf of the render package (imports only torch and the standard library), so the public ops, their autograd
Functions (each next to its op: ``rasterize.RasterBary``, ``shade.VertexNormals``/``SHShading``,
``interpolate.Interpolate``, ``texture.TextureSample``, ``antialias.Composite``/``EdgeBlend``) and the numba
kernels (``_pixel_numba``, ``_raster_numba``, ``_aa_numba``) can all import it without cycles.

The hot paths are written by hand because autograd's generic graph for these few lines spends most of its time
in slice/stack backward copies, zero fills and reductions over tiny axes, not in arithmetic. Layout: per-pixel
quantities are "structure of arrays", (K, N) with N = covered pixels, so every elementwise op runs on
contiguous rows and no reduction runs over a size-3 axis. First-order gradients only (checked against finite
differences in tests/render).
"""

from __future__ import annotations

import functools
import math

import torch

# Use the numba kernels for CPU tensors (tests switch this off to check the torch path against them).
NUMBA_KERNELS = True

# The SH constants of shade.py (DECA's order-2 basis with the Lambertian factors folded in); here so that the
# numba kernels can use them without importing shade.py.
SH_CONSTANTS = (
    1.0 / math.sqrt(4 * math.pi),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * (3 / 2) * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * (1 / 2) * math.sqrt(5 / (4 * math.pi)),
)


@functools.cache
def numba_available() -> bool:
    """Whether numba can be imported (checked once)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def numba_for(t: torch.Tensor) -> bool:
    """Whether the per-pixel numba kernels should run for this tensor (CPU float32/float64, switch on)."""
    if not NUMBA_KERNELS or t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
        return False
    return numba_available()


def corner_index(faces: torch.Tensor, batch: int, num_verts: int) -> torch.Tensor:
    """(F,3) faces -> (3, B*F) flat vertex index (into B*V) of corner k of every face of every image."""
    idx = faces.t().unsqueeze(1) + (torch.arange(batch, device=faces.device) * num_verts).view(1, -1, 1)
    return idx.reshape(3, batch * faces.shape[0])


def gather_corners(verts: torch.Tensor, cidx: torch.Tensor) -> torch.Tensor:
    """verts (B,V,3), cidx (3,M) -> (3 coords, 3 corners, M) contiguous."""
    vt = verts.reshape(-1, 3).t()  # (3, B*V) strided view; index_select copes
    return vt.index_select(1, cidx.reshape(-1)).view(3, 3, cidx.shape[1])


def scatter_corners(g: torch.Tensor, cidx: torch.Tensor, shape) -> torch.Tensor:
    """Adjoint of :func:`gather_corners`: g (3,3,M) -> (B,V,3)."""
    B, V, _ = shape
    out = g.new_zeros(3, B * V).index_add_(1, cidx.reshape(-1), g.reshape(3, -1))
    return out.t().reshape(B, V, 3)
