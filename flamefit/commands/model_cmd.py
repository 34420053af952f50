"""`flamefit model ...`: inspect model files and what they enable."""

from __future__ import annotations

import json
from pathlib import Path

import click

# What each asset enables, and what happens without it (shown by `model info`).
ENABLES = {
    "flame": "geometry (shape, expression, pose), mesh export, fitting",
    "texture_space": "PCA albedo prior for the texture fit (texture_code in the results)",
    "uv": "textured meshes (OBJ/GLB with a texture map) and photometric texture maps",
    "landmarks_68": "68-point landmarks from RingNet's embedding, jaw contour following the head's yaw",
    "face_landmarker": "blendshape_scores (52) and face_transform (4x4) in the results",
}
WITHOUT = {
    "texture_space": "appearance is fitted as a free per-texel albedo map (no PCA prior, no texture_code)",
    "uv": "no texture map: meshes are exported untextured and the photometric term has no UV layout",
    "landmarks_68": "68-point landmarks are derived from the MediaPipe-478 correspondence on the mesh",
    "face_landmarker": "blendshape_scores and face_transform are omitted from the results (the json says why)",
}


@click.group(name="model")
def model() -> None:
    """Inspect FLAME model files."""


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of every array in an npz, read from the headers only (no data loaded)."""
    import zipfile

    from numpy.lib import format as npy_format

    out = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                version = npy_format.read_magic(fh)
                read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
                shape, _fortran, dtype = read(fh)
            out[info.filename[:-4]] = (tuple(int(s) for s in shape), str(dtype))
    return out


def _texture_space_info(path: Path, n_faces: int) -> dict:
    """Kind, resolution, components and UV presence of a texture space (headers + vt/ft only: the official
    file's 600 MB basis is not loaded); 'invalid' with the loader's message when its arrays are wrong."""
    import numpy as np

    from flamefit.errors import ModelFileError
    from flamefit.model.texture_space import validate_texture_arrays

    try:
        heads = _npz_headers(path)
    except Exception as exc:  # noqa: BLE001 - any zip/npy header problem: report, don't die
        return {"status": "invalid", "error": f"{path}: not a readable npz ({' '.join(str(exc).split())})"}
    info: dict = {}
    if {"mean", "tex_dir"} <= heads.keys():
        shape = heads["tex_dir"][0]
        info.update(kind="FLAME_texture.npz layout", resolution=list(heads["mean"][0][:2]),
                    components=shape[-1] if len(shape) == 4 else None)
    elif {"MU", "PC"} <= heads.keys():
        size = int(np.prod(heads["MU"][0]))
        side = int(round((size / 3) ** 0.5))
        pc = heads["PC"][0]
        info.update(kind="FLAME_albedo_from_BFM.npz layout", resolution=[side, side],
                    components=pc[-1] if len(pc) >= 2 else None)
    else:
        return {"status": "invalid", "error": f"{path}: no mean/tex_dir or MU/PC arrays (found {sorted(heads)})"}
    info["has_uv"] = {"vt", "ft"} <= heads.keys()
    if info["has_uv"]:
        try:
            with np.load(path, allow_pickle=False) as z:
                vt, ft = z["vt"], z["ft"]
            validate_texture_arrays({"vt": vt, "ft": ft}, str(path))
        except ModelFileError as exc:
            return {**info, "status": "invalid", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001
            return {**info, "status": "invalid", "error": f"{path}: vt/ft unreadable ({' '.join(str(exc).split())})"}
        info["uv_faces"] = int(ft.shape[0])
        if ft.shape[0] != n_faces:
            info["uv_note"] = f"its vt/ft has {ft.shape[0]} faces, the model {n_faces}: not usable with this model"
    return {**info, "status": "found"}


def _uv_info(ts: dict | None, ts_path: Path | None, n_faces: int) -> dict:
    """Which UV layout a fit would use, in the fitter's order: the texture space's vt/ft, a UV layout file
    ($FLAMEFIT_UV_LAYOUT, config, data dir), the flame-model package, else an atlas generated for the mesh."""
    from flamefit.assets import candidates, resolve_asset
    from flamefit.errors import ModelFileError
    from flamefit.model import uv as uv_module

    if ts is not None and ts.get("status") == "found" and ts.get("has_uv") and "uv_note" not in ts:
        return {"status": "found", "source": f"texture space file {ts_path} (its vt/ft)", "path": str(ts_path),
                "official_layout": True}
    try:
        path = resolve_asset("uv", None, required=False)
        if path is not None:
            layout = uv_module.load_uv_layout(path)
            origin = next((o for o, p in candidates("uv") if p == path), "?")
            if layout.ft.shape[0] != n_faces:
                return {"status": "invalid", "path": str(path),
                        "error": f"{path}: the UV layout has {layout.ft.shape[0]} faces, the model {n_faces}"}
            return {"status": "found", "source": f"UV layout file (via {origin})", "path": str(path),
                    "official_layout": True}
        packaged = uv_module.packaged_uv_layout()
        if packaged is not None and packaged.ft.shape[0] == n_faces:
            return {"status": "found", "source": f"the flame-model package ({packaged.source})",
                    "path": packaged.source, "official_layout": True}
    except ModelFileError as exc:
        return {"status": "invalid", "error": str(exc)}
    if hasattr(uv_module, "generated_uv_layout"):
        cache = uv_module.uv_cache_directory() if hasattr(uv_module, "uv_cache_directory") else None
        return {"status": "generated",
                "source": "atlas flamefit computes for this mesh on first use"
                          + (f" (cached in {cache})" if cache else ""),
                "official_layout": False,
                "note": "not FLAME's layout: a FLAME texture space's maps do not map onto it (the free albedo does)"}
    return {"status": "not found"}


def _landmarks_info(n_faces: int) -> dict:
    from flamefit.assets import resolve_asset
    from flamefit.errors import ModelFileError
    from flamefit.model.landmarks import load_ringnet_68

    try:
        static = resolve_asset("landmarks_static", None, required=False)
        dynamic = resolve_asset("landmarks_dynamic", None, required=False)
    except ModelFileError as exc:
        return {"status": "invalid", "error": str(exc)}
    paths = {"static": str(static) if static else None, "dynamic": str(dynamic) if dynamic else None}
    if static is None and dynamic is None:
        return {"status": "not found", "paths": paths}
    if static is None or dynamic is None:
        missing = "flame_static_embedding.pkl" if static is None else "flame_dynamic_embedding.npy"
        return {"status": "incomplete", "paths": paths, "error": f"{missing} not found; both files are needed"}
    try:
        load_ringnet_68(static, dynamic).validate_against(n_faces)
    except ModelFileError as exc:
        return {"status": "invalid", "paths": paths, "error": str(exc)}
    return {"status": "found", "paths": paths}


def _simple_asset(kind: str) -> dict:
    from flamefit.assets import candidates, resolve_asset
    from flamefit.errors import ModelFileError

    try:
        path = resolve_asset(kind, None, required=False)
    except ModelFileError as exc:
        return {"status": "invalid", "error": str(exc)}
    if path is None:
        return {"status": "not found"}
    origin = next((o for o, p in candidates(kind) if p == path), "?")
    return {"status": "found", "path": str(path), "found_via": origin}


def build_report(path: str | None) -> dict:
    """Everything `model info` shows, as one dict (the --json output)."""
    import importlib.util

    from flamefit.assets import ASSETS, candidates, resolve_asset
    from flamefit.errors import ModelFileError
    from flamefit.model.flame_file import read_flame_file

    model_path = resolve_asset("flame", path)
    data = read_flame_file(model_path)
    n_faces = int(data.faces.shape[0])
    origin = next((o for o, p in candidates("flame", path) if p == model_path), "?")
    assets: dict[str, dict] = {"flame": {"status": "found", "path": str(model_path), "found_via": origin}}

    ts_path = None
    try:
        ts_path = resolve_asset("texture_space", None, required=False)
    except ModelFileError as exc:
        assets["texture_space"] = {"status": "invalid", "error": str(exc)}
    if "texture_space" not in assets:
        if ts_path is None:
            assets["texture_space"] = {"status": "not found"}
        else:
            ts_origin = next((o for o, p in candidates("texture_space") if p == ts_path), "?")
            assets["texture_space"] = {"path": str(ts_path), "found_via": ts_origin,
                                       **_texture_space_info(ts_path, n_faces)}
    assets["uv"] = _uv_info(assets["texture_space"], ts_path, n_faces)
    assets["landmarks_68"] = _landmarks_info(n_faces)
    if "face_landmarker" in ASSETS:
        assets["face_landmarker"] = _simple_asset("face_landmarker")

    derived68 = importlib.util.find_spec("flamefit.fit.derived68") is not None
    without = dict(WITHOUT)
    if not derived68:
        without["landmarks_68"] = "no 68-point model landmarks: the 68-point term and lmks_68_fit are unavailable"
    for kind, entry in assets.items():
        ok = entry["status"] in ("found", "generated")
        entry["enables"] = ENABLES.get(kind, "")
        if not ok and kind in without:
            entry["without_it"] = without[kind]
    features = {
        "geometry_and_fitting": True,
        "pca_texture": assets["texture_space"]["status"] == "found",
        "textured_mesh": assets["uv"]["status"] in ("found", "generated"),
        "uv_layout": assets["uv"]["status"],
        "landmarks_68": "ringnet embedding" if assets["landmarks_68"]["status"] == "found"
        else "derived from the MediaPipe-478 correspondence" if derived68 else "unavailable",
        "blendshapes_and_face_transform": assets.get("face_landmarker", {}).get("status") == "found",
    }
    return {
        "path": str(model_path),
        "found_via": origin,
        "format": data.format,
        "vertices": data.num_vertices,
        "faces": n_faces,
        "shape_components": data.n_shape_total,
        "expression_components": data.n_expr_total,
        "joints": 5,
        "sha256": data.sha256,
        "checks": data.checks,
        "assets": assets,
        "features": features,
        # paths only, under the asset kinds' names (kept for scripts written against earlier versions)
        "other_assets": {
            "texture_space": assets["texture_space"].get("path"),
            "uv": assets["uv"].get("path"),
            "landmarks_static": (assets["landmarks_68"].get("paths") or {}).get("static"),
            "landmarks_dynamic": (assets["landmarks_68"].get("paths") or {}).get("dynamic"),
            **({"face_landmarker": assets["face_landmarker"].get("path")} if "face_landmarker" in assets else {}),
        },
    }


def _describe(kind: str, entry: dict) -> tuple[str, str, str]:
    """(status, where, meaning) cells of the assets table."""
    status = entry["status"]
    if kind == "texture_space" and status == "found":
        where = f"{entry['path']} ({entry['kind']}, {entry['components']} components, " \
                f"{'x'.join(map(str, entry['resolution']))}, vt/ft {'yes' if entry['has_uv'] else 'no'})"
    elif kind == "uv" and status in ("found", "generated"):
        where = entry["source"]
    elif kind == "landmarks_68" and "paths" in entry:
        where = ", ".join(p for p in entry["paths"].values() if p) or ""
    else:
        where = entry.get("path", "") or ""
    if "error" in entry:
        where = (where + " " if where and where not in entry["error"] else "") + entry["error"]
    meaning = "enables " + entry["enables"] if status in ("found", "generated") else \
        "without it: " + entry.get("without_it", "-")
    if entry.get("note"):
        meaning += f"; {entry['note']}"
    if entry.get("uv_note"):
        meaning += f"; {entry['uv_note']}"
    return status, where, meaning


@model.command(name="info")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.pass_context
def info(ctx: click.Context, path: str | None, as_json: bool) -> None:
    """Show the FLAME model found (format, counts, sha256, checks) and, for every other asset, whether it is
    found, what it enables, and what flamefit does without it.

    PATH defaults to the resolution order: $FLAMEFIT_FLAME_MODEL, the config file, the data directory. Exits 3
    (after the report) when a found asset is invalid.
    """
    from flamefit.errors import EXIT_MODEL_FILE

    report = build_report(path)
    invalid = [k for k, a in report["assets"].items() if a["status"] in ("invalid", "incomplete")]
    if as_json:
        click.echo(json.dumps(report))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="FLAME model", show_header=False)
        for key in ("path", "found_via", "format", "vertices", "faces", "shape_components", "expression_components",
                    "joints", "sha256"):
            table.add_row(key, escape(str(report[key])))
        for check in report["checks"]:
            table.add_row("check", ("[yellow]" if check.startswith("WARNING") else "[green]ok[/] ") + escape(check))
        console = Console(width=160)
        console.print(table)
        assets = Table(title="Assets: what each enables", show_lines=True)
        for col in ("asset", "status", "where", "meaning"):
            assets.add_column(col, overflow="fold")
        colours = {"found": "green", "generated": "cyan", "not found": "yellow", "invalid": "red",
                   "incomplete": "red"}
        for kind, entry in report["assets"].items():
            status, where, meaning = _describe(kind, entry)
            colour = colours.get(status, "white")
            assets.add_row(kind, f"[{colour}]{status}[/]", escape(where), escape(meaning))
        console.print(assets)
    if invalid:
        click.echo(f"error: invalid asset(s): {', '.join(invalid)} (see the report above)", err=True)
        ctx.exit(EXIT_MODEL_FILE)
