"""What every render module shares: numba availability, the kernel switch, constants, corner-index helpers.

A leaf of the render package (imports only torch, the standard library and the base module ``flamefit._numba``),
so the public ops, their autograd Functions (each next to its op: ``rasterize.RasterBary``,
``shade.VertexNormals``/``SHShading``, ``interpolate.Interpolate``, ``texture.TextureSample``,
``antialias.Composite``/``EdgeBlend``) and the numba kernels (``_pixel_numba``, ``_raster_numba``, ``_aa_numba``)
can all import it without cycles.

The hot paths are written by hand because autograd's generic graph for these few lines spends most of its time
in slice/stack backward copies, zero fills and reductions over tiny axes, not in arithmetic. Layout: per-pixel
quantities are "structure of arrays", (K, N) with N = covered pixels, so every elementwise op runs on
contiguous rows and no reduction runs over a size-3 axis. First-order gradients only (checked against finite
differences in tests/render).
"""

from __future__ import annotations

import math

import torch

from flamefit._numba import numba_available  # noqa: F401 - re-exported for the render modules

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


# ------------------------------------------------------------------------------------------ input validation
# Every public op checks here, on the torch side, whatever a kernel would index with, so that no input can make
# a numba kernel (no bounds checks) read or write out of bounds. Misuse of the library raises ValueError with
# what was wrong; files are validated (with FlamefitError naming the file) where they are loaded.

# Largest image side rasterized (pixels): well above phone photos (4000x3000); beyond it a typo, not an image.
MAX_IMAGE_SIDE_PX = 1 << 15
# Largest |u|, |v| accepted by the texture lookup (a UV layout lies in [0, 1]; wrap mode tiles a few times).
MAX_ABS_UV = 1e6


def check_image_size(height, width, what: str = "image") -> tuple[int, int]:
    """(height, width) as ints in [1, MAX_IMAGE_SIDE_PX], else ValueError."""
    out = []
    for name, v in (("height", height), ("width", width)):
        try:
            iv = int(v)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{what} {name} must be a whole number of pixels, got {v!r}") from None
        if iv != v or not 1 <= iv <= MAX_IMAGE_SIDE_PX:
            raise ValueError(f"{what} {name} must be a whole number of pixels in [1, {MAX_IMAGE_SIDE_PX}], got {v!r}")
        out.append(iv)
    return out[0], out[1]


def check_float(t: torch.Tensor, what: str) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype not in (torch.float32, torch.float64):
        got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{what} must be a float32 or float64 tensor, got {got}")


def check_index(idx: torch.Tensor, upper: int, what: str, of: str) -> None:
    """ValueError unless ``idx`` is an integer tensor with every entry in [0, upper) (``of`` names what it
    indexes, for the message)."""
    if not isinstance(idx, torch.Tensor) or idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        got = idx.dtype if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"{what} must be an integer tensor, got {got}")
    if idx.numel() == 0:
        return
    lo, hi = torch.aminmax(idx.detach())
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi >= upper:
        raise ValueError(f"{what} holds indices in [{lo}, {hi}] but {of} has {upper} entries; every index must "
                         f"be in [0, {upper})")


def check_faces(faces: torch.Tensor, num_verts: int, what: str = "faces", of: str = "the vertex array"
                ) -> torch.Tensor:
    """Faces (F,3) of integers in [0, num_verts) -> int64; else ValueError."""
    if not isinstance(faces, torch.Tensor) or faces.dim() != 2 or faces.shape[1] != 3:
        shape = tuple(faces.shape) if isinstance(faces, torch.Tensor) else type(faces).__name__
        raise ValueError(f"{what} must be an (F,3) integer tensor, got {shape}")
    check_index(faces, num_verts, what, of)
    return faces.to(torch.int64)


def check_frags_faces(frags, faces: torch.Tensor, what: str = "faces") -> None:
    """The faces given with fragments must be the ones rasterized (same count: triangle ids index them)."""
    n = getattr(frags, "num_faces", None)
    if n is not None and faces.shape[0] != n:
        raise ValueError(f"{what} has {faces.shape[0]} faces but the fragments were rasterized from {n}; pass "
                         "faces in the same order as given to rasterize")
