"""Synthetic video clips with known motion: the ground truth for tracking tests and ``flamefit bench track``.

A clip renders one head (fixed identity, texture, light and camera) through smooth motion: yaw/pitch/roll
sinusoids, a small drift of the head in space, a talking jaw (syllables at a few Hz under a slower phrase envelope),
smoothly changing expressions and blinks (the stand-in closes both eyes at +2 sd of expression component 3, see
``standin_components.json``; other models just get that component pulsed). Every frame comes with its parameters,
vertices (model and camera frame), the projected 68 landmarks (RingNet embedding) and the 478 MediaPipe points
(when a correspondence is given), and optionally "detected" landmarks: the truth plus per-frame noise that
emulates a jittery detector without running MediaPipe (whose output on renders of a stand-in cannot be trusted).

    clip = make_synthetic_clip(model, landmarks68=lmk, texture_space=ts, n_frames=100, fps=25, seed=1,
                               landmark_noise_px=1.5, video_path="clip.mp4")
    clip.images[i], clip.lmks_68[i], clip.lmks_68_noisy[i], clip.params, clip.verts_cam[i]

Everything follows from ``seed`` (local generators, no global seeds). Rendering runs in chunks of frames; with
``keep_frames=False`` and a ``video_path`` the frames stream to the mp4 and are not kept (long clips).
The background is static within a shot (a fixed camera); ``pixel_noise`` adds fresh sensor noise to every frame.
For the hard cases of tracking, ``cuts`` start new shots (background, framing and head orientation jump) and
``face_absent`` frames show no face (their landmarks are NaN).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from flamefit.fit.init import focal_from_fov
from flamefit.fit.params import FlameParams
from flamefit.fit.synthetic import BLINK_COMPONENT, _background, face_region
from flamefit.model.landmarks import model_landmarks_68
from flamefit.model.lbs import axis_angle_to_matrix
from flamefit.render.camera import PerspectiveCamera, project_points

# Stand-in expression components (standin_components.json): the others used for speech and emotion: 0 smile,
# 1 mouth stretch, 2 brow raise, 4 pucker, 5 cheek puff, 8 lips part (BLINK_COMPONENT: flamefit.fit.synthetic).
EXPRESSION_COMPONENTS = (0, 1, 2, 4, 5, 8)


@dataclass
class ClipMotion:
    """Amplitudes and time scales of the synthetic motion (radians, seconds, metres, units of 1 sd)."""

    yaw_amp_rad: float = 0.35
    yaw_period_s: float = 4.0
    pitch_amp_rad: float = 0.12
    pitch_period_s: float = 3.1
    roll_amp_rad: float = 0.08
    roll_period_s: float = 5.3
    drift_amp_m: float = 0.01  # head position in the camera frame (x, y, z)
    drift_period_s: float = 6.7
    jaw_open_max_rad: float = 0.22
    syllable_hz: float = 3.5
    phrase_period_s: float = 2.3
    expression_amp_sd: float = 0.8
    expression_period_s: float = 2.5
    blink_interval_s: tuple[float, float] = (1.5, 3.5)
    blink_duration_s: float = 0.25
    blink_sd: float = 2.2
    gaze_amp_rad: float = 0.08
    shape_sd: float = 1.0
    tex_sd: float = 1.0


@dataclass
class SyntheticClip:
    """A rendered clip and its ground truth; arrays are numpy with frames first (T)."""

    fps: float
    times_s: np.ndarray  # (T,) i / fps
    height: int
    width: int
    params: FlameParams  # (T,...) per-frame truth on the CPU (identity, texture, light, camera repeated)
    vertices: np.ndarray  # (T,V,3) model frame, metres
    verts_cam: np.ndarray  # (T,V,3) camera frame (OpenCV), metres
    lmks_68: np.ndarray | None  # (T,68,2) projected truth, pixels; None without the 68-point embedding
    lmks_dense: np.ndarray | None  # (T,478,2) projected MediaPipe points; None without a correspondence
    lmks_68_noisy: np.ndarray | None  # (T,68,2) lmks_68 plus the detector-like noise; None when noise is 0
    lmks_dense_noisy: np.ndarray | None
    face_region: np.ndarray  # (V,) bool, the face vertices that vertex errors are measured on
    K: np.ndarray  # (3,3) intrinsics in pixels of the frames
    images: np.ndarray | None  # (T,H,W,3) uint8 RGB; None with keep_frames=False
    video_path: str | None
    blink_frames: np.ndarray  # (T,) bool, frames where the blink component exceeds 1 sd
    face_visible: np.ndarray  # (T,) bool; False: a frame without the face (its landmarks are NaN)
    shot: np.ndarray  # (T,) int, the shot each frame belongs to (0 without cuts)
    config: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.times_s)

    def truth_arrays(self) -> dict[str, np.ndarray]:
        """The ground truth as named arrays (for ``np.savez``); absent fields are left out."""
        out = {f"param_{k}": v for k, v in self.params.to_dict().items()}
        out.update(times_s=self.times_s, vertices=self.vertices, verts_cam=self.verts_cam, K=self.K,
                   face_region=self.face_region, blink_frames=self.blink_frames, face_visible=self.face_visible,
                   shot=self.shot)
        for name in ("lmks_68", "lmks_dense", "lmks_68_noisy", "lmks_dense_noisy"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


# -- motion -----------------------------------------------------------------------------------------------------------

def _smooth_signal(rng: np.random.Generator, t: np.ndarray, period_s: float, n: int) -> np.ndarray:
    """(T,n) smooth zero-mean signals of about unit amplitude: three sinusoids per channel with random phases and
    periods around ``period_s`` (band-limited, so accelerations stay small)."""
    out = np.zeros((len(t), n))
    for _ in range(3):
        periods = period_s * rng.uniform(0.6, 1.6, n)
        phases = rng.uniform(0, 2 * math.pi, n)
        out += np.sin(2 * math.pi * t[:, None] / periods + phases)
    return out / math.sqrt(1.5)  # each sinusoid has variance 1/2


def _blinks(rng: np.random.Generator, t: np.ndarray, motion: ClipMotion) -> np.ndarray:
    """(T,) blink component: raised-cosine pulses of ``blink_duration_s`` at random intervals."""
    out = np.zeros(len(t))
    lo, hi = motion.blink_interval_s
    start = rng.uniform(0.2, hi)
    end = t[-1] + 1.0 if len(t) else 0.0
    while start < end:
        phase = (t - start) / motion.blink_duration_s
        inside = (phase >= 0) & (phase <= 1)
        out[inside] = np.maximum(out[inside], 0.5 * (1 - np.cos(2 * math.pi * phase[inside])))
        start += rng.uniform(lo, hi)
    return motion.blink_sd * out


def clip_params(n_frames: int, fps: float, n_shape: int, n_expr: int, n_tex: int, height: int, width: int,
                rng: np.random.Generator, motion: ClipMotion | None = None, fov_deg: float = 20.0,
                dtype: torch.dtype = torch.float32, shots: np.ndarray | None = None) -> FlameParams:
    """Per-frame ground-truth parameters (T frames, CPU) of a smoothly moving, talking, blinking head.

    ``shots`` (T,) int: shot number per frame; each new shot jumps the camera's framing (position, distance) and
    the head's orientation, as a cut in an edited video does (the person stays the same)."""
    m = motion or ClipMotion()
    t = np.arange(n_frames) / fps
    f_px = focal_from_fov(height, width, fov_deg)
    p = FlameParams.zeros(n_frames, n_shape, n_expr, n_tex=n_tex, light_channels=3, focal_px=f_px,
                          principal_px=(width / 2, height / 2), dtype=dtype)

    def tt(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype)

    # identity, texture and light: drawn once, the same in every frame
    shape = rng.normal(0, m.shape_sd, (1, n_shape))
    tex = rng.normal(0, m.tex_sd, (1, n_tex))
    light = np.zeros((1, 9, 3))
    light[0, 0] = math.sqrt(4 * math.pi) * rng.uniform(0.65, 0.8) * rng.uniform(0.95, 1.05, 3)
    light[0, 1:4] = rng.normal(0, 0.25, (3, 1)) * np.ones((1, 3))
    light[0, 4:] = rng.normal(0, 0.08, (5, 1)) * np.ones((1, 3))
    p.shape = tt(np.repeat(shape, n_frames, 0))
    p.tex = tt(np.repeat(tex, n_frames, 0))
    p.light = tt(np.repeat(light, n_frames, 0))

    # head pose: sinusoids with random phases (pitch about x, yaw about y, roll about z in FLAME's frame)
    ph = rng.uniform(0, 2 * math.pi, 3)
    pose = np.stack([
        m.pitch_amp_rad * np.sin(2 * math.pi * t / m.pitch_period_s + ph[0]),
        m.yaw_amp_rad * np.sin(2 * math.pi * t / m.yaw_period_s + ph[1]),
        m.roll_amp_rad * np.sin(2 * math.pi * t / m.roll_period_s + ph[2]),
    ], -1)
    if shots is not None and shots.max() > 0:
        jumps = np.zeros((int(shots.max()) + 1, 3))
        jumps[1:] = rng.uniform(-1, 1, (len(jumps) - 1, 3)) * [0.15, 0.4, 0.1]
        pose = pose + jumps[shots]
    p.global_pose = tt(pose)

    # talking: syllables under a phrase envelope (pauses between phrases); positive x opens the mouth
    env = np.clip(0.5 + 0.8 * np.sin(2 * math.pi * t / m.phrase_period_s + rng.uniform(0, 2 * math.pi)), 0, 1)
    syll = 0.5 * (1 - np.cos(2 * math.pi * m.syllable_hz * t + rng.uniform(0, 2 * math.pi)))
    jaw = np.zeros((n_frames, 3))
    jaw[:, 0] = m.jaw_open_max_rad * env * syll
    p.jaw_pose = tt(jaw)

    expr = np.zeros((n_frames, n_expr))
    comps = [c for c in EXPRESSION_COMPONENTS if c < n_expr]
    if comps:
        expr[:, comps] = m.expression_amp_sd * _smooth_signal(rng, t, m.expression_period_s, len(comps))
    if BLINK_COMPONENT < n_expr:
        expr[:, BLINK_COMPONENT] = _blinks(rng, t, m)
    p.expression = tt(expr)

    gaze = m.gaze_amp_rad * _smooth_signal(rng, t, 1.7, 2)
    eye = np.concatenate([gaze, np.zeros((n_frames, 1))], -1)  # both eyes look the same way (x, y rotations)
    p.eye_pose = tt(np.concatenate([eye, eye], -1))

    # camera: fixed; the face spans about half the frame; the head drifts a little in front of it
    z = f_px * 0.2 / (0.5 * min(height, width))
    drift = m.drift_amp_m * _smooth_signal(rng, t, m.drift_period_s, 3) / 1.5
    cam_t = np.array([0.0, 0.02, z])[None] + drift
    if shots is not None and shots.max() > 0:
        framing = np.zeros((int(shots.max()) + 1, 3))
        framing[1:, :2] = rng.uniform(-1, 1, (len(framing) - 1, 2)) * [0.03, 0.02]
        framing[1:, 2] = z * (rng.uniform(0.8, 1.25, len(framing) - 1) - 1)
        cam_t = cam_t + framing[shots]
    p.cam_translation = tt(cam_t)
    return p


