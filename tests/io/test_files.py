"""flamefit._files: the one atomic write and the one cache folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flamefit import _files
from flamefit.io import outputs


class Boom(RuntimeError):
    pass


def test_a_failing_writer_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "a.npz"
    with pytest.raises(Boom), _files.atomic_path(target, suffix=".npz") as tmp:
        np.savez(tmp, x=np.arange(3))
        assert tmp.is_file() and tmp.parent == tmp_path and tmp.name.endswith(".npz")
        raise Boom
    assert list(tmp_path.iterdir()) == []


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(Boom), _files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise Boom
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_success_replaces_an_existing_file(tmp_path):
    target = tmp_path / "a.npz"
    target.write_bytes(b"old")
    with _files.atomic_path(target, suffix=".npz") as tmp:
        assert tmp.name.startswith(".tmp-") and tmp.name.endswith("a.npz")
        np.savez(tmp, x=np.arange(3))  # np.savez would add .npz to a name without it
    with np.load(target) as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert list(tmp_path.iterdir()) == [target]


def test_suffix_is_kept_for_writers_that_pick_the_format_by_name(tmp_path):
    assert _files.atomic_path(tmp_path / "overlay.mp4").tmp.suffix == ".mp4"
    assert _files.atomic_path(tmp_path / "x.bin", suffix=".npz").tmp.name.endswith("x.bin.npz")
    assert _files.atomic_path(tmp_path / "x.npz", suffix=".npz").tmp.name.endswith("-x.npz")


def test_atomic_write_bytes(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    assert _files.atomic_write_bytes(target, b"new") == target and target.read_bytes() == b"new"
    assert _files.atomic_write_text(tmp_path / "t.txt", "é", fsync=False).read_bytes() == "é".encode()
    assert outputs.atomic_write_bytes is _files.atomic_write_bytes  # old import path still works

    def broken_fsync(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(_files.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk gone"):
        _files.atomic_write_bytes(target, b"newer")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "t.txt"]


def test_manual_commit_and_discard(tmp_path):
    out = _files.AtomicPath(tmp_path / "v.mp4")
    out.tmp.write_bytes(b"video")
    assert out.commit() == tmp_path / "v.mp4" and (tmp_path / "v.mp4").read_bytes() == b"video"
    again = _files.AtomicPath(tmp_path / "v.mp4")
    again.tmp.write_bytes(b"partial")
    again.discard()
    again.discard()  # nothing there: fine
    assert list(tmp_path.iterdir()) == [tmp_path / "v.mp4"]


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAMEFIT_CACHE_DIR", str(tmp_path / "c"))
    assert _files.cache_dir() == _files.env_cache_dir() == (tmp_path / "c").resolve()
    monkeypatch.setenv("FLAMEFIT_CACHE_DIR", "~/flamefit-cache")
    assert _files.cache_dir() == Path("~/flamefit-cache").expanduser().resolve()
    for unset in (monkeypatch.delenv, lambda k: monkeypatch.setenv(k, "")):
        unset("FLAMEFIT_CACHE_DIR")
        import platformdirs

        assert _files.env_cache_dir() is None
        assert _files.cache_dir() == Path(platformdirs.user_cache_dir("flamefit"))


def test_callers_use_the_one_cache_dir(tmp_path, monkeypatch):
    from flamefit.fit.correspondence import cache_directory
    from flamefit.model.uv import uv_cache_directory
    from flamefit.run.spec import resolve_cache_dir

    monkeypatch.setenv("FLAMEFIT_CACHE_DIR", str(tmp_path))
    root = tmp_path.resolve()
    assert uv_cache_directory() == root / "uv"
    assert cache_directory() == root  # the variable's folder itself (as before)
    assert resolve_cache_dir() == str(root)
    monkeypatch.delenv("FLAMEFIT_CACHE_DIR")
    assert uv_cache_directory() == _files.cache_dir() / "uv"
    assert cache_directory() == _files.cache_dir() / "correspondence"
    assert resolve_cache_dir() is None
