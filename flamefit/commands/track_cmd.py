"""`flamefit track VIDEO --out DIR`: per-frame FLAME through a video (see :mod:`flamefit.track`).

A thin adapter: flags -> :class:`flamefit.track.TrackConfig`, the fitter from the same model options as ``fit``,
then :func:`flamefit.track.track_video` (one stream, in this process) or, with ``--workers N``/``--ray``,
:func:`flamefit.jobs.track.track_parallel` (overlapping segments on the run layer). Rerunning the same command
continues where a killed run stopped.
"""

from __future__ import annotations

from pathlib import Path

import click

from flamefit.commands.fit_cmd import _config, _model_options


@click.command(name="track")
@click.argument("video", type=click.Path(path_type=Path))
@_model_options
@click.option("--mode", type=click.Choice(["landmarks", "photometric"]), default="landmarks", show_default=True,
              help="landmarks: pose/expression from landmarks; photometric: also texture and per-frame light.")
@click.option("--fps", type=float, help="Track F frames per second of video time (default: every frame).")
@click.option("--every", type=click.IntRange(min=1), help="Track every N-th frame of the source.")
@click.option("--start", "start_s", type=float, help="Start time in seconds.")
@click.option("--end", "end_s", type=float, help="End time in seconds (exclusive).")
@click.option("--identity-frames", type=click.IntRange(min=1), default=12, show_default=True,
              help="Frames spread over the clip for the identity (shape/texture) fit.")
@click.option("--identity-photometric/--identity-landmarks-only", default=True, show_default=True,
              help="Landmark mode: fit the identity with a photometric stage too (its shape, texture and light; "
                   "~10 s more per clip, 1.60 -> 1.23 mm per frame on ../shared/eval's clip).")
@click.option("--window", type=click.IntRange(min=1), default=8, show_default=True,
              help="New frames per optimisation window.")
@click.option("--lag", "tail", type=click.IntRange(min=0), default=3, show_default=True,
              help="Frames each frame waits for before it is final (refitted with them as its future).")
@click.option("--smoothing", "temporal_weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Factor on the temporal terms and the smoother (0: no temporal smoothing).")
@click.option("--smooth", type=click.Choice(["zero-lag", "window"]), default="zero-lag", show_default=True,
              help="zero-lag: a two-sided smoother with --smooth-lag frames of past and future (no phase lag, one "
                   "head size/distance through the shot); window: the optimisation windows' temporal terms only "
                   "(output --lag frames behind the input).")
@click.option("--smooth-lag", type=click.IntRange(min=1), default=40, show_default=True,
              help="Frames of future the zero-lag smoother waits for (its latency).")
@click.option("--blendshapes/--no-blendshapes", default=True, show_default=True,
              help="Also measure MediaPipe's 52 blendshape scores per frame (a second MediaPipe pass).")
@click.option("--overlay/--no-overlay", default=True, show_default=True,
              help="Write overlay.mp4 (input | render | blend) in a final pass.")
@click.option("--mesh/--no-mesh", default=True, show_default=True,
              help="Write mesh.obj + mesh.pc2 (point cache of every tracked frame; Blender: Mesh Cache modifier).")
@click.option("--overwrite", is_flag=True, help="Track again from scratch (identity and frames).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Track overlapping segments in N local worker processes (0: one stream in this process).")
@click.option("--ray", "use_ray", is_flag=True, help="Track the segments on a local Ray.")
@click.option("--ray-address", metavar="ADDR", help="Track the segments on the Ray cluster at ADDR.")
@click.option("--segment-s", type=click.FloatRange(min=1.0), default=20.0, show_default=True,
              help="Segment length in seconds (with --workers/--ray).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress display.")
