"""observe(): the one call the fitter makes."""

from __future__ import annotations

import numpy as np
import pytest

from flamefit.errors import FaceNotFound, InputImageError
from flamefit.observe import Observation, dense_to_68, observe


def test_observe_path(ffhq_dir, detector):
    path = ffhq_dir / "00002.png"
    obs = observe(path, detector=detector)
    assert isinstance(obs, Observation)
    assert obs.source == str(path)
    assert obs.image.shape == (256, 256, 3) and obs.image.dtype == np.float32
    assert 0.0 <= obs.image.min() and obs.image.max() <= 1.0
    assert obs.lmks_dense.shape == (478, 2) and obs.lmks_68.shape == (68, 2)
    np.testing.assert_allclose(obs.lmks_68, dense_to_68(obs.lmks_dense), atol=1e-4)
    assert obs.mask.shape == (256, 256) and obs.mask.max() > 0.9
    assert 0.5 < obs.confidence <= 1
    assert obs.image_size == (256, 256)
    np.testing.assert_array_equal(obs.transform, np.eye(2, 3))
    d = obs.to_npz_dict()
    assert set(d) >= {"lmks_dense", "lmks_68", "mask"}


def test_observe_array_without_mask(ffhq_dir, detector):
    from flamefit.observe.image import load_image

    img = (load_image(ffhq_dir / "00004.png") * 255).astype(np.uint8)
    obs = observe(img, mask=False, detector=detector, source="frame 12")
    assert obs.source == "frame 12"
    assert obs.image.dtype == np.float32
    assert (obs.mask == 1).all()


def test_observe_errors_name_the_file(tmp_path, detector):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputImageError, match="broken.jpg"):
        observe(bad, detector=detector)
    from PIL import Image

    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(tmp_path / "wall.png")
    with pytest.raises(FaceNotFound, match="wall.png"):
        observe(tmp_path / "wall.png", detector=detector)


def test_observation_from_a_tracked_frame(ffhq_dir, detector):
    from flamefit.observe import FaceTracker, observation_from_detection
    from flamefit.observe.image import load_image

    frame = load_image(ffhq_dir / "00006.png")
    det = FaceTracker(detector).track(frame)
    obs = observation_from_detection(frame, det, source="video.mp4 frame 0")
    assert obs.source == "video.mp4 frame 0" and obs.mask.shape == (256, 256)
    np.testing.assert_allclose(obs.lmks_68, dense_to_68(det.lmks_dense), atol=1e-4)
