"""Renderer hardening: no input makes a kernel read out of bounds, absurd inputs give a clear ValueError.

The index checks run in a subprocess (``_hardening_cases.py``): without them a numba kernel reads or writes out
of bounds, which can kill the process instead of raising (a texture-space ``vt`` of shape (T,1) did).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flamefit.render import (
    OrthographicCamera,
    PerspectiveCamera,
    camera_from_fov,
    intrinsics_to_opengl_projection,
    look_at,
    project_points,
    rasterize,
)
from flamefit.render._backend import MAX_IMAGE_SIDE_PX, numba_available

CASES = Path(__file__).with_name("_hardening_cases.py")


@pytest.mark.skipif(not numba_available(), reason="numba is not installed (the cases compare both backends)")
def test_bad_indices_and_shapes_raise_valueerror_and_never_crash():
    proc = subprocess.run([sys.executable, str(CASES)], capture_output=True, text=True, timeout=600)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and rows and rows[-1]["case"] == "__end__", (
        f"the cases process died (rc {proc.returncode}) after {rows[-1]['case'] if rows else 'nothing'!r}:\n"
        f"{proc.stderr[-3000:]}")
    rows = rows[:-1]
    assert len(rows) >= 40
    wrong = [r for r in rows if r["outcome"] != r["expect"]]
    assert not wrong, "\n".join(f"{r['case']}: expected {r['expect']}, got {r['outcome']}: {r['message']}"
                                for r in wrong)
    # the messages say what is wrong
    msg = {r["case"]: r["message"] for r in rows}
    assert "[0, 49)" in msg["rasterize faces = V (numba)"]
    assert "(2,N)" in msg["texture uv (1,N) (a vt of shape (T,1))"]
    assert "vt" in msg["render_mesh vt (T,1)"]
    assert "rasterized" in msg["interpolate faces of another mesh"]


@pytest.mark.parametrize("fov", [0.0, -0.1, math.pi, 4.0, math.nan, math.inf])
def test_camera_from_fov_rejects_absurd_fields_of_view(fov):
    with pytest.raises(ValueError, match="field of view"):
        camera_from_fov(fov, 64, 64)


@pytest.mark.parametrize("size", [(0, 64), (64, 0), (-3, 64), (MAX_IMAGE_SIDE_PX + 1, 64), (64.5, 64)])
def test_zero_or_absurd_image_sizes_are_rejected(size):
    with pytest.raises(ValueError, match="pixels"):
        camera_from_fov(0.5, *size)
    with pytest.raises(ValueError, match="pixels"):
        intrinsics_to_opengl_projection(torch.eye(3)[None], *size)
    v = torch.rand(1, 3, 3)
    with pytest.raises(ValueError, match="pixels"):
        rasterize(v, torch.tensor([[0, 1, 2]]), *size)


def _K(fx, fy=500.0):
    return torch.tensor([[[fx, 0.0, 32.0], [0.0, fy, 32.0], [0.0, 0.0, 1.0]]])


@pytest.mark.parametrize("fx,fy", [(0.0, 500.0), (-500.0, 500.0), (500.0, 0.0), (math.inf, 500.0),
                                   (math.nan, 500.0)])
def test_perspective_camera_rejects_zero_negative_or_non_finite_focal(fx, fy):
    with pytest.raises(ValueError, match="PerspectiveCamera"):
        PerspectiveCamera(K=_K(fx, fy), R=torch.eye(3)[None], t=torch.zeros(1, 3), height=64, width=64)


def test_camera_rejects_non_finite_pose_and_bad_shapes():
    with pytest.raises(ValueError, match="t holds NaN"):
        PerspectiveCamera(K=_K(500.0), R=torch.eye(3)[None], t=torch.tensor([[0.0, math.nan, 1.0]]), height=64,
                          width=64)
    with pytest.raises(ValueError, match=r"K must be \(B,3,3\)"):
        PerspectiveCamera(K=torch.eye(2)[None], R=torch.eye(3)[None], t=torch.zeros(1, 3), height=64, width=64)
    for scale in (0.0, -2.0, math.inf):
        with pytest.raises(ValueError, match="scale"):
            OrthographicCamera(scale=torch.tensor([[scale]]), translation=torch.zeros(1, 2), R=torch.eye(3)[None],
                               height=64, width=64)
    # a valid camera still builds, with python int sizes
    cam = PerspectiveCamera(K=_K(500.0), R=torch.eye(3)[None], t=torch.zeros(1, 3), height=64.0, width=64)
    assert cam.height == 64 and isinstance(cam.height, int)


def test_opengl_projection_and_look_at_reject_degenerate_input():
    K = _K(500.0)
    with pytest.raises(ValueError, match="near < far"):
        intrinsics_to_opengl_projection(K, 64, 64, near=1.0, far=1.0)
    with pytest.raises(ValueError, match="near < far"):
        intrinsics_to_opengl_projection(K, 64, 64, near=0.0, far=10.0)
    eye = torch.tensor([[0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="look_at"):
        look_at(eye, eye.clone())
    with pytest.raises(ValueError, match="look_at"):
        look_at(eye, torch.tensor([[0.0, 1.0, 1.0]]), up=torch.tensor([[0.0, 1.0, 0.0]]))


def test_points_at_or_behind_the_camera_project_finite_and_are_not_drawn():
    K = _K(500.0)
    pts = torch.tensor([[[0.0, 0.0, 0.0], [0.1, 0.0, -1.0], [0.0, 0.1, 1e-12]]])
    assert torch.isfinite(project_points(pts, K)).all()
    cam = PerspectiveCamera(K=K, R=torch.eye(3)[None], t=torch.zeros(1, 3), height=64, width=64)
    tri = torch.tensor([[[-0.1, -0.1, -1.0], [0.1, -0.1, -1.0], [0.0, 0.1, 2.0]]])  # two corners behind
    frags = rasterize(cam.project(tri), torch.tensor([[0, 1, 2]]), 64, 64, perspective_correct=True)
    assert not frags.mask.any()
