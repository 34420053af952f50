"""`flamefit bench ...`: performance benchmarks. Each prints a table, or one JSON object with --json.

Benchmarks live in ``flamefit/bench/<name>.py`` as a click command named ``command``; add the name here.
The group applies the threads policy (``flamefit bench --threads N <name>``; default 1 or $FLAMEFIT_THREADS, see
``commands/_options.py``) before the benchmark runs, and after it prints the threads used and the load average
on stderr (stdout stays one JSON object with --json).
"""

from __future__ import annotations

import importlib

import click

from flamefit.bench.common import threads_line
from flamefit.commands._options import check_device, parse_threads, setup_torch, threads_option

BENCHMARKS = {
    "model": "FLAME forward+backward time (batch 1 and 64).",
    "render": "Renderer forward+backward time at several resolutions and batch sizes.",
    "fit": "Single-image fitting: synthetic recovery, real-image accuracy, speed.",
    "observe": "Landmark NME, skin-mask IoU and detection time on the shared images (--correspondence: FLAME).",
    "track": "Video tracking: frames/s per mode and stage, jitter/lag, vertex errors vs independent fits, RSS.",
    "texspace": "Texture-space building: known-space recovery, inpainting PSNR, real-photo skin PSNR, time/memory.",
    "landmarks68": "Derived (MediaPipe-based) vs RingNet 68-point model landmarks: geometry and lmks_68_fit NME.",
}


def _check_threads(_ctx, _param, value):
    if value is not None:
        parse_threads(value)  # raises ConfigError (exit 2) for values outside [1, 1024]
    return value


def _check_device(_ctx, _param, value):
    # ConfigError (exit 2) for an unknown form or a CUDA device that is not there; returns the normalised name
    return check_device(value) if value is not None else value


class _BenchGroup(click.Group):
    def list_commands(self, ctx):
        return list(BENCHMARKS)

    def get_command(self, ctx, name):
        if name not in BENCHMARKS:
            return None
        try:
            module = importlib.import_module(f"flamefit.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"flamefit.bench.{name}":
                return None
            raise
        command = module.command
        for param in command.params:
            # A benchmark's own --threads gets the same validation as everywhere (a clear error, not torch's).
            if param.name == "threads" and param.callback is None:
                param.callback = _check_threads
            elif param.name == "device" and param.callback is None:
                param.callback = _check_device
        return command

    def format_commands(self, ctx, formatter):
        with formatter.section("Benchmarks"):
            formatter.write_dl(list(BENCHMARKS.items()))


@click.group(name="bench", cls=_BenchGroup)
@threads_option()
def bench(threads: str | None) -> None:
    """Performance benchmarks (tables, or --json for one JSON object on stdout).

    Each prints the torch threads it used and the load average (stderr): timings on a busy machine differ.
    """
    setup_torch("cpu", threads)  # the device is each benchmark's own option; this sets the threads


@bench.result_callback()
def _report_threads(*_args, **_kwargs) -> None:
    click.echo(f"bench: {threads_line()}", err=True)
