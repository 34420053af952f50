"""Executors: the same records in-process, in a process pool and on Ray; per-item isolation; a worker process
that dies loses only its item (retried, then reported); set-up failures stop the run with their error."""

from __future__ import annotations

import json
import os

import pytest

from flamefit.errors import ConfigError
from flamefit.io.outputs import is_finished, read_done
from flamefit.run import (
    FAILED,
    OK,
    SKIPPED,
    InProcessExecutor,
    Item,
    PoolExecutor,
    RayExecutor,
    RunSpec,
    run_items,
)

EXECUTORS = ["inprocess", "pool", "ray"]


def _executor(kind, request):
    if kind == "inprocess":
        return InProcessExecutor()
    if kind == "pool":
        return PoolExecutor(2)
    request.getfixturevalue("ray_session")
    return RayExecutor(workers=2)


def _spec(tmp_path, worker="EchoWorker", **kw):
    return RunSpec(worker=f"flamefit_test_workers:{worker}", out_dir=str(tmp_path / "out"), outputs=["txt"],
                   options={"tag": "t1", "marker_dir": str(tmp_path)}, verify_hashes=True, **kw)


def _items(*names):
    return [Item(n, f"/in/{n}.png") for n in names]


@pytest.mark.parametrize("kind", EXECUTORS)
def test_all_items_processed_and_errors_isolated(kind, request, tmp_path):
    spec = _spec(tmp_path)
    summary = run_items(spec, _items("a", "boom", "b", "config_x", "c"), executor=_executor(kind, request))
    status = {r.name: r.status for r in summary.records}
    assert status == {"a": OK, "boom": FAILED, "b": OK, "config_x": FAILED, "c": OK}
    assert [r.name for r in summary.records] == ["a", "boom", "b", "config_x", "c"]  # item order
    boom = next(r for r in summary.records if r.name == "boom")
    assert "\n" not in boom.message and "boom with a second line" in boom.message
    cfg = next(r for r in summary.records if r.name == "config_x")
    assert cfg.error_type == "ConfigError" and cfg.exit_code == ConfigError.exit_code
    for n in "abc":
        assert (tmp_path / "out" / f"{n}.txt").read_text() == f"/in/{n}.png t1"
        assert is_finished(tmp_path / "out", n, ["txt"], verify_hashes=True)
    pids = {r.data["pid"] for r in summary.records if r.status == OK}
    if kind == "inprocess":
        assert pids == {os.getpid()}
    else:
        assert os.getpid() not in pids


@pytest.mark.parametrize("kind", EXECUTORS[1:])
def test_a_dying_worker_loses_only_its_item(kind, request, tmp_path):
    spec = _spec(tmp_path, worker="CrashWorker", retries=1)
    summary = run_items(spec, _items("a", "crash1", "b", "once1", "c"), executor=_executor(kind, request))
    by = {r.name: r for r in summary.records}
    for n in "abc":
        assert by[n].status == OK, by[n]
    assert by["once1"].status == OK and by["once1"].attempts == 2  # died once, then done by a fresh worker
    assert by["a"].attempts == 1
    # dies every time: retried once, then reported in one line
    assert by["crash1"].status == FAILED and by["crash1"].error_type == "WorkerDied" and by["crash1"].attempts == 2
    assert "died" in by["crash1"].message and "\n" not in by["crash1"].message
    assert not (tmp_path / "out" / "crash1.txt").exists()


def test_a_killed_worker_is_reported(tmp_path):
    """SIGKILL (the OOM killer, a user's kill -9) with no retries: reported at once, the others go on."""
    summary = run_items(_spec(tmp_path, worker="CrashWorker", retries=0), _items("kill1", "a"),
                        executor=PoolExecutor(1))
    by = {r.name: r for r in summary.records}
    assert by["kill1"].status == FAILED and by["kill1"].attempts == 1 and "-9" in by["kill1"].message
    assert by["a"].status == OK


@pytest.mark.parametrize("kind", EXECUTORS)
def test_setup_failure_stops_the_run_with_its_error(kind, request, tmp_path):
    with pytest.raises(ConfigError, match="never starts"):
        run_items(_spec(tmp_path, worker="SetupFailWorker"), _items("a", "b"), executor=_executor(kind, request))


def test_skip_finished_and_overwrite(tmp_path):
    spec = _spec(tmp_path)
    assert run_items(spec, _items("a", "b")).n_ok == 2
    again = run_items(spec, _items("a", "b"))
    assert again.n_skipped == 2 and again.n_ok == 0
    # a damaged file (same size, other content) is caught by the hash check and redone
    p = tmp_path / "out" / "a.txt"
    p.write_text(p.read_text().upper())
    third = run_items(spec, _items("a", "b"))
    assert {r.name: r.status for r in third.records} == {"a": OK, "b": SKIPPED}
    spec.overwrite = True
    assert run_items(spec, _items("a", "b")).n_ok == 2


def test_workers_see_only_the_specs_assets(tmp_path, monkeypatch, synthetic_model_path):
    """Workers build from the spec alone: the parent's asset variables and config file do not leak in."""
    other = tmp_path / "other_model.pkl"
    other.write_bytes(synthetic_model_path.read_bytes())
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[paths]\nlandmarks_static = "{other}"\n')
    monkeypatch.setenv("FLAMEFIT_FLAME_MODEL", str(other))
    monkeypatch.setenv("FLAMEFIT_CONFIG", str(cfg))
    spec = _spec(tmp_path, worker="ResolveWorker")
    spec.assets = {"flame": str(synthetic_model_path), "landmarks_static": None}
    summary = run_items(spec, _items("a"), executor=PoolExecutor(1))
    rec = summary.records[0]
    assert rec.status == OK, rec
    assert rec.data["resolved_flame"] == str(synthetic_model_path)
    assert rec.data["resolved_static"] is None  # the parent's config file is not read by the worker
    assert rec.data["env_config"] != str(cfg)


def test_spec_round_trips_through_json(tmp_path):
    spec = _spec(tmp_path, retries=3)
    spec.config = {"resolution": 128, "rigid": {"iters": 5}}
    again = RunSpec.from_json(spec.to_json())
    assert again == spec and json.loads(spec.to_json())["retries"] == 3


def test_completion_record_lists_the_files(tmp_path):
    run_items(_spec(tmp_path), _items("a"))
    doc = read_done(tmp_path / "out", "a")
    assert doc["format"] == "flamefit-done/1" and doc["source"] == "/in/a.png" and doc["outputs"] == ["txt"]
    assert set(doc["files"]) == {"a.txt"} and doc["files"]["a.txt"]["size"] == len("/in/a.png t1")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".staging")]  # no leftovers


def test_an_unreachable_ray_address_fails_fast(tmp_path):
    """Ray itself retries for minutes; the run says at once that the cluster does not answer."""
    import socket

    pytest.importorskip("ray", reason="Ray is not installed (pip install 'flamefit[ray]')")
    from flamefit.errors import FlamefitError

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FlamefitError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        RayExecutor(address=f"127.0.0.1:{port}").run(_spec(tmp_path), _items("a"), lambda r: None)
