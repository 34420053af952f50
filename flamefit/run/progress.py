"""Progress and per-item lines, on stderr.

Each finished item gets exactly one line (``ok: ...``, ``error: SOURCE: reason``, ``skipped: ...``), printed
through the progress display's console with soft wrapping, so a long line is never broken at the terminal's
width and the live bar stays below the log. stdout is left to machine-readable output (``--json``).
"""

from __future__ import annotations

from flamefit.run.worker import FAILED, OK, SKIPPED, Record, one_line


class Reporter:
    """Item bar (+ a stage bar when the run is in-process) and one line per item on ``file`` (stderr)."""

    def __init__(self, enabled: bool = True, label: str = "images", console=None, show_ok: bool = True,
                 show_skipped: bool = True):
        from rich.console import Console

        # stderr resolved at print time (so redirections and pytest's capture see it)
        self.console = console or Console(stderr=True, soft_wrap=True, highlight=False)
        self.enabled = enabled
        self.label = label
        self.show_ok = show_ok
        self.show_skipped = show_skipped
        self.bar = None
        self._items = self._stage = None

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, total: int) -> None:
        if not self.enabled or total == 0 or self.bar is not None or not self.console.is_terminal:
            return  # no live display into files and pipes: the per-item lines say it all
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                            "{task.total}"), TimeElapsedColumn(), console=self.console, transient=True)
        self._items = self.bar.add_task(self.label, total=total)
        self._stage = self.bar.add_task("", total=1, visible=False)
        self.bar.start()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def line(self, text: str) -> None:
        """One line, never wrapped (soft wrap), never markup-interpreted."""
        self.console.print(one_line(text), markup=False, highlight=False, soft_wrap=True, crop=False)

    def stage(self, name: str, stage: str, i: int, n: int) -> None:
        if self.bar is not None:
            self.bar.update(self._stage, description=f"{name}: {stage}", completed=i, total=n, visible=True)

    def retry(self, item, why: str) -> None:
        self.line(f"retry: {item.source} ({why})")

    def record(self, rec: Record) -> None:
        if rec.status == FAILED:
            self.line(f"error: {rec.source}: {rec.message}")
        elif rec.status == OK and self.show_ok:
            self.line(f"ok: {rec.source} -> {rec.name} ({rec.message})" if rec.message else f"ok: {rec.source}")
        elif rec.status == SKIPPED and self.show_skipped:
            self.line(f"skipped: {rec.source} ({rec.message})")
        if self.bar is not None:
            self.bar.advance(self._items)
            self.bar.update(self._stage, visible=False)
