"""The 68-point map: flamefit's own definition from MediaPipe's topology, its properties, its accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flamefit.observe import topology
from flamefit.observe.mp68 import _TABLE, GROUPS_68, MP_TO_68, dense_to_68, derive_mp_to_68, load_canonical_face

# iBUG mirror pairs (left <-> right as seen in the image)
_MIRROR = np.array([16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
                    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
                    27, 28, 29, 30, 35, 34, 33, 32, 31,
                    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
                    64, 63, 62, 61, 60, 67, 66, 65])


@pytest.fixture(scope="module")
def canonical(shared_assets):
    return load_canonical_face(shared_assets / "mediapipe_face" / "face_model_with_iris.obj")


def test_weights_are_convex_combinations_of_neighbours():
    assert MP_TO_68.shape == (68, 478)
    np.testing.assert_allclose(MP_TO_68.sum(axis=1), 1.0, atol=1e-12)
    assert (MP_TO_68 >= 0).all()
    assert ((MP_TO_68 > 0).sum(axis=1) <= 3).all()
    assert not MP_TO_68[:, 468:].any()  # the iris points are not used
    assert not MP_TO_68.flags.writeable


def test_table_is_reproduced_from_mediapipe_topology(canonical):
    pytest.importorskip("mediapipe")
    assert derive_mp_to_68(canonical) == _TABLE


def test_definition_is_mirror_symmetric_and_semantic(canonical):
    xy = canonical[:, :2] * (1, -1)  # frontal image view of the canonical face: x right, y down
    p = dense_to_68(xy)
    np.testing.assert_allclose(p[:, 0], -p[_MIRROR, 0], atol=1e-3)
    np.testing.assert_allclose(p[:, 1], p[_MIRROR, 1], atol=1e-3)
    assert np.argmax(p[:17, 1]) == 8  # the chin is the lowest jaw point
    assert p[36, 0] < p[39, 0] < p[42, 0] < p[45, 0]  # eye corners left to right
    assert p[37, 1] < p[41, 1] and p[43, 1] < p[47, 1]  # upper lids above lower lids
    assert p[19, 1] < p[37, 1]  # brows above eyes
    assert p[27, 1] < p[30, 1] < p[33, 1] < p[51, 1] < p[62, 1] < p[66, 1] < p[57, 1] < p[8, 1]
    assert p[48, 0] < p[60, 0] and p[64, 0] < p[54, 0]  # inner mouth corners inside the outer ones


def test_close_to_the_reference_correspondence(canonical, shared_assets):
    """Our definition and Peizhi Yan's MIT table agree on the canonical face (within 10% of the eye distance)."""
    ref = json.loads((shared_assets / "mediapipe_to_68" / "mp2dlib68.json").read_text())["mp_indices_per_dlib68"]
    ours = dense_to_68(canonical)
    theirs = np.array([canonical[idx].mean(0) for idx in ref])
    iod = np.linalg.norm(ours[36] - ours[45])
    d = np.linalg.norm(ours - theirs, axis=1) / iod
    assert np.median(d) < 0.05
    for name, sl in GROUPS_68.items():
        assert d[sl].mean() < 0.15, name


def test_dense_to_68_numpy_and_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(2, 3, 478, 2))
    out = dense_to_68(pts)
    assert out.shape == (2, 3, 68, 2) and out.dtype == np.float64
    np.testing.assert_allclose(out[1, 2], MP_TO_68 @ pts[1, 2])
    assert dense_to_68(pts.astype(np.float32)).dtype == np.float32
    t = torch.tensor(pts, dtype=torch.float32, requires_grad=True)
    out_t = dense_to_68(t)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.detach().numpy(), out, rtol=1e-5, atol=1e-5)
    out_t.sum().backward()
    np.testing.assert_allclose(t.grad[0, 0, :, 0].numpy(), MP_TO_68.sum(axis=0), atol=1e-6)
    assert dense_to_68(torch.zeros(478, 3, dtype=torch.float64)).shape == (68, 3)  # 3D model points too
    with pytest.raises(ValueError):
        dense_to_68(np.zeros((468, 2)))


def test_topology_loops_follow_mediapipe_connections():
    conn = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")
    sets = {
        "face_oval": conn.FACEMESH_FACE_OVAL,
        "right_eye": conn.FACEMESH_RIGHT_EYE,
        "left_eye": conn.FACEMESH_LEFT_EYE,
        "lips_outer": conn.FACEMESH_LIPS,
        "lips_inner": conn.FACEMESH_LIPS,
    }
    for name, edges in sets.items():
        undirected = {frozenset(e) for e in edges}
        loop = topology.CONTOURS[name]
        for a, b in zip(loop, loop[1:] + loop[:1], strict=True):
            assert frozenset((a, b)) in undirected, (name, a, b)
    for name, edges in (("right_brow", conn.FACEMESH_RIGHT_EYEBROW), ("left_brow", conn.FACEMESH_LEFT_EYEBROW)):
        verts = {v for e in edges for v in e}
        assert set(topology.CONTOURS[name]) == verts
