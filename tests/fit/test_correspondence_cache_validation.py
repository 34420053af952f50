"""A cached MediaPipe correspondence whose face indices lie beyond the mesh is recomputed, never used."""

from __future__ import annotations

import numpy as np

import flamefit.fit.correspondence as corr


def test_out_of_range_cache_is_recomputed(synthetic_model_path, tmp_path, monkeypatch):
    from flamefit.model import load_flame

    model = load_flame(synthetic_model_path)
    calls = []

    def fake(verts, faces, **kwargs):
        calls.append(1)
        rep = corr.CorrespondenceReport(n_views_used=np.ones(478, np.int64), spread_mm=np.zeros(478))
        return np.zeros(478, np.int64), np.full((478, 3), 1 / 3, np.float32), rep

    monkeypatch.setattr(corr, "derive_correspondence", fake)
    corr.dense_correspondence(model, cache_dir=tmp_path)
    path = next(tmp_path.glob("*.npz"))
    np.savez(path, face_idx=np.full(478, 10**6), bary=np.full((478, 3), 1 / 3))
    lmk = corr.dense_correspondence(model, cache_dir=tmp_path)
    assert calls == [1, 1] and int(lmk.face_idx.max()) < model.faces.shape[0]
