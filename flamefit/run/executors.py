"""Executors: run a spec's worker over items, in this process, in a local process pool, or on Ray.

Every executor calls ``on_record(record)`` once per item, in completion order, and isolates items: an exception
in ``process`` is a failed record; a worker PROCESS that dies (killed, segfault, ``os._exit``) loses only the
item it was working on, which is retried ``spec.retries`` times on a fresh worker and then reported as failed.
A worker whose ``setup()`` fails stops the run with that error (it would fail every item the same way).

- :class:`InProcessExecutor`: one worker in this process (no isolation from crashes; stage-level progress).
- :class:`PoolExecutor`: N worker processes (``forkserver``/``spawn``: torch is not fork-safe), ``spec.threads``
  torch threads each (1 by default), one item at a time per worker.
- :class:`RayExecutor`: N Ray actors (1 CPU each) on a local Ray started here, on a cluster
  (``address``), or on a Ray that is already initialised (tests).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait as mp_wait

from flamefit.errors import ConfigError, FlamefitError
from flamefit.run.items import Item
from flamefit.run.spec import RunSpec, pin_environment
from flamefit.run.worker import FAILED, Record, make_worker, one_line, process_safely

OnRecord = Callable[[Record], None]


def _setup_error(error_type: str, message: str, exit_code: int) -> FlamefitError:
    """Rebuild a worker's set-up error in the parent (same class when it is one of flamefit's)."""
    import flamefit.errors as errors

    cls = getattr(errors, error_type, None)
    if isinstance(cls, type) and issubclass(cls, FlamefitError):
        return cls(message)
    exc = FlamefitError(f"worker set-up failed: {error_type}: {message}")
    exc.exit_code = exit_code or 1
    return exc


def _died(item: Item, how: str, attempts: int) -> Record:
    tries = "once" if attempts == 1 else f"{attempts} times"
    return Record(item.name, item.source, FAILED, error_type="WorkerDied", exit_code=1, attempts=attempts,
                  message=one_line(f"the worker process {how} while processing this item (tried {tries}); "
                                   "other items were not affected"))


class InProcessExecutor:
    """One worker in this process. ``stage_callback(name, stage, i, n)`` gets per-stage progress."""

    def __init__(self, debug: bool = False, stage_callback=None):
        self.debug = debug
        self.stage_callback = stage_callback

    def run(self, spec: RunSpec, items: Sequence[Item], on_record: OnRecord) -> None:
        if not items:
            return
        worker = make_worker(spec)
        worker.setup()
        if self.stage_callback is not None and hasattr(worker, "stage_callback"):
            worker.stage_callback = self.stage_callback
        try:
            for item in items:
                on_record(process_safely(worker, item, debug=self.debug))
        finally:
            if hasattr(worker, "close"):
                worker.close()


# -- local process pool ------------------------------------------------------------------------------------------

def _pool_main(spec_json: str, conn) -> None:
    """A pool worker process: set up once, then answer items with records until told to stop."""
    spec = RunSpec.from_json(spec_json)
    pin_environment(spec)
    try:
        worker = make_worker(spec)
        worker.setup()
    except BaseException as exc:  # noqa: BLE001 - report any set-up failure to the parent, then stop
        conn.send(("setup_failed", type(exc).__name__, one_line(str(exc)), getattr(exc, "exit_code", 1)))
        return
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if msg is None:
            break
        rec = process_safely(worker, Item.from_dict(msg))
        conn.send(("record", rec.to_dict()))
    if hasattr(worker, "close"):
        with contextlib.suppress(Exception):
            worker.close()


class _Slot:
    def __init__(self, ctx, spec_json: str):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_pool_main, args=(spec_json, child), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task: tuple[Item, int] | None = None  # (item, attempt number)

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout)
        self.conn.close()


class PoolExecutor:
    """``workers`` local processes (``forkserver`` start method where available, else ``spawn``; never
    ``fork``: torch's thread pools do not survive it)."""

    def __init__(self, workers: int, start_method: str | None = None,
                 on_dispatch: Callable[[Item], None] | None = None):
        if workers < 1:
            raise ConfigError(f"--workers {workers}: need at least 1 worker")
        if start_method == "fork":
            raise ConfigError("the fork start method is unsafe with torch; use spawn or forkserver")
        self.workers = workers
        # forkserver where there is one: workers fork from a clean server that never ran torch (safe, and a
        # replacement for a dead worker starts fast); spawn elsewhere
        self.start_method = start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods()
                                             else "spawn")
        self.on_dispatch = on_dispatch
        self.on_retry: Callable[[Item, str], None] | None = None  # (item, why) when an item is retried

    def run(self, spec: RunSpec, items: Sequence[Item], on_record: OnRecord) -> None:
        if not items:
            return
        ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload(["flamefit.run.executors"])
        spec_json = spec.to_json()
        pending = collections.deque((item, 1) for item in items)
        n_left = len(items)
        slots = [_Slot(ctx, spec_json) for _ in range(min(self.workers, len(items)))]
        try:
            while n_left:
                for slot in slots:  # give idle, ready workers the next item
                    if slot.ready and slot.task is None and pending:
                        slot.task = pending.popleft()
                        slot.conn.send(slot.task[0].to_dict())
                        if self.on_dispatch:
                            self.on_dispatch(slot.task[0])
                waitables = [s.conn for s in slots] + [s.proc.sentinel for s in slots]
                ready = set(mp_wait(waitables))
                alive = []
                for slot in slots:
                    if slot.conn in ready:
                        try:
                            msg = slot.conn.recv()
                        except (EOFError, OSError):
                            msg = None  # died: handled below with the sentinel
                        if msg is not None:
                            if msg[0] == "ready":
                                slot.ready = True
                            elif msg[0] == "setup_failed":
                                raise _setup_error(*msg[1:])
                            elif msg[0] == "record":
                                rec = Record.from_dict(msg[1])
                                rec.attempts = slot.task[1] if slot.task else rec.attempts
                                slot.task = None
                                n_left -= 1
                                on_record(rec)
                            alive.append(slot)
                            continue
                    if slot.proc.sentinel not in ready and slot.proc.is_alive():
                        alive.append(slot)
                        continue
                    slot.proc.join(1)
                    if not slot.ready:
                        raise FlamefitError(f"a worker process died while starting (exit code "
                                            f"{slot.proc.exitcode}); run with --workers 0 to see why")
                    if slot.task is not None:
                        item, attempt = slot.task
                        if attempt <= spec.retries:
                            pending.appendleft((item, attempt + 1))
                            if self.on_retry:
                                self.on_retry(item, f"worker died (exit code {slot.proc.exitcode}); "
                                                    f"attempt {attempt + 1} of {spec.retries + 1}")
                        else:
                            n_left -= 1
                            on_record(_died(item, f"died (exit code {slot.proc.exitcode})", attempt))
                    slot.conn.close()
                    if len(pending) > sum(s.task is None for s in alive):
                        alive.append(_Slot(ctx, spec_json))  # a fresh worker takes its place
                slots = alive
        finally:
            for slot in slots:
                slot.stop()


