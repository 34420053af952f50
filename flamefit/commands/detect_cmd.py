"""`flamefit detect IMAGE|FOLDER... --out DIR`: 478/68 landmarks and skin masks for images.

A thin adapter over :mod:`flamefit.run` (the same batch loop as ``flamefit fit``; ``--workers`` / ``--ray`` work
the same). Per image it writes ``NAME.npz`` (``lmks_dense`` (478,2), ``lmks_68`` (68,2) in pixels of the original
image, ``mask`` (H,W) float32, ``confidence``, ``bbox``, ``image_size``), ``NAME_overlay.png`` (``--overlay``, on
by default) and ``NAME.done.json`` (the completion record, last). Detection is cheap, so every run redoes every
image (no skipping). With ``--json`` it prints one JSON object with the landmarks of every image on stdout
(per-image lines go to stderr). An image that fails is reported in one line and the others go on; the exit
status is then ItemsFailed's (see flamefit/errors.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from flamefit.commands._common import make_executor, run_options, take_shard
from flamefit.commands._options import threads_option
from flamefit.io.detections import draw_overlay  # noqa: F401 - re-exported: its old home


def _parse_select(value: str) -> str | int:
    if value == "largest":
        return value
    try:
        return int(value)
    except ValueError as exc:
        raise click.BadParameter("use 'largest' or a face index (0 = left-most face)") from exc


@click.command(name="detect")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Folder for NAME.npz and NAME_overlay.png (created if missing).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with all landmarks on stdout.")
@click.option("--select", default="largest", show_default=True,
              help="Which face: 'largest' or an index counted from the left (0-based).")
@click.option("--mask/--no-mask", default=True, show_default=True, help="Compute the skin mask.")
@click.option("--mask-backend", type=click.Choice(["landmarks", "bisenet"]), default="landmarks",
              show_default=True, help="Skin-mask method.")
@click.option("--bisenet-weights", type=click.Path(dir_okay=False, path_type=Path),
              help="Face-parsing weights 79999_iter.pth (for --mask-backend bisenet).")
@click.option("--overlay/--no-overlay", default=True, show_default=True, help="Write NAME_overlay.png.")
@click.option("--face-landmarker", "face_landmarker", type=click.Path(dir_okay=False, path_type=Path),
              help="MediaPipe face_landmarker.task for blendshape scores and the face transform (else "
                   "$FLAMEFIT_FACE_LANDMARKER, the config file, the data directory, the copy shipped with flamefit).")
@threads_option()
@run_options
@click.pass_context
def detect(ctx, images, out_dir, as_json, select, mask, mask_backend, bisenet_weights, overlay, face_landmarker,
           threads, workers, use_ray, ray_address, retries, recursive, shard, progress) -> None:
    """Detect MediaPipe's 478 landmarks, the 68 iBUG points and a skin mask in IMAGE files (or folders)."""
    from flamefit.commands._options import resolve_threads
    from flamefit.errors import ConfigError
    from flamefit.io.outputs import check_output_path
    from flamefit.jobs.photo import DETECT_WORKER
    from flamefit.observe.blendshapes import resolve_face_landmarker
    from flamefit.run import OK, Reporter, RunSpec, check_inputs, image_items, run_items

    if out_dir is None and not as_json:
        raise ConfigError("Nowhere to put the results: give --out DIR (files) and/or --json (stdout).")
    debug = bool((ctx.obj or {}).get("debug"))
    face = _parse_select(select)
    n_threads = resolve_threads(threads)  # validated here; applied in the workers (detection needs no torch)
    check_inputs(images)  # exit 4 before any work
    if out_dir is not None:
        check_output_path(out_dir)  # exit 8 before any work
    items = take_shard(image_items(images, recursive=recursive), shard)
    options = {"select": face, "mask": mask, "mask_backend": mask_backend, "overlay": overlay,
               "bisenet_weights": None if bisenet_weights is None else str(Path(bisenet_weights).resolve()),
               "landmarks_in_record": as_json}
    # resolved once here (flag, environment, config, data dir, installed packages): workers get the path or why not
    fl_path, fl_missing = resolve_face_landmarker(face_landmarker)
    options["face_landmarker"] = None if fl_path is None else str(fl_path)
    options["face_landmarker_missing"] = fl_missing
    spec = RunSpec(worker=DETECT_WORKER, out_dir=None if out_dir is None else str(out_dir), options=options,
                   outputs=["npz", *(["overlay"] if overlay else [])], threads=n_threads,
                   overwrite=True, retries=retries)
    with Reporter(enabled=progress and not as_json, label="images") as reporter:
        executor = make_executor(workers, use_ray, ray_address, debug=debug, reporter=reporter)
        summary = run_items(spec, items, executor=executor, reporter=reporter, skip_finished=False)
    if as_json:
        entries = []
        for rec in summary.records:
            entry: dict = {"source": rec.source, "ok": rec.status == OK}
            if rec.status == OK:
                entry.update(rec.data)
            else:
                entry.update(error=rec.message, error_type=rec.error_type)
            entries.append(entry)
        click.echo(json.dumps({"images": entries, "n_ok": summary.n_ok, "n_failed": summary.n_failed}))
    else:
        click.echo(f"{summary.n_ok} detected, {summary.n_failed} failed ({summary.seconds:.1f} s)", err=True)
    summary.raise_for_failures()
