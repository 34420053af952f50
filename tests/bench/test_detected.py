"""The detector-in-the-loop bench's renders and scorer: seeded photo cases, the truth on disk in the layout of
../shared/eval, per-region labels, and metrics that are zero for the truth itself and not for the mean head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def oracle(standin):
    from flamefit.fit import Fitter, load_config

    model, lmk, ts = standin
    cfg = load_config(overrides=["n_shape=50", "n_expr=30", "texture.n_tex=10", "texture.fit_resolution=64"])
    return Fitter(model, texture_space=ts, landmarks68=lmk, config=cfg)


def test_photo_cases_are_seeded_and_in_range(oracle):
    from flamefit.fit.synthetic import make_photo_case

    a, b = make_photo_case(oracle, 3, size=160), make_photo_case(oracle, 3, size=160)
    assert np.array_equal(a.image, b.image) and a.info == b.info
    assert not np.array_equal(a.image, make_photo_case(oracle, 4, size=160).image)
    assert a.image.shape == (160, 160, 3) and a.image.dtype == np.float32 and np.isfinite(a.image).all()
    assert 15 <= a.info["fov_deg"] <= 75 and abs(a.info["yaw_deg"]) <= 45
    assert ((a.lmks_68 > 0) & (a.lmks_68 < 160)).all()  # the face is in the frame


def test_written_set_scores_zero_for_the_truth_and_more_for_the_mean_head(oracle, tmp_path):
    from flamefit.bench import detected as D
    from flamefit.fit import synthetic as S
    from flamefit.fit.params import FlameParams

    rows = D.write_set(oracle, tmp_path, 2, seed0=11, size=160)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [r["case"] for r in manifest["cases"]] == ["case01", "case02"] == [r["case"] for r in rows]
    region = S.face_region(oracle.model, oracle.landmarks68).cpu().numpy()
    assert np.array_equal(np.load(tmp_path / "face_region.npy"), np.nonzero(region)[0])
    labels = D.region_labels(oracle, region)
    sizes = {r: len(v) for r, v in labels.items()}
    assert set(sizes) == set(D.REGIONS) and min(sizes.values()) > 20, sizes
    assert sum(sizes.values()) == region.sum()  # every scored vertex in exactly one region
    lmk_idx = {"chin": D._lmk_vertex(oracle, 8), "upper_lip": D._lmk_vertex(oracle, 62),
               "lower_lip": D._lmk_vertex(oracle, 66)}
    with np.load(tmp_path / "case01_gt.npz") as d:
        p = FlameParams.from_dict({k[6:]: torch.as_tensor(d[k][None], dtype=oracle.dtype)
                                   for k in d.files if k.startswith("param_")})
        K, proj, verts = d["K"], d["proj_vertices"], d["vertices"]
        truth = D._truth(oracle, p, np.asarray(verts, np.float64), np.asarray(d["lmks_68"]) + 0.5, region)
    # the pixel convention of ../shared/eval: K projects the camera-frame vertices to proj_vertices + 0.5
    uv = verts[:, :2] / verts[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
    assert np.abs(uv - (proj + 0.5)).max() < 1e-3
    exact = D.score(oracle, p, truth, labels, lmk_idx)
    assert exact["aligned_mm"] < 1e-3 and abs(exact["focal_err_pct"]) < 1e-6 and abs(exact["depth_err_pct"]) < 1e-6
    assert exact["expression_err_mm"] < 1e-3 and exact["jaw_open_err_mm"] < 1e-3 and exact["lip_gap_err_mm"] < 1e-3
    assert exact["meanhead_aligned_mm"] > 0.5  # the mean head is not the truth
    mean = p.detach()
    mean.shape = torch.zeros_like(mean.shape)
    mean.expression = torch.zeros_like(mean.expression)
    mean.jaw_pose = torch.zeros_like(mean.jaw_pose)
    off = D.score(oracle, mean, truth, labels, lmk_idx)
    assert off["aligned_mm"] > 0.5 and off["expression_err_mm"] > 0.1
    assert all(np.isfinite(off[f"{r}_mm"]) and off[f"{r}_mm"] > 0 for r in D.REGIONS)
