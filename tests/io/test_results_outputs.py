"""Output sets: atomic, unique temporaries, a completion record written last and checked on skip; interrupted
overwrites are not skipped; concurrent writers of the same names leave a consistent set; results hold only
finite, real values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest

from flamefit.errors import FlamefitError
from flamefit.io import outputs as outputs_mod
from flamefit.io.outputs import OutputSet, is_finished, read_done
from flamefit.io.results import result_json, save_result


def _publish(out, name, payload: str, overwrite=True, kinds=("a", "b")):
    with OutputSet(out, name, kind="test", source="src", overwrite=overwrite) as s:
        s.write_text(f"{name}.a", payload)
        s.write_text(f"{name}.b", payload * 2)
        return s.publish(outputs=kinds)


def test_record_is_checked(tmp_path):
    assert _publish(tmp_path, "x", "hello")
    assert is_finished(tmp_path, "x", ["a"], verify_hashes=True)
    assert not is_finished(tmp_path, "x", ["a", "mesh"])  # a rerun asking for more outputs redoes it
    doc = read_done(tmp_path, "x")
    assert doc["files"]["x.a"]["size"] == 5 and len(doc["files"]["x.b"]["sha256"]) == 64
    (tmp_path / "x.b").write_text("hellohell")  # truncated
    assert not is_finished(tmp_path, "x")
    (tmp_path / "x.b").write_text("HELLOHELLO")  # same size, other content
    assert is_finished(tmp_path, "x") and not is_finished(tmp_path, "x", verify_hashes=True)
    (tmp_path / "x.a").unlink()
    assert not is_finished(tmp_path, "x")
    (tmp_path / "y.done.json").write_text("{not json")
    assert not is_finished(tmp_path, "y")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".staging", ".tmp"))]


def test_interrupted_overwrite_is_not_skipped(tmp_path, monkeypatch):
    assert _publish(tmp_path, "x", "old")
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # killed after the first file of the new set was moved in
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(outputs_mod.os, "replace", flaky_replace)
    with pytest.raises(KeyboardInterrupt):
        _publish(tmp_path, "x", "new")
    monkeypatch.setattr(outputs_mod.os, "replace", real_replace)
    # a mixed pair (new .a, old .b) is on disk, but without a completion record: not finished, redone next time
    assert (tmp_path / "x.a").read_text() == "new" and (tmp_path / "x.b").read_text() == "oldold"
    assert not is_finished(tmp_path, "x")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]


def test_stale_temporaries_are_removed(tmp_path):
    from flamefit.io.outputs import remove_stale_temporaries

    old_dir, old_file, fresh = tmp_path / ".staging-1-abc", tmp_path / ".tmp-1-abc-x.npz", tmp_path / ".staging-2-d"
    old_dir.mkdir()
    (old_dir / "x.npz").write_bytes(b"half")
    old_file.write_bytes(b"half")
    fresh.mkdir()
    (tmp_path / "keep.npz").write_bytes(b"x")
    for p in (old_dir, old_file):
        os.utime(p, (1, 1))
    assert remove_stale_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging-2-d", "keep.npz"]


def test_not_overwriting_keeps_a_set_finished_meanwhile(tmp_path):
    assert _publish(tmp_path, "x", "first")
    assert _publish(tmp_path, "x", "second", overwrite=False) is False
    assert (tmp_path / "x.a").read_text() == "first"


_WRITER = """
import sys
from flamefit.io.outputs import OutputSet
out, tag = sys.argv[1], sys.argv[2]
for i in range(40):
    for name in ("n0", "n1", "n2"):
        with OutputSet(out, name, kind="race", source=tag) as s:
            s.write_text(name + ".a", tag * (1 + i % 7))
            s.write_text(name + ".b", tag + str(i))
            s.publish(outputs=["a", "b"])