# -- rendering --------------------------------------------------------------------------------------------------------

def _appearance(model, texture_space, dtype):
    """(texture tuple or None, per-vertex albedo or None) for the renderer."""
    if texture_space is not None:
        vt, ft = texture_space.vt, texture_space.ft
        if vt is None and getattr(model, "uv", None) is not None:
            vt, ft = model.uv.vt, model.uv.ft
        if vt is not None:
            return (vt.to(dtype), ft), None
    skin = torch.tensor([0.78, 0.60, 0.50], dtype=dtype)
    return None, skin.expand(model.num_vertices, 3).clone()


@torch.no_grad()
def make_synthetic_clip(model, *, landmarks68=None, dense=None, texture_space=None, n_frames: int = 50,
                        fps: float = 25.0, height: int = 192, width: int = 192, seed: int = 0,
                        motion: ClipMotion | None = None, landmark_noise_px: float = 0.0,
                        landmark_noise_corr: float = 0.0, pixel_noise: float = 0.0, keep_frames: bool = True,
                        video_path: str | os.PathLike | None = None, chunk: int = 8,
                        region: torch.Tensor | None = None, cuts: tuple[int, ...] = (),
                        face_absent: tuple[int, ...] = (), fov_deg: float = 20.0) -> SyntheticClip:
    """Render a clip of ``n_frames`` at ``fps`` with its ground truth (see the module doc).

    Args:
        model: a :class:`~flamefit.model.flame.FlameModel` (its n_shape/n_expr are used in full).
        landmarks68: RingNet 68-point embedding (:class:`~flamefit.model.landmarks.Landmarks68`), or None.
        dense: the MediaPipe-478 correspondence (:class:`~flamefit.model.landmarks.MeshLandmarks`), or None.
        texture_space: a :class:`~flamefit.model.texture_space.TextureSpace` with a UV layout (its own or the
            model's); None: a flat skin colour per vertex.
        landmark_noise_px: standard deviation of the "detector" noise at 256 px (scaled with the frame size), per
            point and axis; ``landmark_noise_corr`` in [0, 1): its correlation from one frame to the next (AR(1)
            with the same marginal deviation; 0 = white jitter).
        pixel_noise: sensor noise added to each frame (0..1 units).
        keep_frames: keep the images in ``clip.images`` (T x H x W x 3 bytes).
        video_path: also write the frames as an mp4 (H.264 when available) through
            :class:`flamefit.observe.video.VideoWriter`.
        chunk: frames rendered per batch.
        region: face-region vertex mask; default :func:`flamefit.fit.synthetic.face_region` (needs ``landmarks68``),
            else all head vertices.
        cuts: frame indices where a new shot starts (new background, camera framing and head orientation).
        face_absent: frames that show only the background (the face is lost): their landmarks are NaN and
            ``face_visible`` False; the parameters and vertices go on as if the head were hidden.
        fov_deg: field of view of the frames' longest side (the head keeps the same image size).
    """
    if n_frames < 1 or fps <= 0 or height < 16 or width < 16:
        from flamefit.errors import ConfigError

        raise ConfigError(f"a synthetic clip needs n_frames >= 1, fps > 0 and frames of at least 16x16 px; got "
                          f"n_frames={n_frames}, fps={fps}, size={width}x{height}")
    if not 0.0 <= landmark_noise_corr < 1.0:
        from flamefit.errors import ConfigError

        raise ConfigError(f"landmark_noise_corr must be in [0, 1), got {landmark_noise_corr}")
    cuts = sorted({int(c) for c in cuts})
    absent = np.zeros(n_frames, bool)
    try:
        absent[list(face_absent)] = True
    except IndexError as e:
        from flamefit.errors import ConfigError

        raise ConfigError(f"face_absent frames must be in 0..{n_frames - 1}, got {list(face_absent)}") from e
    if cuts and not 0 < cuts[0] <= cuts[-1] < n_frames:
        from flamefit.errors import ConfigError

        raise ConfigError(f"cuts must be frame indices in 1..{n_frames - 1}, got {cuts}")
    shot = np.searchsorted(np.asarray(cuts, int), np.arange(n_frames), side="right")
    rng = np.random.default_rng(seed)
    dtype = model.v_template.dtype
    device = model.v_template.device
    n_tex = texture_space.n_components if texture_space is not None else 0
    params = clip_params(n_frames, fps, model.n_shape, model.n_expr, n_tex, height, width, rng, motion,
                         fov_deg=fov_deg, dtype=dtype, shots=shot)
    bg = np.stack([_background(height, width, rng) for _ in range(int(shot[-1]) + 1)])  # one per shot
    bg_t = torch.as_tensor(bg, dtype=dtype, device=device)
    texture, albedo = _appearance(model, texture_space, dtype)
    if texture is not None:
        tex_map = texture_space(params.tex[:1].to(device))[0].clamp(0, 1)
        texture = (tex_map, texture[0].to(device), texture[1].to(device))
    elif albedo is not None:
        albedo = albedo.to(device)
    if region is None:
        if landmarks68 is not None:
            region = face_region(model, landmarks68)
        else:
            region = torch.ones(model.num_vertices, dtype=torch.bool)
            region[min(3931, model.num_vertices):] = False  # FLAME's eyeballs
    K = params.intrinsics()[0]

    writer = None
    if video_path is not None:
        from flamefit.observe.video import VideoWriter

        writer = VideoWriter(video_path, fps)
    images = np.empty((n_frames, height, width, 3), np.uint8) if keep_frames else None
    verts_all = np.empty((n_frames, model.num_vertices, 3), np.float32)
    cam_all = np.empty_like(verts_all)
    lm68 = np.empty((n_frames, 68, 2), np.float32) if landmarks68 is not None else None
    lmd = np.empty((n_frames, len(dense), 2), np.float32) if dense is not None else None
    try:
        for s in range(0, n_frames, chunk):
            e = min(n_frames, s + chunk)
            p = FlameParams(**{k: (v[s:e].to(device) if v is not None else None)
                               for k, v in params.tensors().items()})
            out = model(**p.flame_kwargs())
            verts = out.vertices
            R = axis_angle_to_matrix(p.cam_rotation)
            Kb = p.intrinsics()
            cam = PerspectiveCamera(Kb, R, p.cam_translation, height, width)
            r = _render(verts, model.faces, cam, texture, albedo, p.light, bg_t[torch.as_tensor(shot[s:e])])
            rgb = r.rgb.clamp(0, 1).cpu().numpy()
            rgb[absent[s:e]] = bg[shot[s:e][absent[s:e]]]
            if pixel_noise > 0:
                rgb = np.clip(rgb + rng.normal(0, pixel_noise, rgb.shape), 0, 1)
            frames_u8 = (rgb * 255 + 0.5).astype(np.uint8)
            if images is not None:
                images[s:e] = frames_u8
            if writer is not None:
                for img in frames_u8:
                    writer.write(img)
            verts_cam = cam.transform(verts)
            verts_all[s:e] = verts.cpu().numpy()
            cam_all[s:e] = verts_cam.cpu().numpy()
            if lm68 is not None:
                pts = model_landmarks_68(landmarks68, verts, model.faces, p.global_pose, p.neck_pose)
                lm68[s:e] = project_points(cam.transform(pts), Kb).cpu().numpy()
            if lmd is not None:
                lmd[s:e] = project_points(cam.transform(dense.project(verts, model.faces)), Kb).cpu().numpy()
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise

    sigma = landmark_noise_px * max(height, width) / 256
    noisy68 = lm68 + _detector_noise(rng, lm68.shape, sigma, landmark_noise_corr) \
        if lm68 is not None and sigma > 0 else None
    noisyd = lmd + _detector_noise(rng, lmd.shape, sigma, landmark_noise_corr) \
        if lmd is not None and sigma > 0 else None
    for a in (lm68, lmd, noisy68, noisyd):
        if a is not None:
            a[absent] = np.nan
    blink = params.expression[:, BLINK_COMPONENT].numpy() > 1.0 if model.n_expr > BLINK_COMPONENT \
        else np.zeros(n_frames, bool)
    config = dict(n_frames=n_frames, fps=fps, height=height, width=width, seed=seed,
                  motion=dict((motion or ClipMotion()).__dict__), landmark_noise_px=landmark_noise_px,
                  landmark_noise_corr=landmark_noise_corr, pixel_noise=pixel_noise,
                  texture=getattr(texture_space, "source", None) if texture_space is not None else "flat per-vertex",
                  cuts=list(cuts), face_absent=np.nonzero(absent)[0].tolist())
    return SyntheticClip(
        fps=float(fps), times_s=np.arange(n_frames) / fps, height=height, width=width,
        params=params.detach().to("cpu"), vertices=verts_all, verts_cam=cam_all, lmks_68=lm68, lmks_dense=lmd,
        lmks_68_noisy=None if noisy68 is None else noisy68.astype(np.float32),
        lmks_dense_noisy=None if noisyd is None else noisyd.astype(np.float32),
        face_region=region.cpu().numpy().astype(bool), K=K.cpu().numpy(), images=images,
        video_path=None if video_path is None else str(video_path), blink_frames=blink, face_visible=~absent,
        shot=shot, config=config,
    )


def _render(verts, faces, cam, texture, albedo, light, background):
    from flamefit.render.mesh_renderer import render_mesh

    return render_mesh(verts, faces, cam, texture=texture, albedo=albedo, sh=light, antialias=True,
                       background=background)


def _detector_noise(rng: np.random.Generator, shape, sigma: float, corr: float) -> np.ndarray:
    """(T,N,2) noise with standard deviation ``sigma`` per value and lag-1 correlation ``corr`` over frames."""
    white = rng.normal(0, sigma, shape)
    if corr <= 0:
        return white
    out = np.empty(shape)
    out[0] = white[0]
    innov = math.sqrt(1 - corr * corr)
    for i in range(1, shape[0]):
        out[i] = corr * out[i - 1] + innov * white[i]
    return out
