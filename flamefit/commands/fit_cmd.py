"""`flamefit fit IMAGE... --out DIR` and `flamefit fit-texture FIT.npz IMAGE --out DIR`.

Per image ``fit`` writes ``NAME.npz`` (all arrays), ``NAME.json`` (parameters, camera in OpenCV and OpenGL
conventions, timings, the config), ``NAME_mesh.obj`` + ``.mtl`` + ``NAME_mesh.png`` (textured mesh), ``NAME.glb``
and ``NAME_overlay.png`` (input | render | blend), plus ``config.yaml`` (the config used) in DIR. An image that
fails (unreadable, no face) is reported and the others go on; the exit status is 0 only when all succeeded.
Reruns skip images whose outputs all exist unless ``--overwrite``.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from flamefit.commands._common import unique_stems

_MODEL_OPTIONS = [
    click.option("--flame", "flame", type=click.Path(dir_okay=False, path_type=Path),
                 help="FLAME model file (else $FLAMEFIT_FLAME_MODEL, the config file, the data directory)."),
    click.option("--texture-space", "texture_space", type=str,
                 help="FLAME_texture.npz / FLAME_albedo_from_BFM.npz, or 'none' for a free albedo map "
                      "(else $FLAMEFIT_TEXTURE_SPACE, the config file; none found = free albedo)."),
    click.option("--landmarks-static", type=click.Path(dir_okay=False, path_type=Path),
                 help="RingNet flame_static_embedding.pkl (else $FLAMEFIT_LANDMARKS_STATIC, ...)."),
    click.option("--landmarks-dynamic", type=click.Path(dir_okay=False, path_type=Path),
                 help="RingNet flame_dynamic_embedding.npy (else $FLAMEFIT_LANDMARKS_DYNAMIC, ...)."),
    click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                 help="Fit config file (TOML or YAML; see flamefit/fit/config.py for the keys)."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override a config value, e.g. --set photometric.iters=50 (repeatable)."),
    click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1, ..."),
    click.option("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is best on a busy CPU)."),
    click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                 help="Output folder (created if missing)."),
    click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress display."),
]


def _model_options(fn):
    for opt in reversed(_MODEL_OPTIONS):
        fn = opt(fn)
    return fn


def _build(flame, texture_space, landmarks_static, landmarks_dynamic, config_file, overrides, device, threads=None):
    from flamefit.fit.api import build_fitter

    if threads:
        import torch

        torch.set_num_threads(threads)
    from flamefit.fit.config import load_config

    cfg = load_config(config_file, overrides)
    fitter = build_fitter(flame, texture_space, cfg, device=device, landmarks_static=landmarks_static,
                          landmarks_dynamic=landmarks_dynamic)
    return fitter, cfg


class _Progress:
    """rich progress: one bar for the images, one for the current image's stages."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                                "{task.total}"), TimeElapsedColumn(), transient=True)
            self.images = self.bar.add_task("images", total=total)
            self.stage = self.bar.add_task("", total=1, visible=False)

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def log(self, text: str, err: bool = False) -> None:
        if self.bar:
            self.bar.console.print(text, markup=False, highlight=False)
        else:
            click.echo(text, err=err)

    def callback(self, name: str):
        if not self.bar:
            return None

        def cb(stage: str, i: int, n: int) -> None:
            self.bar.update(self.stage, description=f"{name}: {stage}", completed=i, total=n, visible=True)

        return cb

    def advance(self) -> None:
        if self.bar:
            self.bar.advance(self.images)


def _save(fitter, result, out_dir: Path, name: str, cfg):
    from flamefit.io.results import save_result

    vt = None if fitter.vt is None else fitter.vt.cpu().numpy()
    ft = None if fitter.ft is None else fitter.ft.cpu().numpy()
    return save_result(result, out_dir, fitter.faces.cpu().numpy(), vt, ft, config=cfg, name=name)


@click.command(name="fit")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@_model_options
@click.option("--overwrite", is_flag=True, help="Refit images whose outputs already exist.")
@click.pass_context
def fit(ctx, images, flame, texture_space, landmarks_static, landmarks_dynamic, config_file, overrides, device,
        threads, out_dir, progress, overwrite) -> None:
    """Fit FLAME (shape, expression, pose, camera, texture, light) to each IMAGE."""
    from flamefit.errors import FlamefitError
    from flamefit.fit.api import target_from_input
    from flamefit.fit.config import save_config
    from flamefit.fit.result import make_result
    from flamefit.io.results import is_finished

    debug = bool((ctx.obj or {}).get("debug"))
    images = [Path(p) for p in images]
    names = unique_stems(images)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [(p, n) for p, n in zip(images, names, strict=True) if overwrite or not is_finished(out_dir, n)]
    skipped = len(images) - len(todo)
    failed = []
    if todo:
        fitter, cfg = _build(flame, texture_space, landmarks_static, landmarks_dynamic, config_file, overrides,
                             device, threads)
        save_config(cfg, out_dir / "config.yaml")
    with _Progress(progress and bool(todo), len(todo)) as prog:
        for path, name in todo:
            t_image = time.perf_counter()
            try:
                target = target_from_input(path)
                target.name = name
                raw = fitter.fit(target, callback=prog.callback(name))
                result = make_result(fitter, raw)
                _save(fitter, result, out_dir, name, cfg)
                fit_s = sum(s.seconds for s in raw.stages) + raw.init_seconds
                prog.log(f"ok: {path} -> {out_dir / name}.npz ({time.perf_counter() - t_image:.1f} s; "
                         f"fit {fit_s:.1f} s)")
            except FlamefitError as exc:
                if debug:
                    raise
                failed.append(path)
                prog.log(f"error: {path}: {exc}", err=True)
            except Exception as exc:  # noqa: BLE001 - one broken image must not stop the batch
                if debug:
                    raise
                failed.append(path)
                prog.log(f"error: {path}: unexpected {type(exc).__name__}: {exc} (rerun with --debug)", err=True)
            prog.advance()
    done = len(todo) - len(failed)
    click.echo(f"{done} fitted, {skipped} skipped (already done), {len(failed)} failed", err=True)
    if failed:
        # an exception (not click's Exit) so flamefit.cli.main turns it into a non-zero exit status
        raise FlamefitError(f"{len(failed)} of {len(images)} images failed: {', '.join(map(str, failed))}")


@click.command(name="fit-texture")
@click.argument("fit_npz", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@_model_options
@click.pass_context
def fit_texture(ctx, fit_npz, image, flame, texture_space, landmarks_static, landmarks_dynamic, config_file,
                overrides, device, threads, out_dir, progress) -> None:
    """Keep the geometry and camera of FIT_NPZ (from `flamefit fit`) and refit only texture and light to IMAGE.

    Writes NAME_texture.npz/.json/_mesh.obj/.glb/_overlay.png into --out.
    """
    from flamefit.fit.api import fit_texture as _fit_texture
    from flamefit.fit.config import save_config

    fitter, cfg = _build(flame, texture_space, landmarks_static, landmarks_dynamic, config_file, overrides,
                         device, threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{Path(image).stem}_texture"
    with _Progress(progress, 1) as prog:
        result = _fit_texture(fit_npz, image, fitter, callback=prog.callback(name))
        _save(fitter, result, out_dir, name, cfg)
        save_config(cfg, out_dir / "config.yaml")
    click.echo(f"ok: {image} -> {out_dir / name}.npz", err=True)
