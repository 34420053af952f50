"""Files: the one atomic write and the one cache folder.

Imports nothing from flamefit, so every layer may use it (tests/test_architecture.py checks both: its imports,
and that no other module calls ``os.replace``).

* :func:`atomic_path` / :class:`AtomicPath`: a temporary sibling of the target to write by name (``np.savez``,
  ``PIL.Image.save``, ``torch.save``, a video container ...), moved onto the target with ``os.replace`` on
  success (readers see the old file or the new one, never half of one) and deleted on failure.
* :func:`atomic_write_bytes` / :func:`atomic_write_text`: the same for data in memory, fsynced by default.
* :func:`cache_dir` / :func:`env_cache_dir`: where flamefit caches derived data (``$FLAMEFIT_CACHE_DIR``, else
  the platform's user cache folder).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

CACHE_DIR_ENV = "FLAMEFIT_CACHE_DIR"


def unique_tmp_name(path: str | os.PathLike) -> Path:
    """A hidden temporary sibling of ``path``, unique per process and call, keeping the suffix (``.tmp-`` names
    are what :func:`flamefit.io.outputs.remove_stale_temporaries` cleans up after killed runs)."""
    path = Path(path)
    return path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}-{path.name}")


class AtomicPath:
    """A temporary sibling :attr:`tmp` of ``path`` (same folder, so the final ``os.replace`` is atomic).

    As a context manager (see :func:`atomic_path`) it yields :attr:`tmp`, :meth:`commit` s on success and
    :meth:`discard` s on an exception; writers that live longer than one block (a video writer) call the two
    themselves. ``suffix``: the temporary name ends with it (default: ``path``'s own suffix), for writers that
    pick the format from the name or append an extension that is missing (``np.savez`` adds ``.npz``)."""

    def __init__(self, path: str | os.PathLike, suffix: str | None = None):
        self.path = Path(path)
        tmp = unique_tmp_name(self.path)
        if suffix and not tmp.name.endswith(suffix):
            tmp = tmp.with_name(tmp.name + suffix)
        self.tmp = tmp

    def commit(self) -> Path:
        """Move the finished temporary file onto ``path``; returns ``path``."""
        try:
            os.replace(self.tmp, self.path)
        finally:
            self.discard()
        return self.path

    def discard(self) -> None:
        """Delete the temporary file if it is there (``path`` is not touched)."""
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> AtomicPath:
    """``with atomic_path(path) as tmp: writer(tmp)``: ``tmp`` replaces ``path`` when the block succeeds and is
    deleted when it raises (see :class:`AtomicPath`)."""
    return AtomicPath(path, suffix)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` via a unique temporary file and ``os.replace`` (readers see old or new);
    ``fsync``: flush the data to the disk before the replace."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    """:func:`atomic_write_bytes` of ``text`` as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def env_cache_dir() -> Path | None:
    """``$FLAMEFIT_CACHE_DIR`` (``~`` expanded, made absolute) when set and not empty, else None."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser().resolve() if env else None


def cache_dir() -> Path:
    """Where flamefit caches derived data: :func:`env_cache_dir`, else the platform's user cache folder
    (``platformdirs.user_cache_dir('flamefit')``). Callers add their own subfolder."""
    env = env_cache_dir()
    if env is not None:
        return env
    import platformdirs

    return Path(platformdirs.user_cache_dir("flamefit"))
