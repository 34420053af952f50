"""The batch loop every many-item command shares: skip finished items, execute, report, summarise."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flamefit.errors import FlamefitError, items_failed
from flamefit.run.items import Item
from flamefit.run.spec import RunSpec
from flamefit.run.worker import FAILED, OK, SKIPPED, Record


@dataclass
class RunSummary:
    records: list[Record] = field(default_factory=list)  # in item order
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def n_ok(self) -> int:
        return self.count(OK)

    @property
    def n_failed(self) -> int:
        return self.count(FAILED)

    @property
    def n_skipped(self) -> int:
        return self.count(SKIPPED)

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if r.status == FAILED]

    def raise_for_failures(self) -> None:
        """ItemsFailed when any item failed; its exit code is :func:`flamefit.errors.items_exit_code`'s (the
        items' own code when all failed with one code, e.g. a single input; else 7, "some items failed")."""
        bad = self.failed
        if bad:
            shown = ", ".join(r.source for r in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise items_failed([(r.source, r.message, r.exit_code) for r in bad], len(self.records),
                               tail=f": {shown}")


def run_items(spec: RunSpec, items: Sequence[Item], executor=None, reporter=None, skip_finished: bool = True,
              on_record: Callable[[Record], None] | None = None) -> RunSummary:
    """Run ``spec``'s worker over ``items`` with ``executor`` (default: in-process) and return the summary.

    With ``skip_finished`` (and ``spec.out_dir``, and not ``spec.overwrite``), items whose outputs are a
    finished set (:func:`flamefit.io.outputs.is_finished`) are skipped without starting any worker."""
    from flamefit.io.outputs import is_finished, remove_stale_temporaries
    from flamefit.run.executors import InProcessExecutor

    t0 = time.perf_counter()
    executor = executor or InProcessExecutor()
    by_name: dict[str, Record] = {}
    names = [it.name for it in items]
    if len(set(names)) != len(names):
        raise FlamefitError("two items of one run share an output name; use flamefit.run.output_names")
    todo: list[Item] = []
    for item in items:
        if (skip_finished and spec.out_dir and not spec.overwrite
                and is_finished(spec.out_dir, item.name, spec.outputs, verify_hashes=spec.verify_hashes)):
            by_name[item.name] = Record(item.name, item.source, SKIPPED, message="already finished")
        else:
            todo.append(item)
    if spec.out_dir:
        Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(spec.out_dir)  # left by killed runs

    def _record(rec: Record) -> None:
        by_name[rec.name] = rec
        if reporter is not None:
            reporter.record(rec)
        if on_record is not None:
            on_record(rec)

    if reporter is not None:
        for rec in by_name.values():
            reporter.record(rec)
        reporter.start(len(todo))
        if hasattr(executor, "on_retry") and executor.on_retry is None:
            executor.on_retry = reporter.retry
    try:
        executor.run(spec, todo, _record)
    finally:
        if reporter is not None:
            reporter.stop()
    missing = [it for it in items if it.name not in by_name]
    for item in missing:  # an executor must answer every item; say so rather than drop it silently
        by_name[item.name] = Record(item.name, item.source, FAILED, message="no result came back from the executor",
                                    error_type="LostItem", exit_code=1)
    return RunSummary([by_name[it.name] for it in items], time.perf_counter() - t0)
