"""Helpers shared by the subcommands."""

from __future__ import annotations

from pathlib import Path


def unique_stems(paths: list[Path]) -> list[str]:
    """Output names for input files: their stems, with _1, _2, ... where two inputs share a stem."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = p.stem or "image"
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out.append(stem if n == 0 else f"{stem}_{n}")
    return out