@click.pass_context
def track(ctx, video, flame, texture_space, landmarks_static, landmarks_dynamic, config_file, overrides, device,
          threads, out_dir, mode, fps, every, start_s, end_s, identity_frames, identity_photometric, window, tail,
          temporal_weight, smooth, smooth_lag, blendshapes, overlay, mesh, overwrite, workers, use_ray, ray_address,
          segment_s, progress) -> None:
    """Track FLAME through VIDEO: DIR/frames/NNNNNN.npz per frame, identity.npz, track.json, overlay.mp4,
    mesh.obj + mesh.pc2."""
    from flamefit.commands._common import make_executor
    from flamefit.commands._options import setup_torch
    from flamefit.errors import ConfigError, VideoError
    from flamefit.fit.api import build_fitter
    from flamefit.io.outputs import check_output_path
    from flamefit.observe.video import probe_video
    from flamefit.run import Reporter, RunSpec, check_inputs, resolve_assets, resolve_cache_dir
    from flamefit.track import MediaPipeFrames, TrackConfig, track_video
    from flamefit.track.video import check_selection

    if fps is not None and every is not None:
        raise ConfigError("give either --fps or --every, not both")
    torch_device = setup_torch(device, threads)
    cfg, cfg_dict = _config(config_file, overrides)
    tcfg = TrackConfig(mode=mode, identity_frames=identity_frames, identity_photometric=identity_photometric,
                       window=window, tail=tail, temporal_weight=temporal_weight, smooth=smooth, smooth_lag=smooth_lag)
    tcfg.validate()
    check_inputs([video], what="video", error=VideoError)
    if video.is_dir():
        raise VideoError(f"{video} is a folder; give a video file")
    # a file that is no video: exit 4 now, not after the models loaded; a start past its end: exit 2 now
    check_selection(video, probe_video(video), start_s, end_s)
    check_output_path(out_dir)  # exit 8 now, not after the identity fit
    a = resolve_assets(flame, texture_space, landmarks_static, landmarks_dynamic)
    fitter = build_fitter(a["flame"], a["texture_space"] or "none", cfg, device=torch_device,
                          landmarks_static=a["landmarks_static"], landmarks_dynamic=a["landmarks_dynamic"])
    detector = MediaPipeFrames(blendshapes=blendshapes)
    kw = dict(fps=fps, every=every, start_s=start_s, end_s=end_s, overwrite=overwrite)
    try:
        if workers or use_ray or ray_address:
            from flamefit.jobs.track import track_parallel
            from flamefit.track.video import render_overlay

            spec = RunSpec(worker="", assets=a, cache_dir=resolve_cache_dir(), config=cfg_dict,
                           options={"blendshapes": blendshapes}, device=str(torch_device),
                           threads=setup_threads(threads))
            with Reporter(enabled=progress, label="segments") as reporter:
                doc = track_parallel(video, out_dir, fitter, detector, tcfg, spec,
                                     make_executor(workers, use_ray, ray_address), segment_s=segment_s,
                                     reporter=reporter, **kw)
            if mesh or overlay:
                from flamefit.track.outputs import write_point_cache, write_summary

                if mesh:
                    doc["mesh"] = write_point_cache(out_dir, fitter, fps or 25.0)
                if overlay:
                    doc["overlay"] = render_overlay(video, out_dir, fitter, fps=fps, every=every, start_s=start_s,
                                                    end_s=end_s)
                write_summary(out_dir, doc)
        else:
            doc = track_video(video, out_dir, fitter, detector, tcfg, overlay=overlay, mesh=mesh, **kw)
    finally:
        detector.close()
    fr = doc["frames"]
    click.echo(f"ok: {video} -> {out_dir}: {fr['done_total']} frames tracked ({fr['written_this_run']} this run), "
               f"{fr['no_face']} without a face, {fr['failed']} failed", err=True)
    if fr["failed"]:
        from flamefit.errors import ItemsFailed

        raise ItemsFailed(f"{fr['failed']} frames of {video} failed (see {out_dir / 'track.json'})")


def setup_threads(threads) -> int | None:
    from flamefit.commands._options import resolve_threads

    return resolve_threads(threads)
