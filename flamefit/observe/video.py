"""Streaming video decode and encode (PyAV): frames one at a time, never the whole clip in memory.

    info = probe_video("clip.mp4")                       # VideoInfo: size, nominal fps, duration, rotation, codec
    for frame in read_video("clip.mp4", fps=10, start_s=2.0, end_s=5.0):
        frame.index, frame.time_s, frame.image           # index in the source, seconds, (H,W,3) RGB

    with VideoWriter("overlay.mp4", fps=25) as out:      # H.264 when PyAV's FFmpeg has an encoder, else MPEG-4
        out.write(rgb)                                   # written to a temporary name, renamed at close

Conventions:

* ``time_s`` is the frame's presentation time (pts x the stream's time base) relative to the stream's start time,
  so the first frame of an ordinary file is at 0. Variable frame rate is handled by using these timestamps only;
  the nominal fps is metadata, never used to place frames (except for a frame without any timestamp).
* ``index`` is the frame's position in the source in presentation order (0-based), the same whether or not the
  reader seeked: after a seek it is recovered by counting the packets before the first decoded frame (demux only,
  no decoding).
* Selection is defined on the whole video and then restricted to ``[start_s, end_s)``, so a range (or a segment of
  a long video) selects exactly the frames the whole-video selection selects inside it:
  ``fps=F`` takes, for each tick ``k / F`` (k = 0, 1, ...) of video time, the frame whose time is closest (ties: the
  earlier frame); a frame is never returned twice, so ``F`` above the video's rate returns every frame once.
  ``every=N`` takes the frames whose source index is a multiple of N.
* Rotation metadata (the display matrix, or the older ``rotate`` tag) is applied to every frame, so images are
  upright as a player shows them; :class:`VideoInfo` gives the displayed size and the rotation.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from flamefit._files import AtomicPath
from flamefit.errors import ConfigError, VideoError

# Encoders tried in order for mp4 output: H.264 (libx264, or FFmpeg's generic name), then MPEG-4 part 2, which every
# FFmpeg build has.
MP4_CODECS = ("libx264", "h264", "mpeg4")


def _av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a declared dependency of the video extra
        raise VideoError("video support needs PyAV: pip install 'flamefit[video]'") from e
    return av


# -- metadata ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about its video stream (``width``/``height`` as displayed, i.e. after rotation)."""

    path: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation_deg: int  # counter-clockwise rotation applied to decoded frames (0, 90, 180, 270)
    hflip: bool  # mirrored by the display matrix (applied before the rotation)
    fps: float | None  # nominal (average) frame rate; None when the file does not say
    duration_s: float | None
    frame_count: int | None  # from the container's header when it has one (exact for mp4/mov), else None
    frame_count_estimate: int | None  # frame_count, else duration x fps
    codec: str
    pix_fmt: str | None
    time_base: Fraction
    start_time_s: float  # the stream's first timestamp, which time_s counts from
    container: str

    def to_dict(self) -> dict:
        """JSON-ready (``time_base`` as a string)."""
        d = dict(self.__dict__)
        d["time_base"] = str(self.time_base)
        return d


@dataclass
class VideoFrame:
    """One decoded frame: ``index`` in the source (presentation order), ``time_s`` (see module doc), ``image``
    (H,W,3) RGB, uint8 0..255 or float32 0..1, upright."""

    index: int
    time_s: float
    image: np.ndarray


# -- rotation -------------------------------------------------------------------------------------------------------

def orientation_from_display_matrix(matrix) -> tuple[int, bool]:
    """(counter-clockwise degrees in {0, 90, 180, 270}, hflip) from FFmpeg's 3x3 display matrix (9 numbers, the
    2x2 part in 16.16 fixed point or as floats; only its signs and ratios matter).

    FFmpeg maps a source pixel ``(x, y)`` to ``(x, y, 1) @ M``; ``av_display_rotation_get`` is
    ``-atan2(M[1], M[0])`` for the counter-clockwise angle. A negative determinant means a mirror image: FFmpeg's
    players flip horizontally first, then rotate by the remaining angle.
    """
    m = [float(v) for v in matrix]
    if len(m) != 9:
        raise ValueError(f"a display matrix has 9 entries, got {len(m)}")
    a, b, c, d = m[0], m[1], m[3], m[4]
    hflip = (a * d - b * c) < 0
    if hflip:  # undo the mirror (negate the x column) to leave a pure rotation
        a, c = -a, -c
    angle = -math.degrees(math.atan2(b, a))
    return int(round(angle / 90.0)) % 4 * 90, hflip


