"""The ``flamefit`` command line.

Subcommands live in ``flamefit/commands/*.py`` and are imported lazily, so ``flamefit --help`` is fast
(torch is only imported by the commands that need it). Every error is printed as one line on stderr and mapped
to the exit code documented in :mod:`flamefit.errors` (the same in every command); ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

# name -> "module:attribute" of a click command/group. Each feature owns its module.
_COMMANDS: dict[str, tuple[str, str]] = {
    "model": ("flamefit.commands.model_cmd:model", "Inspect FLAME model files (`model info`)."),
    "bench": ("flamefit.commands.bench_cmd:bench", "Performance benchmarks (tables, or --json)."),
    "detect": ("flamefit.commands.detect_cmd:detect", "Detect 478/68 landmarks and skin masks in images."),
    "fit": ("flamefit.commands.fit_cmd:fit", "Fit FLAME to images (shape, expression, pose, texture, light)."),
    "fit-texture": ("flamefit.commands.fit_cmd:fit_texture", "Refit only the texture of a saved fit."),
    "track": ("flamefit.commands.track_cmd:track", "Track FLAME through a video (per-frame npz, overlay, mesh cache)."),
    "texspace": ("flamefit.commands.texspace_cmd:texspace", "Build a texture space from photos (fit, unwrap, PCA)."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        target, _ = _COMMANDS[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # the feature's module is not written yet
                return _not_available(name)
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the short help stored here so `--help` does not import every subcommand.
        rows = [(name, help_) for name, (_, help_) in sorted(_COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _not_available(name: str) -> click.Command:
    @click.command(name=name, help="Not available in this version.")
    def _cmd() -> None:
        raise click.ClickException(f"`flamefit {name}` is not implemented in this version yet.")

    return _cmd


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flamefit")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """flamefit: fit the FLAME head model to photos and videos.

    Model files are found through --flame, then $FLAMEFIT_FLAME_MODEL, then the config file
    (~/.config/flamefit/config.toml), then the per-user data directory. Run `flamefit model info`
    to see what is found.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI; every error becomes ONE line on stderr and the exit code documented in
    :mod:`flamefit.errors` (flamefit errors by class, click usage errors 2, anything unexpected 70 with a hint to
    rerun with --debug, Ctrl-C 130). ``--debug`` lets the traceback through instead."""
    from flamefit.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, FlamefitError, one_line

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # Without standalone mode, click returns what ctx.exit(n) was given instead of exiting.
        result = cli.main(args=args, prog_name="flamefit", standalone_mode=False)
    except FlamefitError as exc:
        if debug:
            raise
        click.echo(f"error: {one_line(exc)}", err=True)
        return int(getattr(exc, "exit_code", 1) or 1)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.UsageError as exc:
        if exc.ctx is not None and type(exc).__name__ == "NoArgsIsHelpError":  # `flamefit`, `flamefit model`
            click.echo(exc.ctx.get_help())
            return 0
        # One line: the message and where to look (click's own display adds a multi-line usage block).
        cmd = exc.ctx.command_path if exc.ctx is not None else "flamefit"
        click.echo(f"error: {one_line(exc.format_message()).rstrip('.')}; see `{cmd} --help`", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"error: {one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:  # e.g. `flamefit ... | head`: the reader left; not an error of ours
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
        if debug:
            raise
        click.echo(f"error: unexpected error ({type(exc).__name__}: {one_line(exc, 300)}). This is a bug in flamefit; "
                   "rerun with --debug for the traceback and report it.", err=True)
        return EXIT_INTERNAL
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
