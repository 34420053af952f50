"""flamefit's error hierarchy and exit codes.

Every error a user can cause derives from :class:`FlamefitError`; its message says what is wrong,
which file, and what to do. The CLI (``flamefit.cli.main``) prints the message as ONE line on stderr
(``error: ...``) and exits with the class's code; ``flamefit --debug ...`` shows the traceback instead.

Exit codes: one meaning per code, the same in every command (README "Exit codes" repeats this table):

====  =====================================================================================================
code  meaning
====  =====================================================================================================
0     success (every item written, or skipped because its complete outputs already existed)
1     failed for another reason a user can act on (:class:`FlamefitError` not listed below; click errors)
2     bad command line or configuration: unknown option, bad value, invalid config file or key
      (:class:`ConfigError`, click usage errors); nothing was done
3     a model/asset file is missing, unreadable, damaged, unsafe or of an unknown format
      (:class:`ModelFileError`, :class:`UnsafePickleError`); nothing was done
4     an input image or video is missing, unreadable or unusable (:class:`InputImageError`,
      :class:`VideoError`)
5     no face was found (:class:`FaceNotFound`)
6     the feature is not implemented in this version (:class:`NotYetImplemented`)
7     some items of a many-item run failed (each reported on its own stderr line) and the others were written
      or skipped as finished, or every item failed but not all for the same reason (:class:`ItemsFailed`)
8     the output path is unusable: an existing file where a folder is needed (or a folder where a file is), it
      cannot be created, it is not writable, or its disk has less than 50 MB free (:class:`OutputPathError`);
      checked before any model is loaded, nothing was done
70    unexpected internal error (a bug): one line "unexpected error ..."; rerun with --debug for the traceback
130   interrupted (Ctrl-C)
====  =====================================================================================================

Inputs and items. Input paths are checked before any model is loaded: a path that does not exist, or a file that
cannot be read, is exit 4 at once, naming the path (nothing was done). The contents (a damaged image, no face) are
only known per item: a run whose items all failed with the SAME exit code exits with that code (so a single input
gives its own error's code: 4 for an unreadable image or video, 5 for no face, 70 for a bug), any other run with
failed items exits 7 (see :func:`items_exit_code`).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_MODEL_FILE = 3
EXIT_INPUT = 4
EXIT_NO_FACE = 5
EXIT_NOT_IMPLEMENTED = 6
EXIT_ITEMS_FAILED = 7
EXIT_OUTPUT = 8
EXIT_INTERNAL = 70  # EX_SOFTWARE of BSD's sysexits.h
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_ERROR: "failed for another reason a user can act on",
    EXIT_USAGE: "bad command line or configuration (nothing was done)",
    EXIT_MODEL_FILE: "a model/asset file is missing, unreadable, damaged, unsafe or of an unknown format",
    EXIT_INPUT: "an input image or video is unreadable or unusable",
    EXIT_NO_FACE: "no face was found",
    EXIT_NOT_IMPLEMENTED: "not implemented in this version",
    EXIT_ITEMS_FAILED: "some items failed (each reported on stderr); the others were written, or the failures differ",
    EXIT_OUTPUT: "the output path is unusable (a file, not creatable, not writable, or < 50 MB free; nothing was done)",
    EXIT_INTERNAL: "unexpected internal error (a bug); rerun with --debug",
    EXIT_INTERRUPTED: "interrupted",
}


class FlamefitError(Exception):
    """Base class for errors a user can act on."""

    exit_code = EXIT_ERROR


class ConfigError(FlamefitError):
    """A command-line option, configuration file or config value is invalid."""

    exit_code = EXIT_USAGE


class ModelFileError(FlamefitError):
    """A model/asset file is missing, unreadable, damaged or of an unknown format."""

    exit_code = EXIT_MODEL_FILE


class UnsafePickleError(ModelFileError):
    """A pickle asked for a class that flamefit does not allow (it may carry code)."""


class InputImageError(FlamefitError):
    """An input image is unreadable or unusable."""

    exit_code = EXIT_INPUT


class VideoError(FlamefitError):
    """A video could not be read or written."""

    exit_code = EXIT_INPUT


class FaceNotFound(FlamefitError):
    """No face was found in an image."""

    exit_code = EXIT_NO_FACE


class NotYetImplemented(FlamefitError):
    """A feature that is planned but not implemented yet (never faked)."""

    exit_code = EXIT_NOT_IMPLEMENTED


class ItemsFailed(FlamefitError):
    """Some items of a run failed (each was reported on its own line); the others were written.

    ``exit_code`` (an instance's) is the items' own code when every item failed with that one code
    (:func:`items_exit_code`); the class's code is 7."""

    exit_code = EXIT_ITEMS_FAILED

    def __init__(self, message: str = "", exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = int(exit_code)


class OutputPathError(FlamefitError):
    """The output path is an existing file (or folder) in the way, cannot be created, is not writable, or its disk
    is (nearly) full; found before any work."""

    exit_code = EXIT_OUTPUT


def items_exit_code(failed_codes: list[int], n_items: int) -> int:
    """The exit code of a run of ``n_items`` items whose failed items had ``failed_codes``: 0 without failures;
    the shared code when every item failed with one code (a single input: its own error's code); else 7."""
    if not failed_codes:
        return EXIT_OK
    codes = {int(c or EXIT_ERROR) for c in failed_codes}
    if len(failed_codes) == n_items and len(codes) == 1:
        return codes.pop()
    return EXIT_ITEMS_FAILED


def items_failed(failed: list[tuple[str, str, int | None]], n_items: int, what: str = "items",
                 tail: str = "") -> ItemsFailed:
    """The :class:`ItemsFailed` of a run of ``n_items`` whose ``failed`` items are (source, message, exit code):
    a single input's own message and code; else "K of N <what> failed" with :func:`items_exit_code`'s code."""
    code = items_exit_code([c for _, _, c in failed], n_items)
    if n_items == len(failed) == 1:
        source, message, _ = failed[0]
        return ItemsFailed(message if source in message else f"{source}: {message}", exit_code=code)
    return ItemsFailed(f"{len(failed)} of {n_items} {what} failed{tail}", exit_code=code)


def one_line(text: object, limit: int = 2000) -> str:
    """``text`` as one line (newlines and runs of spaces collapsed), at most ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
