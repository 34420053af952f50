"""Small helpers shared by the benchmarks: timing and output."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable

import click


def time_ms(fn: Callable[[], object], repeats: int = 10, warmup: int = 2, sync: Callable[[], None] | None = None
            ) -> dict[str, float]:
    """Median and min wall time of ``fn`` in milliseconds (``sync`` e.g. torch.cuda.synchronize)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {"median_ms": times[len(times) // 2], "min_ms": times[0]}


def threads_info() -> dict:
    """The torch threads in use and the 1/5/15-minute load averages, for bench reports."""
    import torch

    info: dict = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    try:
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        pass
    return info


def threads_line() -> str:
    """One human line: ``threads 1 (of 2 CPUs), load average 0.31 0.20 0.10``."""
    info = threads_info()
    line = f"threads {info['threads']} (of {info['cpu_count']} CPUs)"
    if "loadavg" in info:
        line += ", load average " + " ".join(f"{x:.2f}" for x in info["loadavg"])
    return line


def environment() -> dict:
    import torch

    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    if hasattr(os, "getloadavg"):  # timings on a busy machine differ: say how busy it was
        env["loadavg_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    return env


def emit(report: dict, rows: list[dict], columns: list[str], title: str, as_json: bool) -> None:
    """Print the report as one JSON object, or as a rich table of ``rows``."""
    if as_json:
        click.echo(json.dumps(report))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*[f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in columns])
    console = Console(width=140)
    console.print(table)
    env = report.get("environment", {})
    if env:
        console.print(", ".join(f"{k}: {v}" for k, v in env.items()))


def shared_assets_dir(assets: str | None = None):
    """The development assets folder (stand-in model, images, videos): ``--assets``, else
    ``$FLAMEFIT_SHARED_ASSETS``, else ``../shared/assets`` next to the working directory or the repository."""
    from pathlib import Path

    from flamefit.errors import ConfigError

    here = Path(__file__).resolve().parents[2].parent / "shared" / "assets"
    for c in (assets, os.environ.get("FLAMEFIT_SHARED_ASSETS"), Path.cwd().parent / "shared" / "assets", here):
        if c and Path(c).is_dir():
            return Path(c)
    raise ConfigError("the development assets (stand-in model, images) were not found: pass --assets DIR "
                      "(the shared/assets folder) or set FLAMEFIT_SHARED_ASSETS")
