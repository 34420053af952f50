"""Small meshes for the renderer tests (no assets needed)."""

from __future__ import annotations

import math

import numpy as np
import torch


def icosphere(subdivisions: int = 2, radius: float = 1.0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed unit-ish sphere, outward-facing (counter-clockwise seen from outside)."""
    t = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11),
             (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    v = [np.array(p, dtype=np.float64) / np.linalg.norm(p) for p in verts]

    def mid(a: int, b: int, cache: dict[tuple[int, int], int]) -> int:
        key = (min(a, b), max(a, b))
        if key not in cache:
            m = v[a] + v[b]
            v.append(m / np.linalg.norm(m))
            cache[key] = len(v) - 1
        return cache[key]

    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}
        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b, cache), mid(b, c, cache), mid(c, a, cache)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    return torch.tensor(np.array(v) * radius, dtype=dtype), torch.tensor(faces, dtype=torch.int64)


def random_soup(n_faces: int, height: int, width: int, seed: int = 0, dtype=torch.float64,
                size_px: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent random triangles in pixel space with depths in [1, 3] -> verts_px (1,3F,3), faces (F,3)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n_faces, 1, 2, generator=g, dtype=dtype) * torch.tensor([width, height], dtype=dtype)
    offsets = (torch.rand(n_faces, 3, 2, generator=g, dtype=dtype) - 0.5) * size_px
    xy = centres + offsets
    z = 1.0 + 2.0 * torch.rand(n_faces, 3, 1, generator=g, dtype=dtype)
    verts = torch.cat([xy, z], -1).reshape(1, -1, 3)
    faces = torch.arange(3 * n_faces).view(n_faces, 3)
    return verts, faces


def standin_mesh(path) -> tuple[torch.Tensor, torch.Tensor]:
    import pickle

    with open(path, "rb") as fh:
        data = pickle.load(fh)
    verts = torch.tensor(np.asarray(data["v_template"]), dtype=torch.float32)
    faces = torch.tensor(np.asarray(data["f"]).astype(np.int64))
    return verts, faces
