"""Safe output sets: the files of one item are written together, atomically, and marked finished last.

Every command that writes per-item files (``fit``, ``detect``, ...) goes through :class:`OutputSet`:

1. the files are written into a private staging folder ``DIR/.staging-<pid>-<uuid>/`` under their final names
   (so multi-file writers such as OBJ + MTL + PNG keep their cross-references), never straight into ``DIR``;
2. :meth:`OutputSet.publish` takes a per-name lock (``DIR/.NAME.lock``, ``flock``), removes the old completion
   record FIRST, moves each file into ``DIR`` with ``os.replace`` (atomic on one file system), and writes the
   completion record ``NAME.done.json`` LAST.

So a reader never sees half a file; an interrupted run or ``--overwrite`` leaves no completion record, and the
item is redone next time; two runs writing the same name into one folder serialise their publish step, so the
final set is entirely one run's (the record's hashes match its files).

The completion record (format ``flamefit-done/1``)::

    {"format": "flamefit-done/1", "name": "face", "source": "/photos/face.jpg", "kind": "fit",
     "outputs": ["npz", "json", "mesh", "overlay"], "written_utc": "2026-11-29T17:30:00Z",
     "files": {"face.npz": {"size": 123456, "sha256": "..."}, "face.json": {...}, ...}}

:func:`is_finished` trusts a name only when its record parses, every listed file exists with the recorded size
(and, with ``verify_hashes``, the recorded sha256), and the record covers the requested output kinds.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

# the one atomic write lives in flamefit._files (re-exported here for existing callers)
from flamefit._files import atomic_write_bytes as atomic_write_bytes
from flamefit._files import atomic_write_text
from flamefit._files import unique_tmp_name as unique_tmp_name

DONE_SUFFIX = ".done.json"
DONE_FORMAT = "flamefit-done/1"


def save_npz(path: str | os.PathLike, arrays: dict, compress_level: int = 1) -> Path:
    """``np.savez_compressed`` with a chosen zlib level: level 1 is ~3x faster than numpy's default 6 on the float
    images of a result and the file is barely larger. Loads with ``np.load`` as usual; no pickles."""
    import zipfile

    import numpy as np

    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compress_level) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return path


def file_digest(path: Path) -> dict:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def done_path(out_dir: str | os.PathLike, name: str) -> Path:
    return Path(out_dir) / f"{name}{DONE_SUFFIX}"


def read_done(out_dir: str | os.PathLike, name: str) -> dict | None:
    """The completion record of ``name``, or None when absent or unreadable."""
    try:
        doc = json.loads(done_path(out_dir, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != DONE_FORMAT or not isinstance(doc.get("files"), dict):
        return None
    return doc


def is_finished(out_dir: str | os.PathLike, name: str, outputs: Iterable[str] = (), verify_hashes: bool = False
                ) -> bool:
    """True when ``name`` has a complete, consistent output set in ``out_dir`` (see the module docstring).

    ``outputs``: output kinds that must be covered (e.g. a rerun that asks for meshes redoes items whose
    record has none)."""
    out_dir = Path(out_dir)
    doc = read_done(out_dir, name)
    if doc is None or not doc["files"]:
        return False
    if not set(outputs) <= set(doc.get("outputs", ())):
        return False
    for fname, meta in doc["files"].items():
        path = out_dir / fname
        if Path(fname).name != fname:  # a record must only name files in its own folder
            return False
        try:
            if path.stat().st_size != int(meta["size"]):
                return False
            if verify_hashes and file_digest(path)["sha256"] != meta["sha256"]:
                return False
        except (OSError, KeyError, TypeError, ValueError):
            return False
    return True


@contextlib.contextmanager
def name_lock(out_dir: Path, name: str):
    """An exclusive advisory lock for publishing ``name`` in ``out_dir`` (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: os.replace is still atomic per file
        yield
        return
    lock = out_dir / f".{name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class OutputSet:
    """The files of one item, staged privately and published together (see the module docstring).

    Usage::

        with OutputSet(out_dir, "face", kind="fit", source="face.jpg") as outs:
            save_npz(outs.path("face.npz"), arrays)
            outs.write_text("face.json", doc)
            outs.publish(outputs=["npz", "json"])  # False when another run finished it meanwhile

    Leaving the block without :meth:`publish` (an exception) discards the staged files.
    """

    def __init__(self, out_dir: str | os.PathLike, name: str, kind: str = "", source: str = "",
                 overwrite: bool = True):
        self.out_dir = Path(out_dir)
        self.name = name
        self.kind = kind
        self.source = source
        self.overwrite = overwrite
        self.stage = self.out_dir / f".staging-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.published: dict[str, Path] = {}

    def __enter__(self) -> OutputSet:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.stage.mkdir()
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def path(self, file_name: str) -> Path:
        """Where to write ``file_name`` (a bare file name) before publishing."""
        if Path(file_name).name != file_name:
            raise ValueError(f"output file names must not contain folders: {file_name!r}")
        return self.stage / file_name

    def write_bytes(self, file_name: str, data: bytes) -> Path:
        p = self.path(file_name)
        p.write_bytes(data)
        return p

    def write_text(self, file_name: str, text: str) -> Path:
        return self.write_bytes(file_name, text.encode("utf-8"))

    def publish(self, outputs: Iterable[str] = (), extra: dict | None = None) -> bool:
        """Move the staged files into place and write the completion record last.

        Returns False (and publishes nothing) when not overwriting and another run finished this name while
        this one was working."""
        staged = sorted(p for p in self.stage.iterdir() if p.is_file())
        if not staged:
            raise ValueError(f"nothing was staged for {self.name}")
        outputs = sorted(set(outputs))
        digests = {p.name: file_digest(p) for p in staged}
        with name_lock(self.out_dir, self.name):
            if not self.overwrite and is_finished(self.out_dir, self.name, outputs):
                return False
            # the old record goes first: from here until the new record exists the name counts as unfinished
            with contextlib.suppress(FileNotFoundError):
                done_path(self.out_dir, self.name).unlink()
            for p in staged:
                os.replace(p, self.out_dir / p.name)
                self.published[p.name] = self.out_dir / p.name
            record = {
                "format": DONE_FORMAT,
                "name": self.name,
                "source": self.source,
                "kind": self.kind,
                "outputs": outputs,
                "written_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "files": digests,
                **(extra or {}),
            }
            atomic_write_text(done_path(self.out_dir, self.name), json.dumps(record, indent=1))
        return True


def remove_stale_temporaries(out_dir: str | os.PathLike, max_age_s: float = 3600.0) -> int:
    """Delete staging folders and temporary files that a killed process left in ``out_dir`` (older than
    ``max_age_s``: a live writer's are seconds old, also when it runs on another machine). Returns how many."""
    import time

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return 0
    now, n = time.time(), 0
    for p in out_dir.iterdir():
        if not p.name.startswith((".staging-", ".tmp-")):
            continue
        try:
            if now - p.stat().st_mtime < max_age_s:
                continue
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            n += 1
        except OSError:
            pass  # another process cleaned it first
    return n


def remove_done(out_dir: str | os.PathLike, name: str) -> None:
    """Forget that ``name`` is finished (its files stay until they are replaced)."""
    with contextlib.suppress(FileNotFoundError):
        done_path(out_dir, name).unlink()


MIN_FREE_MB = 50  # what check_output_path asks of the output's disk (README "Errors and exit codes", exit code 8)


def check_output_path(path: str | os.PathLike, *, kind: str = "folder", what: str = "--out",
                      min_free_mb: float = MIN_FREE_MB) -> Path:
    """Check, before any work, that a command can write its output at ``path``; returns ``path``.

    ``kind="folder"``: ``path`` is a folder (created here if missing, with its parents); ``kind="file"``: ``path``
    is a file whose folder is created here if missing. The folder must not be an existing file, must be creatable
    and writable (a temporary file is created in it and removed), and its disk must have ``min_free_mb`` MB free.
    Raises :class:`~flamefit.errors.OutputPathError` (exit code 8), one line: which path, what is wrong, what to
    do. The one output check of every command that writes files (fit, fit-texture, detect, track, texspace)."""
    import tempfile

    from flamefit.errors import OutputPathError

    path = Path(path)
    if kind not in ("folder", "file"):
        raise ValueError(f"kind must be 'folder' or 'file', not {kind!r}")
    if kind == "file":
        if path.is_dir():
            raise OutputPathError(f"{what} {path} is an existing folder, but a file is written there; give a file "
                                  "name (e.g. space.npz) or remove the folder")
        folder = path.parent if str(path.parent) else Path(".")
    else:
        folder = path
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{what} {path}: {folder} is an existing file, not a folder; choose another output "
                              "path or move the file away")
    blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputPathError(f"{what} {path}: cannot create the folder {folder} because {blocker} is a file, not a "
                              "folder; choose another output path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"{what} {path}: cannot create the folder {folder} ({exc.strerror or exc}); choose a "
                              "folder you may write to, or create it first") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".tmp-flamefit-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(f"{what} {path}: the folder {folder} is not writable ({exc.strerror or exc}); fix its "
                              "permissions or choose another output folder") from None
    try:
        free_mb = shutil.disk_usage(folder).free / 2**20
    except OSError:
        free_mb = None  # unknown: not a reason to refuse
    if free_mb is not None and free_mb < min_free_mb:
        raise OutputPathError(f"{what} {path}: only {free_mb:.0f} MB free on the disk of {folder} (flamefit needs at "
                              f"least {min_free_mb:.0f} MB); free some space or choose another disk")
    return path
