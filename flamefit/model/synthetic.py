"""A small random model in FLAME's file formats, for tests and demos without FLAME's (licensed) files.

The mesh is a coarse head sphere plus two eyeballs, with FLAME's 5 joints, smooth skinning weights and
random shape/expression/pose-corrective bases. It is written exactly like the real files: a pickled dict of
numpy arrays with a scipy ``csc_matrix`` regressor (FLAME 2023 layout) or, with ``chumpy=True``, a protocol-2
pickle whose arrays are ``chumpy.ch.Ch`` objects (FLAME 2020 layout; chumpy itself is not needed to write it).
"""

from __future__ import annotations

import copyreg
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse


def _uv_sphere(n_lat: int, n_lon: int, radius: float, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    verts = [[0.0, radius, 0.0]]
    for i in range(1, n_lat):
        theta = np.pi * i / n_lat
        for j in range(n_lon):
            phi = 2 * np.pi * j / n_lon
            verts.append([radius * np.sin(theta) * np.sin(phi), radius * np.cos(theta),
                          radius * np.sin(theta) * np.cos(phi)])
    verts.append([0.0, -radius, 0.0])
    verts = np.asarray(verts) + center
    faces = []
    for j in range(n_lon):  # top cap
        faces.append([0, 1 + j, 1 + (j + 1) % n_lon])
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a = 1 + i * n_lon + j
            b = 1 + i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [[a, c, d], [a, d, b]]
    last = len(verts) - 1
    base = 1 + (n_lat - 2) * n_lon
    for j in range(n_lon):
        faces.append([last, base + (j + 1) % n_lon, base + j])
    return verts, np.asarray(faces)


def synthetic_flame_dict(seed: int = 0, n_shape: int = 20, n_expr: int = 10) -> dict:
    """The arrays of a random FLAME-format model (float64, FLAME's key names and joint layout)."""
    rng = np.random.default_rng(seed)
    head_v, head_f = _uv_sphere(12, 20, 0.09, np.array([0.0, 0.0, 0.0]))
    eye_l, eye_f = _uv_sphere(4, 6, 0.012, np.array([0.03, 0.02, 0.075]))
    eye_r, _ = _uv_sphere(4, 6, 0.012, np.array([-0.03, 0.02, 0.075]))
    verts = np.concatenate([head_v, eye_l, eye_r])
    n_head, n_eye = len(head_v), len(eye_l)
    faces = np.concatenate([head_f, eye_f + n_head, eye_f + n_head + n_eye]).astype(np.uint32)
    n_v = len(verts)
    # Joints as FLAME: root, neck, jaw, left eye, right eye; regressed from nearby vertices.
    joint_pos = np.array([[0, -0.02, 0], [0, -0.06, -0.01], [0, -0.02, 0.02], [0.03, 0.02, 0.075],
                          [-0.03, 0.02, 0.075]])
    reg = np.zeros((5, n_v))
    for j, p in enumerate(joint_pos):
        pool = slice(n_head, n_head + n_eye) if j == 3 else slice(n_head + n_eye, n_v) if j == 4 else slice(0, n_head)
        d = np.linalg.norm(verts[pool] - p, axis=1)
        w = np.exp(-((d / d.min()) ** 2))
        idx = np.argsort(d)[:6]
        row = np.zeros(d.shape)
        row[idx] = w[idx]
        reg[j, pool] = row / row.sum()
    # Skinning weights: eyes rigid to their joint; head blends neck (low), jaw (low front) and root.
    weights = np.zeros((n_v, 5))
    y, z = head_v[:, 1], head_v[:, 2]
    jaw = np.clip((-y - 0.01) / 0.05, 0, 1) * np.clip((z + 0.02) / 0.05, 0, 1)
    neck = np.clip((-y - 0.05) / 0.04, 0, 1) * (1 - jaw)
    weights[:n_head, 2] = jaw
    weights[:n_head, 1] = neck
    weights[:n_head, 0] = 1 - jaw - neck
    weights[n_head:n_head + n_eye, 3] = 1
    weights[n_head + n_eye:, 4] = 1
    smooth = np.concatenate([verts, verts ** 2, np.ones((n_v, 1))], axis=1)  # smooth fields on the mesh
    shapedirs = np.einsum("vk,kcm->vcm", smooth, rng.normal(scale=0.004, size=(7, 3, n_shape + n_expr)))
    posedirs = np.einsum("vk,kcm->vcm", smooth, rng.normal(scale=0.002, size=(7, 3, 36)))
    return {
        "v_template": verts,
        "f": faces,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "weights": weights,
        "J_regressor": scipy.sparse.csc_matrix(reg),
        "J": reg @ verts,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "n_shape": n_shape,  # not in real files; lets tests know the split
    }


def write_synthetic_flame(path: str | Path, seed: int = 0, chumpy: bool = False, n_shape: int = 20,
                          n_expr: int = 10) -> Path:
    """Write a synthetic model file; with ``chumpy=True`` in the FLAME 2020 chumpy layout.

    The expression split follows FLAME's convention (the last 100 directions are expressions), so the
    file holds ``n_shape`` identity directions followed by 100 expression directions, ``n_expr`` of them
    non-zero.
    """
    d = synthetic_flame_dict(seed, n_shape, n_expr)
    d.pop("n_shape")
    sd = d["shapedirs"]
    expr = np.zeros((sd.shape[0], 3, 100))
    expr[:, :, :n_expr] = sd[:, :, n_shape:]
    d["shapedirs"] = np.concatenate([sd[:, :, :n_shape], expr], axis=2)
    path = Path(path)
    if not chumpy:
        with open(path, "wb") as fh:
            pickle.dump(d, fh, protocol=4)
        return path
    # Fake just enough of a `chumpy.ch.Ch` class for pickle to reference it by name.
    module = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

        def __reduce_ex__(self, protocol):
            return (copyreg.__newobj__, (Ch,), {"x": self.x, "_dirty_vars": set(["x"]), "_itr": None})

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch = Ch
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    sys.modules["chumpy.ch"] = module
    try:
        for key in ("v_template", "shapedirs", "posedirs", "weights", "J"):
            d[key] = Ch(d[key])
        with open(path, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return path

