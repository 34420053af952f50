"""`flamefit model ...`: inspect model files."""

from __future__ import annotations

import json

import click


@click.group(name="model")
def model() -> None:
    """Inspect FLAME model files."""


@model.command(name="info")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def info(path: str | None, as_json: bool) -> None:
    """Show what FLAME model is found (format, counts, sha256, checks passed).

    PATH defaults to the resolution order: $FLAMEFIT_FLAME_MODEL, the config file, the data directory.
    """
    from flamefit.model.files import ASSETS, candidates, resolve_asset
    from flamefit.model.flame_file import read_flame_file

    model_path = resolve_asset("flame", path)
    data = read_flame_file(model_path)
    origin = next((o for o, p in candidates("flame", path) if p == model_path), "?")
    others = {}
    for kind in ASSETS:
        if kind == "flame":
            continue
        found = resolve_asset(kind, None, required=False)
        others[kind] = str(found) if found else None
    report = {
        "path": str(model_path),
        "found_via": origin,
        "format": data.format,
        "vertices": data.num_vertices,
        "faces": int(data.faces.shape[0]),
        "shape_components": data.n_shape_total,
        "expression_components": data.n_expr_total,
        "joints": 5,
        "sha256": data.sha256,
        "checks": data.checks,
        "other_assets": others,
    }
    if as_json:
        click.echo(json.dumps(report))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="FLAME model", show_header=False)
    for key in ("path", "found_via", "format", "vertices", "faces", "shape_components", "expression_components",
                "joints", "sha256"):
        table.add_row(key, str(report[key]))
    for check in data.checks:
        table.add_row("check", ("[yellow]" if check.startswith("WARNING") else "[green]ok[/] ") + check)
    for kind, found in others.items():
        table.add_row(kind, found or "[dim]not found[/]")
    Console(width=140).print(table)
