"""`flamefit fit IMAGE|FOLDER... --out DIR` and `flamefit fit-texture FIT.npz IMAGE --out DIR`.

``fit`` is a thin adapter over :mod:`flamefit.run`: assets are resolved and the config is validated once, here;
then the items (image files; folders expand to their images) run in this process, in ``--workers N`` local
processes, or on Ray (``--ray`` / ``--ray-address``). Per image it writes, into DIR:

- always ``NAME.npz`` (all arrays) and ``NAME.json`` (parameters, camera in OpenCV and OpenGL conventions,
  timings, config, ``missing``: fields that could not be computed and why);
- ``NAME_mesh.obj`` + ``.mtl`` + ``NAME_mesh.png`` and ``NAME.glb`` (``--mesh``, on by default),
  ``NAME_overlay.png`` (input | render | blend; ``--overlay``, on by default), ``NAME_render.png`` (RGBA
  render; ``--render``, off by default);
- ``NAME.done.json`` last: the completion record (each file's size and sha256). Reruns skip an image only when
  its record and files agree (``--verify`` also checks the hashes; on by default) unless ``--overwrite``;

plus ``config.yaml`` (the config used). Names are the file stems; inputs with the same stem get their parent
folders prefixed (``a/face.png`` -> ``a_face``). An image that fails is reported on stderr in one line and the
others go on; the exit status is then ItemsFailed's (see flamefit/errors.py).
"""

from __future__ import annotations

from pathlib import Path

import click

from flamefit.commands._common import make_executor, run_options, take_shard
from flamefit.commands._options import torch_options

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
    torch_options,
    click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
                 help="Output folder (created if missing)."),
]


def _model_options(fn):
    for opt in reversed(_MODEL_OPTIONS):
        fn = opt(fn)
    return fn


def _config(config_file, overrides) -> tuple:
    """The validated config, and the same as a JSON-able dict (what the run spec carries)."""
    import json

    from flamefit.fit.config import config_to_dict, load_config

    cfg = load_config(config_file, overrides)
    return cfg, json.loads(json.dumps(config_to_dict(cfg)))


def _save_config(cfg_dict: dict, out_dir: Path) -> None:
    import yaml

    from flamefit.io.outputs import atomic_write_text

    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False))


@click.command(name="fit")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@_model_options
@run_options
@click.option("--mesh/--no-mesh", default=True, show_default=True,
              help="Write NAME_mesh.obj (+.mtl, .png) and NAME.glb.")
@click.option("--overlay/--no-overlay", default=True, show_default=True, help="Write NAME_overlay.png.")
@click.option("--render/--no-render", default=False, show_default=True, help="Write NAME_render.png (RGBA).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Before skipping a finished image, check its files' sha256 against the completion record.")
@click.option("--overwrite", is_flag=True, help="Refit images whose outputs already exist.")
@click.option("--face-landmarker", "face_landmarker", type=click.Path(dir_okay=False, path_type=Path),
              help="MediaPipe face_landmarker.task for blendshape scores and the face transform (else "
                   "$FLAMEFIT_FACE_LANDMARKER, the config file, the data directory, the copy shipped with flamefit).")
@click.pass_context
def fit(ctx, images, flame, texture_space, landmarks_static, landmarks_dynamic, config_file, overrides, device,
        threads, out_dir, workers, use_ray, ray_address, retries, recursive, shard, progress, mesh, overlay, render,
        verify, overwrite, face_landmarker) -> None:
    """Fit FLAME (shape, expression, pose, camera, texture, light) to each IMAGE (files or folders)."""
    from flamefit.commands._options import resolve_threads, setup_torch
    from flamefit.io.outputs import check_output_path
    from flamefit.io.results import normalise_outputs
    from flamefit.jobs.photo import FIT_WORKER
    from flamefit.run import Reporter, RunSpec, check_inputs, image_items, resolve_assets, resolve_cache_dir, run_items

    debug = bool((ctx.obj or {}).get("debug"))
    torch_device = setup_torch(device, threads)  # validates --device/--threads before any work
    cfg, cfg_dict = _config(config_file, overrides)
    check_inputs(images)  # exit 4 now, not after the models loaded
    check_output_path(out_dir)  # exit 8 now, not after the fit
    assets = resolve_assets(flame, texture_space, landmarks_static, landmarks_dynamic,
                            face_landmarker=face_landmarker)
    items = take_shard(image_items(images, recursive=recursive), shard)
    kinds = [k for k, on in (("mesh", mesh), ("overlay", overlay), ("render", render)) if on]
    spec = RunSpec(worker=FIT_WORKER, out_dir=str(out_dir), assets=assets, cache_dir=resolve_cache_dir(),
                   config=cfg_dict, outputs=list(normalise_outputs(kinds)), device=str(torch_device),
                   threads=resolve_threads(threads), overwrite=overwrite, verify_hashes=verify, retries=retries)
    out_dir.mkdir(parents=True, exist_ok=True)
    with Reporter(enabled=progress, label="images") as reporter:
        executor = make_executor(workers, use_ray, ray_address, debug=debug, reporter=reporter)
        summary = run_items(spec, items, executor=executor, reporter=reporter)
    if summary.n_ok:  # a run that only skipped must not replace the config its results were made with
        _save_config(cfg_dict, out_dir)
    click.echo(f"{summary.n_ok} fitted, {summary.n_skipped} skipped (already done), {summary.n_failed} failed "
               f"({summary.seconds:.1f} s)", err=True)
    summary.raise_for_failures()


@click.command(name="fit-texture")
@click.argument("fit_npz", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@_model_options
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress display.")
@click.pass_context
def fit_texture(ctx, fit_npz, image, flame, texture_space, landmarks_static, landmarks_dynamic, config_file,
                overrides, device, threads, out_dir, progress) -> None:
    """Keep the geometry and camera of FIT_NPZ (from `flamefit fit`) and refit only texture and light to IMAGE.

    Writes NAME_texture.npz/.json/_mesh.obj/.glb/_overlay.png (+ NAME_texture.done.json) into --out.
    """
    from flamefit.commands._options import setup_torch
    from flamefit.fit.api import build_fitter
    from flamefit.fit.api import fit_texture as _fit_texture
    from flamefit.io.outputs import check_output_path
    from flamefit.io.results import save_result
    from flamefit.run import Reporter, check_inputs, resolve_assets

    torch_device = setup_torch(device, threads)
    cfg, cfg_dict = _config(config_file, overrides)
    check_inputs([fit_npz, image], what="file")
    check_output_path(out_dir)
    a = resolve_assets(flame, texture_space, landmarks_static, landmarks_dynamic)
    fitter = build_fitter(a["flame"], a["texture_space"] or "none", cfg, device=torch_device,
                          landmarks_static=a["landmarks_static"], landmarks_dynamic=a["landmarks_dynamic"])
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{Path(image).stem}_texture"
    with Reporter(enabled=progress, label="images") as reporter:
        reporter.start(1)
        result = _fit_texture(fit_npz, image, fitter, callback=lambda st, i, n: reporter.stage(name, st, i, n))
    faces = fitter.faces.cpu().numpy()
    vt = None if fitter.vt is None else fitter.vt.cpu().numpy()
    ft = None if fitter.ft is None else fitter.ft.cpu().numpy()
    save_result(result, out_dir, faces, vt, ft, config=cfg_dict, name=name, source=str(image), kind="fit-texture")
    _save_config(cfg_dict, out_dir)
    click.echo(f"ok: {image} -> {out_dir / name}.npz", err=True)
