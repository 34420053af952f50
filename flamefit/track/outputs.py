"""What ``flamefit track`` writes, and how a rerun finds what is already there.

- ``DIR/frames/NNNNNN.npz`` (6-digit index of the frame in the source video), one atomic output set per frame
  (:class:`flamefit.io.outputs.OutputSet`, completion record ``NNNNNN.done.json`` written last): ``frame_index``,
  ``time_s`` and the fields of a single-image result (``vertices``, ``cam``, ``K``, ``shape``, ``exp``, ``pose``,
  ``neck``, ``eyes``, ``tex``, ``light``, ``lmks_68_fit``, ``lmks_68``/``lmks_dense`` as detected,
  ``blendshape_scores`` when available) plus the raw parameters ``param_*`` (original-frame intrinsics) that a
  resumed run warm-starts from. A field that cannot be given is absent and ``missing`` (a JSON string) says why.
- ``DIR/identity.npz`` (+ ``texture.png`` where the identity's appearance was fitted: photometric mode, and
  landmark mode with ``identity_photometric``), ``DIR/track.json`` (summary), ``DIR/overlay.mp4``
  and ``DIR/mesh.obj`` + ``DIR/mesh.pc2`` (point cache of every tracked frame, Blender: Mesh Cache modifier).
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import torch

from flamefit._files import atomic_path
from flamefit.fit.params import FlameParams
from flamefit.io.outputs import DONE_SUFFIX, OutputSet, atomic_write_bytes, atomic_write_text, is_finished
from flamefit.model.landmarks import model_landmarks_68
from flamefit.render.camera import project_points
from flamefit.track.tracker import Identity, TrackedFrame

FRAMES = "frames"
FRAME_KIND = "track-frame"


def frame_name(index: int) -> str:
    return f"{int(index):06d}"


def frames_dir(out_dir) -> Path:
    return Path(out_dir) / FRAMES


def finished_frames(out_dir) -> set[int]:
    """Source indices of the frames with a completion record (checked in full by :func:`is_frame_done`)."""
    d = frames_dir(out_dir)
    if not d.is_dir():
        return set()
    out = set()
    for p in d.glob(f"*{DONE_SUFFIX}"):
        stem = p.name[: -len(DONE_SUFFIX)]
        if stem.isdigit():
            out.add(int(stem))
    return out


def is_frame_done(out_dir, index: int) -> bool:
    return is_finished(frames_dir(out_dir), frame_name(index), ("npz",))


def load_frame(out_dir, index: int) -> tuple[FlameParams, np.ndarray | None]:
    """(parameters with original-frame intrinsics, detected 68 or dense points) of a written frame."""
    with np.load(frames_dir(out_dir) / f"{frame_name(index)}.npz") as d:
        params = FlameParams.from_dict({k[6:]: d[k][None] for k in d.files if k.startswith("param_")})
        pts = d["lmks_68"] if "lmks_68" in d.files else (d["lmks_dense"] if "lmks_dense" in d.files else None)
    return params, pts


@torch.no_grad()
def frame_arrays(fitter, frames: list[TrackedFrame]) -> list[dict[str, np.ndarray]]:
    """The npz fields of ``frames`` (one FLAME evaluation for all of them)."""
    from flamefit.track.tracker import _cat

    p = _cat([f.params for f in frames]).to(fitter.device, fitter.dtype)
    verts, _ = fitter.vertices(p)
    lmk_fit = None
    if fitter.landmarks68 is not None:
        lm3 = model_landmarks_68(fitter.landmarks68, verts, fitter.faces, p.global_pose, p.neck_pose)
        lmk_fit = project_points(fitter.to_camera(p, lm3), p.intrinsics()).cpu().numpy().astype(np.float32)
    K = p.intrinsics().cpu().numpy()
    raw = {k: v for k, v in p.to_dict().items() if k != "translation"}
    out = []
    for b, fr in enumerate(frames):
        o = fr.obs
        missing = {}
        a = {
            "frame_index": np.array(o.index, np.int64), "time_s": np.array(o.time_s, np.float64),
            "vertices": verts[b].cpu().numpy().astype(np.float32),
            "cam": torch.cat([p.cam_rotation[b], p.cam_translation[b]]).cpu().numpy(),
            "K": K[b], "shape": p.shape[b].cpu().numpy(), "exp": p.expression[b].cpu().numpy(),
            "pose": torch.cat([p.global_pose[b], p.jaw_pose[b]]).cpu().numpy(),
            "neck": p.neck_pose[b].cpu().numpy(), "eyes": p.eye_pose[b].cpu().numpy(),
            "tex": p.tex[b].cpu().numpy(), "light": p.light[b].cpu().numpy(),
            "image_size": np.array(np.asarray(o.image).shape[:2], np.int64) if o.image is not None else None,
            "cold_start": np.array(fr.cold),
        }
        if fr.residual is not None:
            a["landmark_residual"] = np.array(fr.residual, np.float32)
        if lmk_fit is not None:
            a["lmks_68_fit"] = lmk_fit[b]
        else:
            missing["lmks_68_fit"] = "the model has no 68-point landmark embedding"
        for k in ("lmks_68", "lmks_dense"):
            v = getattr(o, k)
            if v is not None:
                a[k] = np.asarray(v, np.float32)
            else:
                missing[k] = f"the detector gave no {k}"
        if o.blendshape_scores is not None:
            a["blendshape_scores"] = np.asarray(o.blendshape_scores, np.float32)
            if o.blendshape_names is not None:
                a["blendshape_names"] = np.array(list(o.blendshape_names))
        else:
            missing["blendshape_scores"] = getattr(o, "blendshape_missing", None) or "not measured"
        for k, v in raw.items():
            a[f"param_{k}"] = v[b]
        a["missing"] = np.array(json.dumps(missing))
        out.append({k: v for k, v in a.items() if v is not None})
    return out


class FrameWriter:
    """Writes final frames as atomic per-frame output sets; counts what it wrote."""

    def __init__(self, out_dir, fitter, source: str = "", owned=None):
        self.out_dir = Path(out_dir)
        self.dir = frames_dir(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fitter = fitter
        self.source = source
        self.owned = owned  # callable(frame) -> bool: frames outside are warm-up only (segments)
        self.written = 0
        self.no_face: list[int] = []
        self.no_face_times: list[float] = []
        self.seconds = 0.0
        self.on_write = None  # optional callable(index) for progress

    def __call__(self, frames: list[TrackedFrame]) -> None:
        import time

        t0 = time.perf_counter()
        keep = [f for f in frames if self.owned is None or self.owned(f.obs)]
        for f in keep:
            if f.status == "no_face":
                self.no_face.append(f.obs.index)
                self.no_face_times.append(f.obs.time_s)
        ok = [f for f in keep if f.status == "ok"]
        if ok:
            for f, arrays in zip(ok, frame_arrays(self.fitter, ok), strict=True):
                name = frame_name(f.obs.index)
                with OutputSet(self.dir, name, kind=FRAME_KIND, source=self.source) as outs:
                    np.savez(outs.path(f"{name}.npz"), **arrays)
                    outs.publish(outputs=["npz"], extra={"frame_index": f.obs.index, "time_s": f.obs.time_s})
                self.written += 1
                if self.on_write is not None:
                    self.on_write(f.obs.index)
        self.seconds += time.perf_counter() - t0


# -- identity -----------------------------------------------------------------------------------------------------

def identity_path(out_dir) -> Path:
    return Path(out_dir) / "identity.npz"


def save_identity(out_dir, identity: Identity, fitter=None) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **identity.arrays())
    path = atomic_write_bytes(identity_path(out_dir), buf.getvalue())
    # a light is stored where the identity fit had a photometric stage: its texture was fitted too
    if identity.light is not None and fitter is not None and fitter.vt is not None:
        save_texture_png(Path(out_dir) / "texture.png", fitter, identity)
    return path


def load_identity(out_dir) -> Identity | None:
    path = identity_path(out_dir)
    if not path.is_file():
        return None
    try:
        with np.load(path) as d:
            return Identity.from_arrays(d)
    except (OSError, ValueError, KeyError):
        return None  # damaged (cannot happen through atomic writes, but a copied folder might): refit


@torch.no_grad()
def save_texture_png(path, fitter, identity: Identity) -> Path:
    from PIL import Image

    p = FlameParams.zeros(1, fitter.n_shape, fitter.n_expr, n_tex=fitter.texture_space.n_components,
                          device=fitter.device, dtype=fitter.dtype)
    identity.apply(p)
    albedo = fitter.albedo_full(p)[0].clamp(0, 1).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray((albedo * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


# -- summary ------------------------------------------------------------------------------------------------------

def write_summary(out_dir, doc: dict) -> Path:
    return atomic_write_text(Path(out_dir) / "track.json", json.dumps(doc, indent=1, default=_json_default))


def read_summary(out_dir) -> dict | None:
    try:
        return json.loads((Path(out_dir) / "track.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# -- animated mesh --------------------------------------------------------------------------------------------------

def write_point_cache(out_dir, fitter, fps: float) -> dict | None:
    """``mesh.obj`` (the first tracked frame) + ``mesh.pc2`` (every tracked frame's vertices, in frame order),
    streamed from the frame files (constant memory). Returns what was written, or None without frames."""
    out_dir = Path(out_dir)
    indices = sorted(i for i in finished_frames(out_dir) if is_frame_done(out_dir, i))
    if not indices:
        return None
    path = out_dir / "mesh.pc2"
    faces = fitter.faces.cpu().numpy()
    first = None
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            n_points = None
            for idx in indices:
                with np.load(frames_dir(out_dir) / f"{frame_name(idx)}.npz") as d:
                    v = np.asarray(d["vertices"], np.float32)
                if n_points is None:
                    n_points = len(v)
                    first = v
                    # header: magic, version, points, start frame, sample rate, samples
                    fh.write(struct.pack("<12siiffi", b"POINTCACHE2\0", 1, n_points, 0.0, 1.0, 0))
                fh.write(np.ascontiguousarray(v).tobytes())
            fh.seek(0)
            fh.write(struct.pack("<12siiffi", b"POINTCACHE2\0", 1, n_points, 0.0, 1.0, len(indices)))
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in first] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    atomic_write_text(out_dir / "mesh.obj", "# flamefit track: first tracked frame; animate with mesh.pc2\n"
                      + "\n".join(lines) + "\n")
    return {"obj": "mesh.obj", "pc2": "mesh.pc2", "samples": len(indices), "points": int(len(first)),
            "sample_frame_indices": "the tracked frames in order (see frames/)", "fps": fps}


def read_point_cache(path) -> np.ndarray:
    """(samples, points, 3) from a .pc2 file (for tests and tools)."""
    data = Path(path).read_bytes()
    magic, version, n_points, start, rate, n_samples = struct.unpack("<12siiffi", data[:32])
    if magic != b"POINTCACHE2\0":
        raise ValueError(f"{path} is not a PC2 point cache")
    return np.frombuffer(data[32:], np.float32).reshape(n_samples, n_points, 3)
