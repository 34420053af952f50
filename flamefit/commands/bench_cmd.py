"""`flamefit bench ...`: performance benchmarks. Each prints a table, or one JSON object with --json.

Benchmarks live in ``flamefit/bench/<name>.py`` as a click command named ``command``; add the name here.
"""

from __future__ import annotations

import importlib

import click

BENCHMARKS = {
    "model": "FLAME forward+backward time (batch 1 and 64).",
    "render": "Renderer forward+backward time at several resolutions and batch sizes.",
    "fit": "Single-image fitting: synthetic recovery, real-image accuracy, speed.",
    "observe": "Landmark NME, skin-mask IoU and detection time on the shared images (--correspondence: FLAME).",
}


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
        return module.command

    def format_commands(self, ctx, formatter):
        with formatter.section("Benchmarks"):
            formatter.write_dl(list(BENCHMARKS.items()))


@click.group(name="bench", cls=_BenchGroup)
def bench() -> None:
    """Performance benchmarks (tables, or --json for one JSON object on stdout)."""