def apply_orientation(image: np.ndarray, rotation_deg: int, hflip: bool = False) -> np.ndarray:
    """Display orientation of a decoded (H,W,C) image: mirror left-right if ``hflip``, then rotate
    counter-clockwise by ``rotation_deg`` (a multiple of 90). Returns a contiguous array."""
    if rotation_deg % 90:
        raise VideoError(f"rotation {rotation_deg} degrees is not a multiple of 90; such videos are not supported")
    if hflip:
        image = image[:, ::-1]
    k = (rotation_deg // 90) % 4
    if k:
        image = np.rot90(image, k)
    return np.ascontiguousarray(image) if (hflip or k) else image


def _display_matrix_of(frame) -> list[int] | None:
    """The 9 int32 of the frame's DISPLAYMATRIX side data, or None (not present / not exposed by this PyAV)."""
    side = getattr(frame, "side_data", None)
    if side is None:
        return None
    try:
        for sd in side:
            if getattr(getattr(sd, "type", None), "name", "") == "DISPLAYMATRIX":
                raw = bytes(sd)
                if len(raw) >= 36:
                    return list(struct.unpack("<9i", raw[:36]))
    except (TypeError, ValueError, struct.error):
        return None
    return None


def frame_orientation(frame, stream_metadata: dict | None = None) -> tuple[int, bool]:
    """(counter-clockwise degrees, hflip) of a decoded PyAV frame, from what the installed PyAV exposes: the
    display-matrix side data (FFmpeg >= 7 attaches it to frames), else ``frame.rotation`` (PyAV >= 13), else the
    stream's legacy ``rotate`` tag (clockwise degrees, written by older FFmpeg and phones)."""
    matrix = _display_matrix_of(frame)
    if matrix is not None and any(matrix[:2] + matrix[3:5]):
        return orientation_from_display_matrix(matrix)
    rot = getattr(frame, "rotation", None)
    if rot:
        return int(round(float(rot) / 90.0)) % 4 * 90, False
    tag = (stream_metadata or {}).get("rotate")
    if tag:
        try:
            return int(round(-float(tag) / 90.0)) % 4 * 90, False
        except ValueError:
            return 0, False
    return 0, False


# -- opening ----------------------------------------------------------------------------------------------------------

def _open(path: str | os.PathLike):
    av = _av()
    p = Path(path)
    if not p.exists():
        raise VideoError(f"video file not found: {p}; check the path")
    if not p.is_file():
        raise VideoError(f"not a video file: {p} is a directory or a special file")
    try:
        container = av.open(str(p), mode="r")
    except av.FFmpegError as e:
        raise VideoError(f"cannot read video {p}: {e}; is it a video file PyAV/FFmpeg can open?") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p} has no video stream (streams: {[s.type for s in container.streams]})")
    return container, container.streams.video[0]


def _nominal_fps(stream) -> Fraction | None:
    for name in ("average_rate", "guessed_rate", "base_rate"):
        rate = getattr(stream, name, None)
        if rate:
            return Fraction(rate)
    return None


def _start_pts(stream, container) -> int:
    if stream.start_time is not None:
        return int(stream.start_time)
    if container.start_time is not None and stream.time_base:
        return int(round(Fraction(container.start_time, 1_000_000) / stream.time_base))
    return 0


