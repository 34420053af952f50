"""`flamefit bench model`: FLAME forward+backward time, float32, batch 1 and 64."""

from __future__ import annotations

import click


def run(model_path=None, batches=(1, 64), device: str = "cpu", repeats: int = 20) -> dict:
    import torch

    import flamefit
    from flamefit.bench.common import environment, time_ms

    if model_path is None:
        from flamefit.assets import resolve_asset

        model_path = resolve_asset("flame", None)
    model = flamefit.load_flame(model_path, dtype=torch.float32, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    results = []
    for batch in batches:
        g = torch.Generator().manual_seed(0)
        params = {
            "shape": torch.randn(batch, model.n_shape, generator=g),
            "expression": torch.randn(batch, model.n_expr, generator=g),
            "global_pose": 0.2 * torch.randn(batch, 3, generator=g),
            "neck_pose": 0.1 * torch.randn(batch, 3, generator=g),
            "jaw_pose": 0.1 * torch.randn(batch, 3, generator=g),
            "eye_pose": 0.1 * torch.randn(batch, 6, generator=g),
            "translation": 0.01 * torch.randn(batch, 3, generator=g),
        }
        params = {k: v.to(device).requires_grad_(True) for k, v in params.items()}

        def fwd(params=params):
            with torch.no_grad():
                model(**params)

        def fwd_bwd(params=params):
            model(**params).vertices.square().sum().backward()

        f = time_ms(fwd, repeats=repeats, sync=sync)
        fb = time_ms(fwd_bwd, repeats=repeats, sync=sync)
        results.append({"batch": batch, "fwd_ms": f["median_ms"], "fwd_bwd_ms": fb["median_ms"],
                        "fwd_bwd_min_ms": fb["min_ms"], "fwd_bwd_ms_per_item": fb["median_ms"] / batch})
    return {"benchmark": "model", "model": str(model_path), "device": device, "dtype": "float32",
            "vertices": model.num_vertices, "results": results, "environment": environment()}


@click.command(name="model")
@click.option("--flame", "model_path", type=click.Path(dir_okay=False), help="FLAME model file.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--repeats", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(model_path, device, repeats, as_json):
    """FLAME forward and forward+backward time (float32) for batch 1 and 64."""
    from flamefit.bench.common import emit

    report = run(model_path, device=device, repeats=repeats)
    emit(report, report["results"], ["batch", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_min_ms", "fwd_bwd_ms_per_item"],
         f"FLAME layer ({report['device']}, float32, {report['vertices']} vertices)", as_json)
