"""The worker protocol and per-item records.

A worker is built from a :class:`~flamefit.run.spec.RunSpec` alone (``factory(spec)``, the factory named by
``spec.worker`` as ``module:attribute``: the jobs in :mod:`flamefit.jobs` name theirs), does its expensive
set-up once in :meth:`Worker.setup` (load the model, start the detector), then turns items into records with
:meth:`Worker.process`. The same worker class runs in-process, in a local process pool and in Ray actors.

:func:`process_safely` isolates items: any exception becomes a ``failed`` :class:`Record` with a one-line
reason, and the run goes on.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from flamefit.errors import EXIT_INTERNAL, ConfigError, FlamefitError
from flamefit.run.items import Item
from flamefit.run.spec import RunSpec

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class Record:
    """What became of one item: ``status`` ok / failed / skipped, a one-line ``message``, the files written,
    and ``data`` (small, JSON-able results, e.g. landmarks for ``detect --json``)."""

    name: str
    source: str
    status: str
    message: str = ""
    error_type: str | None = None
    exit_code: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    attempts: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Record:
        return cls(**d)


@runtime_checkable
class Worker(Protocol):
    def setup(self) -> None: ...

    def process(self, item: Item) -> Record: ...


def one_line(text: str) -> str:
    """A message on one line (per-item reasons must not break the log's one-line-per-item shape)."""
    return " ".join(str(text).split())


def failure(item: Item, exc: BaseException, seconds: float = 0.0, attempts: int = 1) -> Record:
    if isinstance(exc, FlamefitError):
        msg, code = one_line(str(exc)), exc.exit_code
    else:
        msg = one_line(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        code = EXIT_INTERNAL
    return Record(item.name, item.source, FAILED, message=msg, error_type=type(exc).__name__, exit_code=code,
                  seconds=seconds, attempts=attempts)


def process_safely(worker: Worker, item: Item, debug: bool = False) -> Record:
    """``worker.process(item)``; an exception becomes a failed record (``debug`` re-raises it instead)."""
    t0 = time.perf_counter()
    try:
        rec = worker.process(item)
    except Exception as exc:  # noqa: BLE001 - one broken item must not stop the run
        if debug:
            raise
        return failure(item, exc, time.perf_counter() - t0)
    if not rec.seconds:
        rec.seconds = time.perf_counter() - t0
    return rec


def worker_factory(name: str) -> Callable[[RunSpec], Worker]:
    """The factory for a spec's ``worker``, ``module:attribute`` (imported here, in the worker process: the run
    layer names no job; each job module says its own, e.g. :data:`flamefit.jobs.photo.FIT_WORKER`)."""
    target = name
    if ":" not in target:
        raise ConfigError(f"unknown worker {name!r}: a worker is named 'module:attribute' (its factory)")
    module_name, attr = target.split(":", 1)
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load worker {name!r} ({target}): {exc}") from exc


def make_worker(spec: RunSpec) -> Worker:
    return worker_factory(spec.worker)(spec)