def _info(path, container, stream, first_frame) -> VideoInfo:
    tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1_000_000)
    fps = _nominal_fps(stream)
    if stream.duration:
        duration = float(stream.duration * tb)
    elif container.duration:
        duration = container.duration / 1_000_000
    else:
        duration = None
    count = int(stream.frames) if stream.frames else None
    estimate = count if count is not None else (
        int(round(duration * float(fps))) if duration is not None and fps else None)
    rot, hflip = (0, False) if first_frame is None else frame_orientation(first_frame, dict(stream.metadata))
    cw = first_frame.width if first_frame is not None else stream.codec_context.width
    ch = first_frame.height if first_frame is not None else stream.codec_context.height
    w, h = (ch, cw) if rot in (90, 270) else (cw, ch)
    return VideoInfo(
        path=str(path), width=int(w), height=int(h), coded_width=int(cw), coded_height=int(ch),
        rotation_deg=rot, hflip=hflip, fps=float(fps) if fps else None, duration_s=duration, frame_count=count,
        frame_count_estimate=estimate, codec=stream.codec_context.name, pix_fmt=stream.codec_context.pix_fmt,
        time_base=tb, start_time_s=float(_start_pts(stream, container) * tb), container=container.format.name,
    )


def _decode_error(path, e) -> VideoError:
    return VideoError(f"cannot decode video {path}: {e}; the file may be damaged or truncated")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Metadata of a video file (decodes the first frame only, for its size and rotation)."""
    av = _av()
    container, stream = _open(path)
    try:
        try:
            first = next(iter(container.decode(stream)), None)
        except av.FFmpegError as e:
            raise _decode_error(path, e) from e
        if first is None:
            raise VideoError(f"{path} has a video stream but no decodable frame")
        return _info(path, container, stream, first)
    finally:
        container.close()


# -- selection --------------------------------------------------------------------------------------------------------

class TickSampler:
    """Streaming ``fps=F`` selection: for each tick ``k / F`` the frame whose time is closest (ties: the earlier),
    each frame at most once. Feed frames in time order with :meth:`push`; each call returns the payloads decided so
    far, in time order; :meth:`finish` decides the last frame. Holds one frame.

    ``from_start``: the first pushed frame is the first frame of the video (ticks before it go to it); otherwise
    (after a seek) ticks before the first pushed frame are left undecided, since an earlier frame may be closer.
    Times are exact (``Fraction``) so that ties are decided the same way everywhere.
    """

    def __init__(self, fps: Fraction, from_start: bool = True):
        if fps <= 0:
            raise ConfigError(f"fps must be positive, got {float(fps)}")
        self.step = 1 / Fraction(fps)
        self.k = 0
        self.from_start = from_start
        self._prev = None  # [time, payload, emitted]

    def _tick(self) -> Fraction:
        return self.k * self.step

    def push(self, t: Fraction, payload) -> list:
        out = []
        if self._prev is None:
            if self.from_start:
                cur_emit = self._tick() <= t
                while self._tick() <= t:
                    self.k += 1
            else:
                self.k = max(self.k, math.ceil(t / self.step))
                cur_emit = self._tick() == t
                if cur_emit:
                    self.k += 1
            if cur_emit:
                out.append(payload)
            self._prev = [t, payload, cur_emit]
            return out
        pt, ppayload, pemitted = self._prev
        if t <= pt:  # non-increasing timestamp (damaged file): such a frame is never closer to a tick
            return out
        cur_emit = False
        while self._tick() <= t:
            tick = self._tick()
            if tick - pt <= t - tick:
                if not pemitted:
                    out.append(ppayload)
                    pemitted = True
            else:
                cur_emit = True
            self.k += 1
        if cur_emit:
            out.append(payload)
        self._prev = [t, payload, cur_emit]
        return out

    def finish(self, end_t: Fraction | None) -> list:
        """Decide the last frame, shown until ``end_t`` (its time plus its duration): it is chosen if a tick before
        ``end_t`` is nearer to it than to ``end_t``."""
        if self._prev is None:
            return []
        pt, payload, emitted = self._prev
        self._prev = None
        if emitted or end_t is None:
            return []
        tick = self._tick()
        if tick < end_t and tick - pt <= end_t - tick:
            return [payload]
        return []


def _validate_selection(fps, every, start_s, end_s) -> None:
    if fps is not None and every is not None:
        raise ConfigError("give either fps (frames per second of video time) or every (every N-th frame), not both")
    if fps is not None and not (isinstance(fps, (int, float, Fraction)) and fps > 0 and math.isfinite(fps)):
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    if every is not None and not (isinstance(every, int) and every >= 1):
        raise ConfigError(f"every must be an integer >= 1, got {every!r}")
    for name, v in (("start_s", start_s), ("end_s", end_s)):
        if v is not None and not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"{name} must be a time in seconds >= 0, got {v!r}")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ConfigError(f"end_s ({end_s}) must be after start_s ({start_s})")


# -- reading ----------------------------------------------------------------------------------------------------------

class VideoReader:
    """Iterate over the selected frames of a video (see the module doc for selection and conventions).

    Args:
        path: any container/codec FFmpeg (as built into PyAV) reads.
        fps: subsample to this many frames per second of video time; or ``every``: every N-th source frame.
        start_s, end_s: restrict to frames with ``start_s <= time_s < end_s`` (seeks to shortly before start_s).
        dtype: ``"uint8"`` (0..255) or ``"float32"`` (0..1).
        threads: decoder threads (None: FFmpeg's default).

    Use as a context manager or call :meth:`close`; iterating twice decodes twice. ``stats`` counts the frames
    decoded and returned so far by the current iteration.
    """

    def __init__(self, path: str | os.PathLike, *, fps: float | None = None, every: int | None = None,
                 start_s: float | None = None, end_s: float | None = None, dtype: str = "uint8",
                 threads: int | None = None):
        _validate_selection(fps, every, start_s, end_s)
        if dtype not in ("uint8", "float32"):
            raise ConfigError(f"dtype must be 'uint8' or 'float32', got {dtype!r}")
        self.path = Path(path)
        self.fps = fps
        self.every = every
        self.start_s = start_s
        self.end_s = end_s
        self.dtype = dtype
        self.threads = threads
        self.info = probe_video(self.path)
        self.stats: dict[str, int] = {}
        self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    # pts -> seconds relative to the stream start, exactly
    def _time(self, pts: int) -> Fraction:
        return (pts - self._start_pts) * self.info.time_base

    def _open_stream(self):
        self.close()
        container, stream = _open(self.path)
        if self.threads is not None:
            stream.codec_context.thread_count = int(self.threads)
        self._container = container
        self._start_pts = _start_pts(stream, container)
        return container, stream

    def _count_before(self, pts: int) -> int:
        """Number of frames presented before ``pts`` (demuxing packets from the start, no decoding)."""
        container, stream = _open(self.path)
        n = 0
        try:
            for packet in container.demux(stream):
                if packet.dts is None and packet.pts is None:
                    continue  # the flush packet at the end
                if packet.dts is not None and packet.dts > pts:
                    break  # dts <= pts for every packet: no later packet is presented before pts
                if getattr(packet, "is_discard", False):
                    continue  # dropped by the decoder (edit lists), never a frame
                if packet.pts is not None and packet.pts < pts:
                    n += 1
        finally:
            container.close()
        return n

    def _to_image(self, frame) -> np.ndarray:
        img = frame.to_ndarray(format="rgb24")
        img = apply_orientation(img, self.info.rotation_deg, self.info.hflip)
        if self.dtype == "float32":
            img = img.astype(np.float32) * np.float32(1.0 / 255.0)
        return img

    def _decoded(self) -> Iterator[tuple[int, Fraction, object, bool]]:
        """(source index, exact time, PyAV frame, from_start) for the decoded frames from the start, or from shortly
        before ``start_s`` after a seek."""
        av = _av()
        fps_nominal = Fraction(self.info.fps).limit_denominator(1001 * 1000) if self.info.fps else None
        margin = Fraction(2) / fps_nominal if fps_nominal else Fraction(1, 10)
        if self.fps:
            margin = max(margin, 2 / Fraction(self.fps).limit_denominator(1_000_000))
        target = Fraction(self.start_s).limit_denominator(1_000_000) - margin if self.start_s else None
        container, stream = self._open_stream()
        from_start = True
        if target is not None and target > 0:
            try:
                container.seek(self._start_pts + int(target / self.info.time_base), stream=stream, backward=True)
                from_start = False
            except av.FFmpegError:
                container, stream = self._open_stream()  # not seekable: decode from the start
        index = None
        last_pts = None
        try:
            for frame in container.decode(stream):
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is None:  # no timestamp at all (raw elementary streams): place by the nominal rate
                    if fps_nominal is None:
                        raise VideoError(f"{self.path}: frames have no timestamps and the file gives no frame rate")
                    pts = self._start_pts + int(round((0 if last_pts is None else (
                        self._time(last_pts) + 1 / fps_nominal)) / self.info.time_base))
                if index is None:
                    if from_start:
                        index = 0
                    elif self._time(pts) >= Fraction(self.start_s).limit_denominator(1_000_000):
                        # the seek overshot (no frame before start_s decoded): start again from the beginning
                        yield from self._decoded_from_start()
                        return
                    else:
                        index = self._count_before(pts)
                last_pts = pts
                yield index, self._time(pts), frame, from_start
                index += 1
        except av.FFmpegError as e:
            raise _decode_error(self.path, e) from e

    def _decoded_from_start(self):
        av = _av()
        container, stream = self._open_stream()
        try:
            for index, frame in enumerate(container.decode(stream)):
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is None:
                    raise VideoError(f"{self.path}: frames have no timestamps; cannot select by time")
                yield index, self._time(pts), frame, True
        except av.FFmpegError as e:
            raise _decode_error(self.path, e) from e

    def __iter__(self) -> Iterator[VideoFrame]:
        start = Fraction(self.start_s).limit_denominator(1_000_000) if self.start_s else Fraction(0)
        end = Fraction(self.end_s).limit_denominator(1_000_000) if self.end_s is not None else None
        stats = self.stats = {"decoded": 0, "returned": 0}  # updated as frames go by
        sampler = None
        last = None  # (time, frame) of the last decoded frame, for the sampler's end

        def emit(chosen):
            for ci, ct, cf in chosen:
                if ct >= start and (end is None or ct < end):
                    stats["returned"] += 1
                    yield VideoFrame(ci, float(ct), self._to_image(cf))

        try:
            for index, t, frame, from_start in self._decoded():
                stats["decoded"] += 1
                if self.fps is not None:
                    if sampler is None:
                        sampler = TickSampler(Fraction(self.fps).limit_denominator(1_000_000), from_start)
                    yield from emit(sampler.push(t, (index, t, frame)))
                elif self.every is None or index % self.every == 0:
                    yield from emit([(index, t, frame)])
                last = (t, frame)
                if end is not None and t >= end:
                    break  # this frame already served as the sampler's "next frame" for the last tick
            else:
                if sampler is not None and last is not None:
                    t, frame = last
                    dur = None
                    if frame.duration:
                        dur = frame.duration * self.info.time_base
                    elif self.info.fps:
                        dur = 1 / Fraction(self.info.fps).limit_denominator(1001 * 1000)
                    yield from emit(sampler.finish(None if dur is None else t + dur))
        finally:
            self.close()


def read_video(path: str | os.PathLike, **kwargs) -> Iterator[VideoFrame]:
    """Generator over the selected frames; keyword arguments as :class:`VideoReader`."""
    with VideoReader(path, **kwargs) as reader:
        yield from reader


# -- writing ----------------------------------------------------------------------------------------------------------

def pick_codec(candidates=MP4_CODECS) -> str:
    """The first encoder of ``candidates`` that this PyAV build has."""
    av = _av()
    for name in candidates:
        try:
            av.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises different types for an unknown codec across versions
            continue
    raise VideoError(f"none of the video encoders {list(candidates)} is available in this PyAV/FFmpeg build")


class VideoWriter:
    """Write frames one at a time to a video file (mp4 by default), atomically: frames go to a hidden temporary
    file next to ``path`` that replaces ``path`` at :meth:`close`; :meth:`abort` (or an exception inside a ``with``
    block) removes it and leaves ``path`` untouched.

    Args:
        path: output file; its suffix chooses the container (``.mp4``, ``.mkv``, ``.mov``, ...).
        fps: frame rate. Frames are placed at ``n / fps`` unless ``variable_rate`` is set, in which case every
            :meth:`write` gives its ``time_s`` (milliseconds resolution).
        codec: encoder name; default: H.264 if available, else MPEG-4 part 2.
        quality: 0 (best) .. 51; the CRF for H.264, mapped to a quantiser for MPEG-4.

    Images are (H,W,3) RGB, uint8 or float 0..1, all of one size; odd sizes are padded by one black row/column
    (4:2:0 chroma needs even sizes).
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, codec: str | None = None, quality: int = 20,
                 variable_rate: bool = False, threads: int | None = None):
        if not (fps and fps > 0 and math.isfinite(fps)):
            raise ConfigError(f"the output video's fps must be positive, got {fps!r}")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise VideoError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        self.fps = Fraction(fps).limit_denominator(1001 * 1000)
        self.codec = codec or pick_codec()
        self.quality = int(quality)
        self.variable_rate = variable_rate
        self.threads = threads
        self._out = AtomicPath(self.path)  # the container picks its format from the (kept) suffix
        self.tmp_path = self._out.tmp
        self.frames_written = 0
        self._container = None
        self._stream = None
        self._size = None
        self._last_pts = None
        self._closed = False

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _start(self, h: int, w: int) -> None:
        av = _av()
        try:
            self._container = av.open(str(self.tmp_path), mode="w")
            options = {"crf": str(self.quality), "preset": "veryfast"} if self.codec in ("libx264", "h264") else {}
            stream = self._container.add_stream(self.codec, rate=self.fps, options=options)
        except (av.FFmpegError, ValueError) as e:
            self.abort()
            raise VideoError(f"cannot create video {self.path} with encoder {self.codec}: {e}") from e
        stream.width, stream.height = w + (w % 2), h + (h % 2)
        stream.pix_fmt = "yuv420p"
        if self.variable_rate:
            stream.codec_context.time_base = Fraction(1, 1000)
        else:
            stream.codec_context.time_base = 1 / self.fps
        if self.threads is not None:
            stream.codec_context.thread_count = int(self.threads)
        if self.codec not in ("libx264", "h264"):  # MPEG-4 part 2: a fixed quantiser, 2 (best) .. 31
            stream.codec_context.qscale = True
            stream.codec_context.global_quality = 118 * max(2, min(31, 2 + self.quality * 29 // 51))
        self._stream = stream
        self._size = (h, w)

    def write(self, image: np.ndarray, time_s: float | None = None) -> None:
        """Append one frame; ``time_s`` only (and always) with ``variable_rate``, strictly increasing."""
        av = _av()
        if self._closed:
            raise VideoError(f"{self.path}: write after close")
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise VideoError(f"{self.path}: frames must be (H,W,3) RGB, got shape {img.shape}")
        if img.dtype != np.uint8:
            img = (np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        h, w = img.shape[:2]
        if self._container is None:
            self._start(h, w)
        elif (h, w) != self._size:
            self.abort()
            raise VideoError(f"{self.path}: frame {self.frames_written} is {w}x{h}, earlier frames "
                             f"{self._size[1]}x{self._size[0]}; all frames of a video must have one size")
        if h % 2 or w % 2:
            img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)))
        if self.variable_rate:
            if time_s is None:
                raise ConfigError("a variable_rate VideoWriter needs time_s for every frame")
            pts = int(round(time_s * 1000))
            if self._last_pts is not None and pts <= self._last_pts:
                raise ConfigError(f"{self.path}: time_s must increase by >= 1 ms per frame, got {time_s} after "
                                  f"{self._last_pts / 1000}")
            tb = Fraction(1, 1000)
        else:
            if time_s is not None:
                raise ConfigError("time_s is only for a VideoWriter made with variable_rate=True")
            pts = self.frames_written
            tb = 1 / self.fps
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame.pts, frame.time_base = pts, tb
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except av.FFmpegError as e:
            self.abort()
            raise VideoError(f"cannot encode frame {self.frames_written} of {self.path}: {e}") from e
        self._last_pts = pts
        self.frames_written += 1

    def close(self) -> Path:
        """Flush, finish the file and move it into place; returns the path. A writer without frames writes nothing
        and raises (an empty video is not a video)."""
        av = _av()
        if self._closed:
            return self.path
        if self._container is None:
            self._closed = True
            raise VideoError(f"no frames were written to {self.path}; nothing to save")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except av.FFmpegError as e:
            self.abort()
            raise VideoError(f"cannot finish video {self.path}: {e}") from e
        self._container = None
        self._out.commit()
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the partial file (``path`` is not touched)."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - best effort while already failing
                pass
            self._container = None
        self._out.discard()
