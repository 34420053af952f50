"""The run spec: everything a worker needs, resolved once in the parent, serialisable as JSON.

Workers (in this process, in a local process pool, or on a Ray cluster) build themselves from a
:class:`RunSpec` alone: asset paths are resolved here, in the parent, through
:func:`flamefit.assets.resolve_asset` (flag, environment, config file, data directory), and the config is
carried as a plain dict. In a worker process :func:`pin_environment` then makes the library's own look-ups see
exactly these paths (and no config file or data directory), so a worker never depends on its environment or on
the user's config file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flamefit._files import CACHE_DIR_ENV, env_cache_dir
from flamefit.errors import ConfigError

NO_TEXTURE_SPACE = ("none", "free", "")

@dataclass
class RunSpec:
    """What to run and how; JSON-serialisable (``to_json`` / ``from_json``).

    ``worker``: ``"module:attribute"`` of a worker factory (a class taking the spec); the jobs name theirs (e.g.
    :data:`flamefit.jobs.photo.FIT_WORKER`), the run layer knows none.
    ``assets``: asset kind -> absolute path or None (``texture_space`` None = free albedo).
    ``config``: the job's config as a dict (the fit config: ``config_to_dict``). ``options``: worker options (e.g.
    detection settings). ``outputs``: output kinds to write (the job's: see :mod:`flamefit.io.results`).
    ``threads``: torch threads per worker (None = torch's default). ``retries``: how often an item whose worker died
    is retried.
    """

    worker: str
    out_dir: str | None = None
    assets: dict[str, str | None] = field(default_factory=dict)
    cache_dir: str | None = None
    config: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    device: str = "cpu"
    threads: int | None = 1
    overwrite: bool = False
    verify_hashes: bool = True
    retries: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.from_dict(json.loads(text))


def resolve_assets(flame=None, texture_space=None, landmarks_static=None, landmarks_dynamic=None,
                   **others) -> dict[str, str | None]:
    """Resolve every model asset ONCE (flag, environment, config file, data directory), to absolute paths.

    The FLAME model is required; the others (every kind in :data:`flamefit.assets.ASSETS`) are None when
    not found. ``texture_space='none'`` chooses the free albedo map. ``others``: explicit paths of further asset
    kinds (e.g. ``uv=``). Raises ModelFileError naming the path when an explicitly given file does not exist."""
    from flamefit.assets import ASSETS, resolve_asset

    explicit = {"flame": flame, "texture_space": texture_space, "landmarks_static": landmarks_static,
                "landmarks_dynamic": landmarks_dynamic, **others}
    unknown = sorted(set(explicit) - set(ASSETS))
    if unknown:
        raise ConfigError(f"unknown asset kinds {unknown}; known: {sorted(ASSETS)}")
    out: dict[str, str | None] = {}
    for kind in ASSETS:
        given = explicit.get(kind)
        if kind == "texture_space" and given is not None and str(given).lower() in NO_TEXTURE_SPACE:
            out[kind] = None
            continue
        path = resolve_asset(kind, given, required=kind == "flame" or given is not None)
        out[kind] = None if path is None else str(Path(path).expanduser().resolve())
    return out


def resolve_cache_dir() -> str | None:
    """``$FLAMEFIT_CACHE_DIR`` resolved once in the parent, else None (workers then use the platform's user cache
    folder, the same one the parent would use, and the cache is keyed by content, so nothing depends on it)."""
    env = env_cache_dir()
    return str(env) if env is not None else None


# variables a worker keeps: they change logging only, never a result
_KEEP_ENV = ("FLAMEFIT_MEDIAPIPE_LOGS",)


def pin_environment(spec: RunSpec) -> None:
    """In a WORKER process: make the library's resolvers see exactly the spec's assets and nothing else.

    Every other ``FLAMEFIT_*`` variable is removed; each asset variable is set to the spec's path; the config
    file and the data directory point to paths that do not exist, so nothing of the worker machine's user
    configuration leaks into the run."""
    for var in [v for v in os.environ if v.startswith("FLAMEFIT_") and v not in _KEEP_ENV]:
        del os.environ[var]
    if spec.assets:
        from flamefit.assets import ASSETS  # imports torch (via flamefit.model): only when there are assets

        for kind, path in spec.assets.items():
            if path and kind in ASSETS:
                os.environ[ASSETS[kind].env] = path
    os.environ["FLAMEFIT_CONFIG"] = os.path.join(os.sep, "nonexistent-flamefit-worker", "config.toml")
    os.environ["FLAMEFIT_DATA_DIR"] = os.path.join(os.sep, "nonexistent-flamefit-worker", "data")
    if spec.cache_dir:
        os.environ[CACHE_DIR_ENV] = spec.cache_dir
    if spec.threads is not None:  # for libraries that read it at import (OpenMP): one policy, the spec's
        os.environ["OMP_NUM_THREADS"] = str(spec.threads)
