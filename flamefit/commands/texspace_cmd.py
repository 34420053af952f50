"""`flamefit texspace ...`: build a FLAME texture space from photos (fit -> unwrap -> inpaint -> PCA).

    flamefit texspace build PHOTOS... --out SPACE.npz [--work DIR] [--components K] [--iterations N]
    flamefit texspace unwrap PHOTOS... --work DIR          (fit + unwrap every photo: the run layer)
    flamefit texspace train-inpaint --work DIR             (the inpainting network, checkpointed, resumed)
    flamefit texspace inpaint --work DIR                   (complete every map)
    flamefit texspace pca --work DIR [--out SPACE.npz]     (PCA -> FLAME_texture.npz layout + preview)
    flamefit texspace preview SPACE.npz --out GRID.png     (first 5 components at +-2 sd)

A thin adapter over :mod:`flamefit.texspace.pipeline` (stages, work folder) and :mod:`flamefit.jobs.texspace` (the
unwrap stage's worker and job, the build's driver). Every stage is resumable: rerunning a command skips what is
finished.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from flamefit.commands._common import make_executor, run_options
from flamefit.commands._options import torch_options
from flamefit.texspace.pipeline import FILLS, GAUGES, PCA_METHODS

_FILL_HELP = ("How unknown texels are completed (default opencv_telea: the best on held-out strokes in `flamefit bench "
              "texspace`, 25.2 dB vs 23.9 for the trained network); network: train the inpainting net and use it.")


def _model_opts(fn):
    opts = [
        click.option("--flame", type=click.Path(dir_okay=False, path_type=Path),
                     help="FLAME model file (else $FLAMEFIT_FLAME_MODEL, the config file, the data directory)."),
        click.option("--texture-space", "texture_space", type=str,
                     help="Start space (FLAME_texture.npz, e.g. the stand-in's), or 'none' for a free albedo "
                          "(else $FLAMEFIT_TEXTURE_SPACE / the config file; none found = free albedo). Its UV "
                          "layout is the maps' layout (else the model's)."),
        click.option("--landmarks-static", type=click.Path(dir_okay=False, path_type=Path),
                     help="RingNet flame_static_embedding.pkl (else $FLAMEFIT_LANDMARKS_STATIC, ...)."),
        click.option("--landmarks-dynamic", type=click.Path(dir_okay=False, path_type=Path),
                     help="RingNet flame_dynamic_embedding.npy (else $FLAMEFIT_LANDMARKS_DYNAMIC, ...)."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Fit config file (TOML/YAML). The builder fits with texture.light=sh9 (SH shared by "
                          "the colour channels) unless --set says otherwise."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Fit config override, e.g. --set photometric.iters=80 (repeatable)."),
        click.option("--detections", type=click.Path(file_okay=False, path_type=Path),
                     help="Folder of NAME.npz landmarks/masks (`flamefit detect` outputs) used instead of "
                          "detecting; photos without one are detected."),
        click.option("--size", type=click.IntRange(min=16), help="Texels per map side (default 256)."),
        torch_options,
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _work_opt(required: bool = True):
    return click.option("--work", type=click.Path(path_type=Path), required=required,
                        help="Work folder (per-photo maps, network checkpoint, completed maps, spaces).")


def _iteration_opt(fn):
    return click.option("--iteration", type=click.IntRange(min=0), default=0, show_default=True,
                        help="Which iteration's folder (WORK/iterK) to work on.")(fn)


def _train_opts(fn):
    opts = [
        click.option("--fill", type=click.Choice(FILLS), help=_FILL_HELP),
        click.option("--inpaint-steps", type=click.IntRange(min=0), help="Network training steps (default 600)."),
        click.option("--inpaint-crop", type=click.IntRange(min=0),
                     help="Training crop side (multiple of 4; 0 = whole maps; default 128)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _space_opts(fn):
    opts = [
        click.option("--pca", "pca_method", type=click.Choice(PCA_METHODS),
                     help="'completed' (default): PCA of the filled maps; 'missing': EM-PCA that treats the texels "
                          "a photo did not see as missing data (the fills only start it; measured no better)."),
        click.option("--gauge", type=click.Choice(GAUGES),
                     help="'light_dc' (default): rescale each map to the set's median ambient light (a photo fixes "
                          "only albedo x light); 'none': each fit's own brightness."),
        click.option("--min-weight", type=click.FloatRange(min=0.0, max=1.0, max_open=True),
                     help="Texels with a lower unwrap weight (visibility x view-angle cosine x skin) are unknown "
                          "(default 0.3)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _fit_config(config_file, overrides) -> dict:
    import json

    from flamefit.fit.config import config_to_dict, load_config

    cfg = load_config(config_file, ["texture.light=sh9", *overrides])
    return json.loads(json.dumps(config_to_dict(cfg)))


def _unwrap_fn(images, *, flame, texture_space, landmarks_static, landmarks_dynamic, config_file, overrides,
               detections, size, device, threads, workers, use_ray, ray_address, retries, recursive, shard, progress,
               debug, reporter):
    """(the unwrap stage's job, resolved start space or None, resolved model path)."""
    from flamefit.commands._common import take_shard
    from flamefit.commands._options import resolve_threads
    from flamefit.jobs.texspace import UnwrapJob
    from flamefit.run import RunSpec, image_items, resolve_assets, resolve_cache_dir

    cfg_dict = _fit_config(config_file, overrides)
    assets = resolve_assets(flame, texture_space, landmarks_static, landmarks_dynamic)
    items = take_shard(image_items(images, recursive=recursive), shard)
    spec = RunSpec(worker="", assets=assets, cache_dir=resolve_cache_dir(), config=cfg_dict, device=str(device),
                   threads=resolve_threads(threads), retries=retries)
    job = UnwrapJob(items, spec, lambda: make_executor(workers, use_ray, ray_address, debug=debug, reporter=reporter),
                    reporter=reporter, size=size, detections=None if detections is None else str(detections))
    return job, assets.get("texture_space"), assets["flame"]


def _raise_items_failed(failed: list[dict], n_items: int, what: str) -> None:
    """The stage's failed photos as :func:`flamefit.errors.items_failed` (their own code when all failed alike)."""
    from flamefit.errors import items_failed

    raise items_failed([(f["source"], f["message"], f.get("exit_code")) for f in failed], n_items, what,
                       tail=" (listed above)")


def _log(msg: str) -> None:
    click.echo(f"texspace: {msg}", err=True)


def _echo_stage(doc: dict, what: str) -> None:
    if doc.get("skipped"):
        _log(f"{what}: already finished (skipped)")
    else:
        _log(f"{what}: done in {doc.get('seconds', 0):.1f} s (peak memory {doc.get('peak_rss_mb')} MB)")


def _failures(doc: dict) -> None:
    for f in doc.get("failed", []):
        _log(f"failed: {f['source']}: {f['message']}")


@click.group(name="texspace")
def texspace() -> None:
    """Build a FLAME texture space from photos: fit -> unwrap -> inpaint -> PCA (resumable stages)."""


@texspace.command(name="build")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The texture space to write (FLAME_texture.npz layout); also OUT_preview.png and OUT.json.")
@_work_opt(required=False)
@click.option("--components", type=click.IntRange(min=1), default=50, show_default=True,
              help="PCA components (at most photos - 1).")
@click.option("--iterations", type=click.IntRange(min=1, max=100), default=1, show_default=True,
              help="Rounds of fit -> ... -> PCA; each refits with the space the previous one built.")
@_model_opts
@_train_opts
@_space_opts
@run_options
@click.pass_context
def build(ctx, images, out, work, components, iterations, flame, texture_space, landmarks_static, landmarks_dynamic,
          config_file, overrides, detections, size, device, threads, fill, inpaint_steps, inpaint_crop, pca_method,
          gauge, min_weight, workers, use_ray, ray_address, retries, recursive, shard, progress) -> None:
    """Build a texture space from IMAGES (files or folders) into --out. Rerun the same command to resume."""
    from flamefit.commands._options import setup_torch
    from flamefit.io.outputs import check_output_path
    from flamefit.jobs.texspace import build as run_build
    from flamefit.run import Reporter, check_inputs
    from flamefit.texspace.pipeline import BuildConfig, open_work, with_defaults

    torch_device = setup_torch(device, threads)
    work = work or out.with_name(out.stem + "_work")
    check_inputs(images)  # exit 4 before the models load
    check_output_path(out, kind="file")  # exit 8 before the models load
    check_output_path(work, what="--work")
    base = open_work(work)[0] if (work / "build.json").is_file() else BuildConfig()
    cfg = with_defaults(base, components=components, iterations=iterations, size=size, fill=fill,
                        inpaint_steps=inpaint_steps, pca=pca_method, gauge=gauge, min_weight=min_weight)
    if inpaint_crop is not None:  # 0 = whole maps (None in the config)
        cfg = replace(cfg, inpaint_crop=inpaint_crop or None)
        cfg.validate()
    with Reporter(enabled=progress, label="photos") as reporter:
        unwrap, start, model = _unwrap_fn(
            images, flame=flame, texture_space=texture_space, landmarks_static=landmarks_static,
            landmarks_dynamic=landmarks_dynamic, config_file=config_file, overrides=overrides, detections=detections,
            size=cfg.size, device=torch_device, threads=threads, workers=workers, use_ray=use_ray,
            ray_address=ray_address, retries=retries, recursive=recursive, shard=shard, progress=progress,
            debug=bool((ctx.obj or {}).get("debug")), reporter=reporter)
        report = run_build(work, out, cfg, unwrap, start_space=start, flame=model, device=torch_device, log=_log)
    for f in report.failed:
        _log(f"failed: {f['source']}: {f['message']}")
    last = report.iterations[-1]
    pca = last["pca"]
    evr = pca.get("cumulative_explained_variance") or []
    _log(f"ok: {out} ({pca['components']} components from {pca['n_maps']} photos; first 5 explain "
         f"{100 * (evr[min(4, len(evr) - 1)] if evr else 0):.1f}% of the variance); work folder {work}")
    if report.failed:  # some photos (not all: that stopped the build) failed: exit 7
        from flamefit.errors import ItemsFailed

        raise ItemsFailed(f"{len(report.failed)} photos failed and were left out of {out} (listed above and in "
                          f"{out.with_suffix('.json')})")


@texspace.command(name="unwrap")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@_work_opt()
@_iteration_opt
@_model_opts
@run_options
@click.pass_context
def unwrap(ctx, images, work, iteration, flame, texture_space, landmarks_static, landmarks_dynamic, config_file,
           overrides, detections, size, device, threads, workers, use_ray, ray_address, retries, recursive, shard,
           progress) -> None:
    """Fit every photo and unwrap its albedo into WORK/iterK/unwrapped (the first stage of `build`)."""
    from flamefit.commands._options import setup_torch
    from flamefit.io.outputs import check_output_path
    from flamefit.run import Reporter, check_inputs
    from flamefit.texspace.pipeline import BuildConfig, Iteration, open_work, resolve_layout, with_defaults

    torch_device = setup_torch(device, threads)
    check_inputs(images)  # exit 4 before the models load
    check_output_path(work, what="--work")  # exit 8 before the models load
    it = Iteration(work, iteration)
    with Reporter(enabled=progress, label="photos") as reporter:
        exists = (work / "build.json").is_file()
        base, doc = open_work(work) if exists else (BuildConfig(), {})
        explicit_start = texture_space is not None
        if exists and not explicit_start:  # the folder's own start space
            texture_space = doc.get("start_space") or "none"
        cfg = with_defaults(base, size=size)
        job, start, model = _unwrap_fn(
            images, flame=flame, texture_space=texture_space, landmarks_static=landmarks_static,
            landmarks_dynamic=landmarks_dynamic, config_file=config_file, overrides=overrides, detections=detections,
            size=cfg.size, device=torch_device, threads=threads, workers=workers, use_ray=use_ray,
            ray_address=ray_address, retries=retries, recursive=recursive, shard=shard, progress=progress,
            debug=bool((ctx.obj or {}).get("debug")), reporter=reporter)
        open_work(work, cfg, start, None if exists else resolve_layout(model, start), check_start=explicit_start)
        space = str(it.previous_space()) if iteration else start
        doc = job.run(it, space)
    _echo_stage(doc, f"unwrap ({doc.get('n_ok', 0)} photos ready, {doc.get('n_failed', 0)} failed)")
    _failures(doc)
    if doc.get("failed"):
        _raise_items_failed(doc["failed"], len(doc["items"]), "photos")


@texspace.command(name="train-inpaint")
@_work_opt()
@_iteration_opt
@click.option("--steps", type=click.IntRange(min=0), help="Training steps (default: the work folder's, 600).")
@click.option("--force", is_flag=True, help="Train even if this stage finished (continues from the checkpoint).")
@torch_options
def train_inpaint(work, iteration, steps, force, device, threads) -> None:
    """Train the inpainting network on WORK's unwrapped maps (checkpointed; an interrupted run resumes)."""
    from flamefit.commands._options import setup_torch
    from flamefit.texspace.pipeline import Iteration, open_work, train_stage, with_defaults

    torch_device = setup_torch(device, threads)
    cfg = with_defaults(open_work(work)[0], inpaint_steps=steps)
    doc = train_stage(Iteration(work, iteration), cfg, device=torch_device, force=force)
    _echo_stage(doc, f"train-inpaint ({doc.get('step')} steps on {doc.get('n_maps')} maps)")


@texspace.command(name="inpaint")
@_work_opt()
@_iteration_opt
@click.option("--fill", type=click.Choice(FILLS), help=_FILL_HELP)
@torch_options
def inpaint(work, iteration, fill, device, threads) -> None:
    """Complete every unwrapped map of WORK (unknown texels filled) into WORK/iterK/completed."""
    from flamefit.commands._options import setup_torch
    from flamefit.texspace.pipeline import Iteration, inpaint_stage, open_work, with_defaults

    torch_device = setup_torch(device, threads)
    cfg, doc = open_work(work)
    cfg = with_defaults(cfg, fill=fill)
    if fill is not None:
        open_work(work, cfg)
    rec = inpaint_stage(Iteration(work, iteration), cfg, start_space=doc.get("start_space"), device=torch_device)
    _echo_stage(rec, f"inpaint ({rec.get('n_maps')} maps, {rec.get('fill')})")


@texspace.command(name="pca")
@_work_opt()
@_iteration_opt
@click.option("--components", type=click.IntRange(min=1), help="PCA components (default: the work folder's).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Also copy the space here (default: only WORK/iterK/space.npz).")
@click.option("--flame", type=click.Path(dir_okay=False, path_type=Path),
              help="Model for the preview's mean head (else resolved as usual; none: UV maps).")
@click.option("--force", is_flag=True, help="Redo the PCA even if it finished.")
@_space_opts
def pca(work, iteration, components, out, flame, force, pca_method, gauge, min_weight) -> None:
    """PCA over WORK's completed maps -> WORK/iterK/space.npz (FLAME_texture.npz layout), space.json, preview.png."""
    import shutil

    from flamefit.io.outputs import check_output_path
    from flamefit.texspace.pipeline import Iteration, open_work, pca_stage, with_defaults

    if out is not None:
        check_output_path(out, kind="file")
    cfg = with_defaults(open_work(work)[0], components=components, pca=pca_method, gauge=gauge, min_weight=min_weight)
    it = Iteration(work, iteration)
    doc = pca_stage(it, cfg, flame=None if flame is None else str(flame), force=force)
    _echo_stage(doc, f"pca ({doc.get('components')} components from {doc.get('n_maps')} maps)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(it.space, out)
        _log(f"ok: {out}")


@texspace.command(name="preview")
@click.argument("space", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="PNG to write.")
@click.option("--components", "n", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many components (rows).")
@click.option("--sd", type=click.FloatRange(min=0.0), default=2.0, show_default=True, help="+- this many sd.")
@click.option("--flame", type=click.Path(dir_okay=False, path_type=Path),
              help="Model whose mean head shows the albedos (else resolved as usual; none: UV maps).")
def preview_cmd(space, out, n, sd, flame) -> None:
    """Preview grid of SPACE: rows = components, columns = -sd, mean, +sd."""
    from flamefit.io.outputs import check_output_path
    from flamefit.texspace.pipeline import preview

    check_output_path(out, kind="file")
    path = preview(space, out, flame=None if flame is None else str(flame), n=n, sd=sd)
    _log(f"ok: {path}")
