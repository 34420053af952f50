"""Item sources: what a run processes, one :class:`Item` per output name.

An item is small and serialisable (it travels to worker processes and Ray actors): an output ``name`` (unique
in the run), a ``source`` (a file path today) and free-form ``meta``. Sources:

- :func:`image_items`: image files and folders (a folder expands to its image files, sorted; ``recursive``
  descends into sub-folders). Output names are the file stems, made unique (see :func:`output_names`).
- Extension points: a video source yields one item per frame (``source`` = the video, ``meta["frame"]`` = the
  frame index, name ``VIDEO_000123``); a dataset shard is ``shard(items, index, count)`` over any item list, so
  N machines can split one folder without talking to each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flamefit.errors import ConfigError, InputImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Item:
    """One unit of work: ``name`` (unique output name), ``source`` (input path), ``meta`` (e.g. frame index)."""

    name: str
    source: str
    meta: dict = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Item:
        return cls(name=d["name"], source=d["source"], meta=dict(d.get("meta") or {}))


def expand_inputs(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Files as given (even unreadable ones: they fail as items, reported), folders expanded to their images.

    The same file given twice (or through a folder and by name) is processed once."""
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(f for f in p.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                exts = " ".join(IMAGE_EXTENSIONS)
                raise InputImageError(f"{p}: no image files in this folder ({exts}"
                                      f"{'' if recursive else '; sub-folders need --recursive'})")
            files = found
        else:
            files = [p]
        for f in files:
            key = Path(os.path.abspath(f))
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def output_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Output names for input files: their stems; where stems collide, the parent folders are prefixed
    (``a/face.png``, ``b/face.png`` -> ``a_face``, ``b_face``) so the names do not depend on argument order;
    a numeric suffix is the last resort. No two names are equal (nor equal when case is ignored, for
    case-insensitive file systems)."""
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    stems = [Path(p).stem or "image" for p in paths]
    names = list(stems)
    by_stem: dict[str, list[int]] = {}
    for i, s in enumerate(stems):
        by_stem.setdefault(s.lower(), []).append(i)
    for group in by_stem.values():
        if len(group) < 2:
            continue
        # the shortest run of parent folders that tells the group's members apart
        max_depth = max(len(parts[i]) - 1 for i in group)
        for depth in range(1, max_depth + 1):
            cand = {i: "_".join([*parts[i][-1 - depth:-1], stems[i]]).lstrip("/\\") or stems[i] for i in group}
            cand = {i: n.replace(os.sep, "_").replace(":", "_") for i, n in cand.items()}
            if len({n.lower() for n in cand.values()}) == len(group):
                for i, n in cand.items():
                    names[i] = n
                break
    taken: set[str] = set()
    out = []
    for n in names:
        base, k = n, 1
        while n.lower() in taken:
            n = f"{base}_{k}"
            k += 1
        taken.add(n.lower())
        out.append(n)
    return out


def check_inputs(inputs: Iterable[str | os.PathLike], what: str = "image", error: type = InputImageError) -> None:
    """Raise ``error`` (default :class:`InputImageError`, exit code 4), before any work, when an input path does
    not exist, is neither a file nor a folder, or is a file that cannot be opened for reading. The contents
    (a damaged image, no face) are judged per item later. Names every bad path (the first 5) on one line."""
    bad: list[str] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            bad.append(f"{p} does not exist")
        elif p.is_dir():
            continue
        elif not p.is_file():
            bad.append(f"{p} is not a regular file")
        else:
            try:
                with open(p, "rb"):
                    pass
            except OSError as exc:
                bad.append(f"{p} cannot be read ({exc.strerror or exc})")
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise error(f"input {what} {'; '.join(bad[:5])}{more}; check the path{'s' if len(bad) > 1 else ''} "
                    "(nothing was done)")


def image_items(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> list[Item]:
    """Items for image files and folders (see the module docstring)."""
    paths = expand_inputs(inputs, recursive=recursive)
    if not paths:
        raise ConfigError("no input images given")
    return [Item(name=n, source=str(p)) for p, n in zip(paths, output_names(paths), strict=True)]


def shard(items: Sequence[Item], index: int, count: int) -> list[Item]:
    """Every ``count``-th item starting at ``index`` (0-based): shard ``index`` of ``count``."""
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index} of {count}: need count >= 1 and 0 <= index < count")
    return list(items[index::count])