# -- Ray ---------------------------------------------------------------------------------------------------------

class _RayWorker:
    """Body of the Ray actor (wrapped with ``ray.remote`` at run time, so ray stays optional)."""

    def __init__(self, spec_json: str):
        self.spec = RunSpec.from_json(spec_json)
        self.worker = None

    def setup(self):
        pin_environment(self.spec)
        try:
            self.worker = make_worker(self.spec)
            self.worker.setup()
        except BaseException as exc:  # noqa: BLE001 - sent back as data: the driver rebuilds the error
            return (type(exc).__name__, one_line(str(exc)), getattr(exc, "exit_code", 1))
        return None

    def process(self, item_dict: dict) -> dict:
        return process_safely(self.worker, Item.from_dict(item_dict)).to_dict()


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (Ray itself retries for minutes) when ``host:port`` / ``ray://host:port`` does not answer."""
    import socket

    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return  # 'auto', or a form Ray resolves itself
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise FlamefitError(f"cannot reach the Ray cluster at {address}: {one_line(str(exc))}. Check the address "
                            "(`ray status` on the head node prints it) and that this machine can reach it") from exc


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--ray / --ray-address need Ray: pip install 'flamefit[ray]'") from exc
    return ray


class RayExecutor:
    """``workers`` Ray actors (default: the cluster's CPUs). ``address``: join that cluster; else a Ray that is
    already initialised in this process is used, else a local one is started (and stopped afterwards)."""

    def __init__(self, workers: int | None = None, address: str | None = None,
                 on_dispatch: Callable[[Item], None] | None = None, gpus_per_worker: float | None = None):
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers {workers}: need at least 1 worker")
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker  # None: 1 for a CUDA device, else 0 (fractions share a GPU)
        self.on_retry: Callable[[Item, str], None] | None = None  # (item, why) when an item is retried
        self.address = address
        self.on_dispatch = on_dispatch

    def run(self, spec: RunSpec, items: Sequence[Item], on_record: OnRecord) -> None:
        if not items:
            return
        ray = import_ray()
        if self.address:
            check_ray_address(self.address)
        started = False
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            try:
                if self.address:
                    ray.init(address=self.address, **kwargs)
                else:
                    ray.init(num_cpus=self.workers, **kwargs)
            except Exception as exc:  # noqa: BLE001 - connection errors come in many types
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
                raise FlamefitError(f"cannot start or join {where}: {one_line(str(exc))}") from exc
            started = True
        try:
            self._run(ray, spec, items, on_record)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, spec: RunSpec, items: Sequence[Item], on_record: OnRecord) -> None:
        from ray.exceptions import RayActorError, WorkerCrashedError

        # a CUDA run needs Ray to hand each actor a GPU (Ray hides the GPUs from actors that asked for none)
        gpus = self.gpus_per_worker if self.gpus_per_worker is not None else (
            1.0 if spec.device.startswith("cuda") else 0.0)
        res = ray.cluster_resources()
        n = self.workers or max(int(res.get("GPU", 0) / gpus) if gpus else int(res.get("CPU", 1)), 1)
        n = min(n, len(items))
        actor_cls = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(_RayWorker)
        spec_json = spec.to_json()

        def new_actor():
            actor = actor_cls.remote(spec_json)
            return actor, actor.setup.remote()

        pending = collections.deque((item, 1) for item in items)
        starting = dict(new_actor() for _ in range(n))  # actor -> setup ref
        idle: list = []
        running: dict = {}  # ref -> (actor, item, attempt)
        n_left = len(items)
        try:
            while n_left:
                while idle and pending:
                    actor = idle.pop()
                    item, attempt = pending.popleft()
                    running[actor.process.remote(item.to_dict())] = (actor, item, attempt)
                    if self.on_dispatch:
                        self.on_dispatch(item)
                setup_refs = {ref: actor for actor, ref in starting.items()}
                done, _ = ray.wait([*setup_refs, *running], num_returns=1)
                ref = done[0]
                if ref in setup_refs:
                    actor = setup_refs[ref]
                    del starting[actor]
                    try:
                        err = ray.get(ref)
                    except (RayActorError, WorkerCrashedError) as exc:
                        raise FlamefitError(f"a Ray worker died while starting: {one_line(str(exc))}") from exc
                    if err is not None:
                        raise _setup_error(*err)
                    idle.append(actor)
                    continue
                actor, item, attempt = running.pop(ref)
                try:
                    rec = Record.from_dict(ray.get(ref))
                except (RayActorError, WorkerCrashedError):
                    with contextlib.suppress(Exception):
                        ray.kill(actor)
                    if attempt <= spec.retries:
                        pending.appendleft((item, attempt + 1))
                        if self.on_retry:
                            self.on_retry(item, f"worker died; attempt {attempt + 1} of {spec.retries + 1}")
                    else:
                        n_left -= 1
                        on_record(_died(item, "died", attempt))
                    new, setup_ref = new_actor()
                    starting[new] = setup_ref
                    continue
                rec.attempts = attempt
                n_left -= 1
                idle.append(actor)
                on_record(rec)
        finally:
            for actor in [*idle, *starting, *(a for a, _, _ in running.values())]:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
