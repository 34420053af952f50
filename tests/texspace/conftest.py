"""Fixtures of the texture-space pipeline tests: synthetic photos (stand-in model, albedos from a made-up space)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# fit settings small enough for CI (about a second per photo); the pipeline's behaviour does not depend on them
TINY_FIT = ("texture.light=sh9", "resolution=96", "n_shape=20", "n_expr=10", "rigid.iters=5", "landmarks.iters=10",
            "appearance.iters=3", "photometric.iters=4", "offset.iters=2", "texture.fit_resolution=64",
            "texture.free_resolution=32")


@pytest.fixture(scope="session")
def tiny_fit() -> tuple[str, ...]:
    return TINY_FIT


def assets_paths(shared: Path) -> dict:
    return {"flame": shared / "flame_standin" / "standin_flame2023.pkl",
            "start": shared / "flame_standin" / "standin_texture.npz",
            "static": shared / "flame_landmarks" / "flame_static_embedding.pkl",
            "dynamic": shared / "flame_landmarks" / "flame_dynamic_embedding.npy"}


@pytest.fixture(scope="session")
def synthetic_photos(shared_assets, tmp_path_factory):
    """4 renders of the stand-in with albedos from a made-up 6-component space, their detections, and one file
    that is not an image."""
    from flamefit.texspace.synthetic import make_synthetic_space
    from flamefit.texspace.synthetic_photos import render_photos

    a = assets_paths(shared_assets)
    root = tmp_path_factory.mktemp("texspace_photos")
    with np.load(a["start"]) as d:
        vt, ft = d["vt"], d["ft"].astype(np.int64)
    space = make_synthetic_space(vt, ft, 64, 6, seed=1)
    space.save(root / "true.npz")
    rows = render_photos(root, root / "true.npz", 4, flame=a["flame"], landmarks_static=a["static"],
                         landmarks_dynamic=a["dynamic"], height=160, width=160, seed=3)
    (root / "images" / "broken.png").write_bytes(b"this is not a png")
    return {"root": root, "rows": rows, "images": root / "images", "detections": root / "detections", **a}


