"""Helpers shared by the subcommands: output names, and the run options every many-item command takes."""

from __future__ import annotations

from pathlib import Path

import click


def unique_stems(paths: list[Path]) -> list[str]:
    """Distinct output names for input files (see :func:`flamefit.run.items.output_names`)."""
    from flamefit.run.items import output_names

    return output_names(paths)


_RUN_OPTIONS = [
    click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Worker processes (0 = in this process). Each uses --threads torch threads (default 1). "
                      "With --ray: the number of Ray actors (default: all CPUs of the Ray cluster)."),
    click.option("--ray", "use_ray", is_flag=True,
                 help="Run the items on a local Ray started for this run (needs `pip install 'flamefit[ray]'`)."),
    click.option("--ray-address", metavar="ADDR",
                 help="Run the items on the Ray cluster at ADDR (e.g. ray://head:10001 or auto)."),
    click.option("--retries", type=click.IntRange(min=0), default=1, show_default=True,
                 help="How often an item is retried when its worker process dies (killed, crashed)."),
    click.option("--recursive", is_flag=True, help="Folders given as inputs: include images in sub-folders."),
    click.option("--shard", metavar="I/N", help="Process only shard I of N (0-based; every N-th image from I), "
                 "e.g. one shard per machine. Names are those of the whole input list."),
    click.option("--progress/--no-progress", default=True, show_default=True,
                 help="Show a progress display (on stderr; per-item lines are printed either way)."),
]


def run_options(fn):
    """The options of :data:`_RUN_OPTIONS` (executor choice, retries, inputs, progress)."""
    for opt in reversed(_RUN_OPTIONS):
        fn = opt(fn)
    return fn


def take_shard(items: list, text: str | None) -> list:
    """The items of ``--shard I/N`` (all items without it)."""
    if not text:
        return items
    from flamefit.errors import ConfigError
    from flamefit.run.items import shard

    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: use I/N with integers, e.g. 0/4 (the first of four shards)") from None
    return shard(items, index, count)


def make_executor(workers: int, use_ray: bool, ray_address: str | None, debug: bool = False, reporter=None):
    """The executor for the run options: in-process (workers 0), a local process pool, or Ray."""
    from flamefit.run.executors import InProcessExecutor, PoolExecutor, RayExecutor

    if use_ray or ray_address:
        return RayExecutor(workers=workers or None, address=ray_address)
    if workers >= 1:
        return PoolExecutor(workers)
    return InProcessExecutor(debug=debug, stage_callback=reporter.stage if reporter is not None else None)