"""


def test_two_processes_writing_the_same_names_leave_consistent_sets(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), tag]) for tag in ("P", "Q")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    for name in ("n0", "n1", "n2"):
        assert is_finished(tmp_path, name, ["a", "b"], verify_hashes=True)
        a, b = (tmp_path / f"{name}.a").read_text(), (tmp_path / f"{name}.b").read_text()
        assert a[0] == b[0] == read_done(tmp_path, name)["source"]  # both files from the run that wrote the record
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".staging", ".tmp"))]


# -- results: only real, finite values ---------------------------------------------------------------------------

@dataclass
class FakeResult:
    """The parts of a FitResult that io.results uses (kept independent of the fitter's internals)."""

    name: str = "face"
    image_size: tuple = (8, 8)
    vertices: np.ndarray = field(default_factory=lambda: np.random.default_rng(0).normal(size=(4, 3)))
    shape: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    exp: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    pose: np.ndarray = field(default_factory=lambda: np.zeros(6, np.float32))
    neck: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    eyes: np.ndarray = field(default_factory=lambda: np.zeros(6, np.float32))
    tex: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    light: np.ndarray = field(default_factory=lambda: np.ones((9, 3), np.float32))
    cam: np.ndarray = field(default_factory=lambda: np.array([0, 0, 0, 0, 0, 1.0]))
    K: np.ndarray = field(default_factory=lambda: np.diag([10.0, 10.0, 1.0]))
    lmks_68_fit: np.ndarray | None = None
    blendshape_scores: np.ndarray | None = None
    face_transform: np.ndarray | None = None
    render: np.ndarray | None = None
    mask: np.ndarray | None = None
    overlay: np.ndarray | None = None
    albedo: np.ndarray | None = None
    missing: dict = field(default_factory=lambda: {"lmks_68_fit": "no 68-point embedding for this model",
                                                   "render": "no UV layout"})
    timings: dict = field(default_factory=dict)
    opengl_view: np.ndarray = field(default_factory=lambda: np.eye(4))

    def opengl_projection(self):
        return np.eye(4)

    def arrays(self):
        keys = ("vertices", "shape", "exp", "pose", "neck", "eyes", "tex", "light", "cam", "K", "lmks_68_fit",
                "blendshape_scores", "face_transform", "render", "mask", "overlay", "albedo")
        return {k: getattr(self, k) for k in keys}


FACES = np.array([[0, 1, 2], [0, 2, 3]])


def test_absent_fields_are_left_out_with_their_reason(tmp_path):
    res = FakeResult()
    paths = save_result(res, tmp_path, FACES, name="face", outputs=["mesh", "overlay"])
    data = np.load(tmp_path / "face.npz")
    assert "lmks_68_fit" not in data.files and "render" not in data.files and "blendshape_scores" not in data.files
    assert data["faces"].shape == (2, 3)
    doc = json.loads((tmp_path / "face.json").read_text())
    assert doc["missing"]["lmks_68_fit"].startswith("no 68-point") and "lmks_68_fit" not in doc
    assert "overlay_png" in doc["missing"] and not (tmp_path / "face_overlay.png").exists()
    assert (tmp_path / "face_mesh.obj").is_file() and (tmp_path / "face.glb").is_file()
    assert set(paths) >= {"face.npz", "face.json", "face_mesh.obj", "face.glb"}
    assert is_finished(tmp_path, "face", ["npz", "json", "mesh", "overlay"], verify_hashes=True)


def test_present_optional_fields_are_written(tmp_path):
    res = FakeResult(lmks_68_fit=np.ones((68, 2), np.float32), blendshape_scores=np.full(52, 0.1, np.float32),
                     face_transform=np.eye(4), missing={})
    save_result(res, tmp_path, FACES, name="face", outputs=[])
    data = np.load(tmp_path / "face.npz")
    assert data["blendshape_scores"].shape == (52,) and data["face_transform"].shape == (4, 4)
    doc = json.loads((tmp_path / "face.json").read_text())
    assert len(doc["blendshape_scores"]) == 52 and doc["missing"] == {}
    assert doc["render_scale"] == 1.0 and doc["landmarks_source"] == "detected"

    res = FakeResult(missing={})
    res.render_scale, res.landmarks_source = 0.5, None  # a huge photo's smaller render; fit-texture without detection
    doc = result_json(res)
    assert doc["render_scale"] == 0.5 and doc["landmarks_source"] is None


@pytest.mark.parametrize("field_name", ["light", "vertices", "lmks_68_fit"])
def test_non_finite_values_fail_the_item_and_write_nothing(tmp_path, field_name):
    res = FakeResult(lmks_68_fit=np.ones((68, 2), np.float32))
    bad = getattr(res, field_name).astype(np.float64).copy()
    bad.flat[1] = np.nan
    setattr(res, field_name, bad)
    with pytest.raises(FlamefitError, match=field_name):
        save_result(res, tmp_path, FACES, name="face")
    assert not list(tmp_path.iterdir())  # not even a staging folder


def test_json_never_holds_nan(tmp_path):
    res = FakeResult()
    res.timings = {"fit_s": float("inf")}
    with pytest.raises(FlamefitError, match="timings_s.fit_s"):
        save_result(res, tmp_path, FACES, name="face")
    doc = result_json(FakeResult())
    json.dumps(doc, allow_nan=False)  # the normal document is strict JSON


def test_save_npz_round_trips_without_pickles(tmp_path):
    from flamefit.io.outputs import save_npz

    arrays = {"render": np.random.default_rng(0).random((8, 8, 3), np.float32), "names": np.array(["a", "bb"]),
              "scalar": np.float64(0.5), "empty": np.zeros((0, 2), np.float32)}
    save_npz(tmp_path / "x.npz", arrays)
    with np.load(tmp_path / "x.npz", allow_pickle=False) as d:
        assert sorted(d.files) == sorted(arrays)
        for k, v in arrays.items():
            assert np.array_equal(d[k], v) and d[k].dtype == np.asarray(v).dtype
    with pytest.raises(ValueError):  # object arrays would need pickles: refused, not written silently
        save_npz(tmp_path / "y.npz", {"bad": np.array([{"a": 1}], dtype=object)})
