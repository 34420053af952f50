"""Smoke test of the texspace measurements on the stand-in (tiny sizes; the numbers come from the real runs)."""

from __future__ import annotations

import numpy as np
import torch

from flamefit.texspace.measure import inpainting_benchmark, recovery_benchmark, visibility_maps
from flamefit.texspace.synthetic import make_synthetic_space


def test_measurements_run_and_report(shared_assets):
    from flamefit.model.flame import load_flame

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_flame(shared_assets / "flame_standin" / "standin_flame2023.pkl", dtype=torch.float64)
        raw = np.load(shared_assets / "flame_standin" / "standin_texture.npz")
        vt, ft = raw["vt"], raw["ft"].astype(np.int64)
        verts, faces = model.v_template.double(), model.faces
        space = make_synthetic_space(vt, ft, 32, 4, seed=0, n_blobs=1)
        front, _ = visibility_maps(verts, faces, vt, ft, torch.eye(3, dtype=torch.float64)[None], 32, image_px=96)
        assert 0.2 < front.float().mean() < 0.7  # a frontal view sees the face, not the back of the head
        r = inpainting_benchmark(space, verts, faces, vt, ft, n_train=4, n_test=2, steps=2, crop=16,
                                 base_channels=4)
        assert set(r["psnr_db"]) >= {"mean", "opencv_telea", "mirror_then_opencv", "network"}
        assert r["psnr_db"]["pca_true_space (oracle)"] > r["psnr_db"]["mean"]
        rec = recovery_benchmark(space, verts, faces, vt, ft, n_build=8, n_held=3, k=3, image_px=96,
                                 face_region=front[0])
        by_k = rec["rms_0_255_by_k"]
        assert by_k["true"][3] < 1.0 and by_k["built"][3] < by_k["built"][1]
        assert rec["unwrap_mean_abs_error_0_255_on_known"] < 10.0
    finally:
        torch.set_num_threads(n)
