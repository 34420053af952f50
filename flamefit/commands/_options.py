"""Shared ``--device`` / ``--threads`` options and the torch set-up every command does before any work.

Threads policy: flamefit runs torch with **one CPU thread per process by default**. On a 2-core machine that
is also doing something else, torch's default (one thread per core) makes every op wait for the slowest,
descheduled thread: the fit and ``bench model`` were measured up to 16x slower than with one thread, while on
an idle machine the gain from more threads is small for flamefit's small tensors (see README "Threads").
``--threads N`` or ``$FLAMEFIT_THREADS=N`` changes it (``auto`` = torch's own default, one per core).
Order: the flag, then the environment variable, then 1.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import click

from flamefit.errors import ConfigError

if TYPE_CHECKING:
    import torch

ENV_THREADS = "FLAMEFIT_THREADS"
DEFAULT_THREADS = 1
MAX_THREADS = 1024
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_VALID_DEVICES = "cpu, cuda, cuda:N (N = GPU index)"


def parse_threads(value: str | int | None, source: str = "--threads") -> int | None:
    """Check a threads value: an integer in [1, 1024], or ``auto`` (returns None = torch's default)."""
    if value is None:
        return DEFAULT_THREADS
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return None
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{source}: {value!r} is not a number of threads; use an integer from 1 to "
                              f"{MAX_THREADS}, or 'auto' for torch's default (one per core)") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THREADS:
        raise ConfigError(f"{source}: {value!r} threads is out of range; use an integer from 1 to {MAX_THREADS}, "
                          "or 'auto' for torch's default (one per core)")
    return value


def resolve_threads(threads: str | int | None) -> int | None:
    """The threads to use: ``threads`` (the flag) if given, else ``$FLAMEFIT_THREADS``, else 1.

    None means torch's default (``auto``)."""
    if threads is not None:
        return parse_threads(threads, "--threads")
    env = os.environ.get(ENV_THREADS)
    if env is not None and env.strip():
        return parse_threads(env, f"${ENV_THREADS}")
    return DEFAULT_THREADS


def parse_device(device: str | None) -> str:
    """Check the form of a device string (cpu, cuda, cuda:N) without importing torch; returns it normalised."""
    text = "cpu" if device is None else str(device).strip().lower()
    if not _DEVICE_RE.match(text):
        raise ConfigError(f"--device: unknown device {device!r}; valid forms: {_VALID_DEVICES}")
    return text


def setup_torch(device: str | None, threads: str | int | None) -> torch.device:
    """Validate ``device`` and ``threads``, apply the threads policy, and return the torch device.

    Raises ConfigError (one line, says what to do) for an unknown device form, a CUDA device when none is
    visible or the index is out of range, or a threads value outside [1, 1024]. Call it before any work.
    """
    name = check_device(device)
    n_threads = resolve_threads(threads)
    import torch

    if n_threads is not None and torch.get_num_threads() != n_threads:
        torch.set_num_threads(n_threads)
    return torch.device(name)


def check_device(device: str | None) -> str:
    """:func:`parse_device`, then check that a CUDA device is visible (ConfigError saying to use --device cpu)."""
    name = parse_device(device)
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA device is visible to torch (CPU-only torch build, no GPU, "
                              "or CUDA_VISIBLE_DEVICES hides it); use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"--device {name}: only {count} CUDA device(s) visible (indices 0 to {count - 1}); "
                              "use one of those or --device cpu")
    return name


def device_option(default: str = "cpu"):
    """``--device``: cpu, cuda or cuda:N (validated by :func:`setup_torch`)."""
    return click.option("--device", default=default, show_default=True,
                        help=f"torch device: {_VALID_DEVICES}.")


def threads_option():
    """``--threads``: torch CPU threads (default 1, or $FLAMEFIT_THREADS; 'auto' = one per core)."""
    return click.option("--threads", type=str, default=None, metavar="N|auto",
                        help=f"torch CPU threads (default ${ENV_THREADS}, else {DEFAULT_THREADS}: fastest on a busy "
                             "machine; 'auto' = one per core).")


def torch_options(fn):
    """Both ``--device`` and ``--threads`` (pass them to :func:`setup_torch`)."""
    return device_option()(threads_option()(fn))
