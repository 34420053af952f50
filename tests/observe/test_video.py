"""Streaming video decode/encode: selection maths (fps, every, start/end), VFR, rotation, errors, atomic writer."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV (the `video` extra) is not installed")

from flamefit.errors import ConfigError, VideoError  # noqa: E402
from flamefit.observe.video import (  # noqa: E402
    TickSampler,
    VideoReader,
    VideoWriter,
    apply_orientation,
    frame_orientation,
    orientation_from_display_matrix,
    pick_codec,
    probe_video,
    read_video,
)

H, W = 48, 64


def level(i: int) -> int:
    """The grey level that encodes frame i (steps of 4: lossy coding and YUV rounding move it by about 1)."""
    return (i * 4) % 256


def code(i: int) -> int:
    return i % 64


def write_test_video(path: Path, n: int = 50, fps: int = 25, times_s=None, gop: int = 10, codec: str = "libx264",
                     rotation_deg: float | None = None, size=(H, W)) -> Path:
    """Flat grey frames whose level encodes the index, a white marker at the top-left; optional explicit
    timestamps (VFR, millisecond time base) and display rotation metadata."""
    h, w = size
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.codec_context.gop_size = gop
    s.bit_rate = 4_000_000  # MPEG-4's default rate would blur the grey levels that encode the frame number
    if times_s is not None:
        s.codec_context.time_base = Fraction(1, 1000)
    if rotation_deg is not None:
        s.set_display_rotation(rotation_deg)
    for i in range(n):
        a = np.full((h, w, 3), level(i), np.uint8)  # grey: luma keeps it exactly enough
        a[:8, :8] = 255
        f = av.VideoFrame.from_ndarray(a, format="rgb24")
        if times_s is None:
            f.pts = i
        else:
            f.pts, f.time_base = round(times_s[i] * 1000), Fraction(1, 1000)
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def decoded_code(frame) -> int:
    """The frame number (mod 64) read back from the picture."""
    return int(round(float(np.median(frame.image[H // 2:, W // 2:, 0])) / 4)) % 64


def closest_tick_selection(times, fps, duration_end):
    """Brute-force reference: for each tick k/fps < end, the frame of nearest time (ties: earlier); unique."""
    times = [Fraction(t).limit_denominator(100000) for t in times]
    step = 1 / Fraction(fps).limit_denominator(100000)
    chosen = []
    k = 0
    while k * step < duration_end:
        tick = k * step
        best = min(range(len(times)), key=lambda i: (abs(times[i] - tick), times[i]))
        if not chosen or chosen[-1] != best:
            chosen.append(best)
        k += 1
    return sorted(set(chosen))


@pytest.fixture(scope="module")
def cfr(tmp_path_factory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("video") / "cfr25.mp4", n=50, fps=25, gop=10)


VFR_TIMES = np.round(np.cumsum(np.random.default_rng(3).uniform(0.01, 0.09, 60)) - 0.0, 3)
VFR_TIMES = VFR_TIMES - VFR_TIMES[0]


@pytest.fixture(scope="module")
def vfr(tmp_path_factory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("video") / "vfr.mp4", n=len(VFR_TIMES), times_s=VFR_TIMES,
                            gop=8)


# -- metadata and plain decode -----------------------------------------------------------------------------------------

def test_probe_constant_rate(cfr):
    info = probe_video(cfr)
    assert (info.width, info.height) == (W, H)
    assert info.fps == pytest.approx(25.0)
    assert info.frame_count == 50 and info.frame_count_estimate == 50
    assert info.duration_s == pytest.approx(2.0, abs=1e-6)
    assert info.rotation_deg == 0 and not info.hflip
    assert info.codec == "h264"
    assert info.to_dict()["time_base"] == str(info.time_base)


def test_decode_all_frames_in_order_with_times(cfr):
    frames = list(read_video(cfr))
    assert [f.index for f in frames] == list(range(50))
    assert np.allclose([f.time_s for f in frames], np.arange(50) / 25, atol=1e-9)
    assert [decoded_code(f) for f in frames] == [code(i) for i in range(50)]
    assert frames[0].image.shape == (H, W, 3) and frames[0].image.dtype == np.uint8


def test_float32_output(cfr):
    f = next(iter(read_video(cfr, dtype="float32", end_s=0.1)))
    assert f.image.dtype == np.float32 and 0.0 <= f.image.min() and f.image.max() <= 1.0
    assert f.image[:4, :4].mean() > 0.95  # the white marker


def test_streaming_decodes_only_ahead_of_what_was_returned(cfr):
    reader = VideoReader(cfr)
    it = iter(reader)
    next(it)
    assert reader.stats["decoded"] == 1
    reader_fps = VideoReader(cfr, fps=10)
    it = iter(reader_fps)
    next(it), next(it)
    assert reader_fps.stats["decoded"] <= 4  # the sampler looks one frame ahead, never further
    it.close()


# -- selection ---------------------------------------------------------------------------------------------------------

def test_fps_subsampling_25_to_10(cfr):
    frames = list(read_video(cfr, fps=10))
    # ticks at 0, 0.1, ..., 1.9 s: 20 frames; ticks half-way between two frames go to the earlier one
    assert len(frames) == 20
    assert [f.index for f in frames] == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27, 30, 32, 35, 37, 40, 42, 45, 47]
    assert [f.index for f in frames] == closest_tick_selection(np.arange(50) / 25, 10, 2.0)
    assert [decoded_code(f) for f in frames] == [code(f.index) for f in frames]


@pytest.mark.parametrize("fps", [1, 3, 7.3, 12.5])
def test_fps_subsampling_matches_reference(cfr, fps):
    got = [f.index for f in read_video(cfr, fps=fps)]
    assert got == closest_tick_selection(np.arange(50) / 25, fps, 2.0)
    assert len(got) == math.ceil(2.0 * fps - 1e-9)


def test_fps_above_source_rate_never_duplicates(cfr):
    assert [f.index for f in read_video(cfr, fps=60)] == list(range(50))


def test_every_n(cfr):
    assert [f.index for f in read_video(cfr, every=7)] == list(range(0, 50, 7))


@pytest.mark.parametrize("kw", [{}, {"fps": 10}, {"fps": 7.3}, {"every": 3}])
@pytest.mark.parametrize("start_s,end_s", [(0.5, 1.0), (1.3, None), (0.0, 0.3), (1.57, 1.83)])
def test_start_end_is_the_whole_selection_restricted(cfr, kw, start_s, end_s):
    whole = [(f.index, f.time_s) for f in read_video(cfr, **kw)]
    expected = [x for x in whole if x[1] >= start_s - 1e-12 and (end_s is None or x[1] < end_s)]
    reader = VideoReader(cfr, start_s=start_s, end_s=end_s, **kw)
    got = []
    for f in reader:
        assert decoded_code(f) == code(f.index)  # the index names the right picture after a seek
        got.append((f.index, f.time_s))
    assert got == expected
    if start_s >= 1.3:
        assert reader.stats["decoded"] <= 50 - 10  # it seeked instead of decoding from the start


def test_start_end_in_a_container_without_a_full_index(tmp_path):
    # Matroska's cues index only keyframes: the frame index after a seek must still be exact
    path = write_test_video(tmp_path / "clip.mkv", n=60, fps=30, gop=6, codec="mpeg4")
    got = [(f.index, decoded_code(f)) for f in read_video(path, start_s=1.2, end_s=1.5)]
    assert got == [(i, code(i)) for i in range(36, 45)]


# -- variable frame rate -----------------------------------------------------------------------------------------------

def test_vfr_timestamps(vfr):
    frames = list(read_video(vfr))
    assert [f.index for f in frames] == list(range(len(VFR_TIMES)))
    assert np.allclose([f.time_s for f in frames], VFR_TIMES, atol=1e-3)


@pytest.mark.parametrize("fps", [5, 10, 24])
def test_vfr_fps_subsampling_by_time(vfr, fps):
    frames = list(read_video(vfr, fps=fps))
    times = [f.time_s for f in read_video(vfr)]
    # the last frame is shown for the nominal frame duration the file gives
    last_end = times[-1] + 1 / probe_video(vfr).fps
    assert [f.index for f in frames] == closest_tick_selection(times, fps, last_end)
    assert len({f.index for f in frames}) == len(frames)


def test_vfr_range(vfr):
    whole = [(f.index, f.time_s) for f in read_video(vfr, fps=10)]
    got = [(f.index, f.time_s) for f in read_video(vfr, fps=10, start_s=1.0, end_s=2.0)]
    assert got == [x for x in whole if 1.0 <= x[1] < 2.0] and got


def test_tick_sampler_ties_and_gaps():
    s = TickSampler(Fraction(10))
    out = []
    for t in [Fraction(0), Fraction(5, 100), Fraction(30, 100), Fraction(31, 100)]:
        out += s.push(t, float(t))
    out += s.finish(Fraction(40, 100))
    # tick 0 -> 0; tick 0.1 -> 0.05 (0.05 vs 0.2 away); tick 0.2 -> 0.3 (0.15 vs 0.1); tick 0.3 -> 0.3 (once)
    assert out == [0.0, 0.05, 0.3]
    with pytest.raises(ConfigError):
        TickSampler(Fraction(0))


# -- rotation ----------------------------------------------------------------------------------------------------------

def _rot_matrix(deg: float, hflip: bool = False) -> list[int]:
    """FFmpeg's av_display_rotation_set (+ av_display_matrix_flip) in 16.16 fixed point."""
    r = math.radians(deg)
    c, s = math.cos(r), math.sin(r)
    m = [c, -s, 0, s, c, 0, 0, 0, 1]
    if hflip:
        m[0], m[3] = -m[0], -m[3]
    return [int(round(v * 65536)) for v in m[:8]] + [1 << 30]


@pytest.mark.parametrize("deg", [0, 90, 180, -90, 270])
@pytest.mark.parametrize("hflip", [False, True])
def test_orientation_from_display_matrix(deg, hflip):
    assert orientation_from_display_matrix(_rot_matrix(deg, hflip)) == (deg % 360, hflip)


def test_apply_orientation():
    img = np.arange(2 * 3).reshape(2, 3, 1)  # [[0 1 2], [3 4 5]]
    assert apply_orientation(img, 90)[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]  # counter-clockwise
    assert apply_orientation(img, 270)[..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert apply_orientation(img, 180)[..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]
    assert apply_orientation(img, 0, hflip=True)[..., 0].tolist() == [[2, 1, 0], [5, 4, 3]]
    assert apply_orientation(img, 90).flags["C_CONTIGUOUS"]
    with pytest.raises(VideoError):
        apply_orientation(img, 45)


def test_frame_orientation_fallbacks():
    # what older PyAV versions expose: frame.rotation only, or only the stream's legacy `rotate` tag (clockwise)
    assert frame_orientation(SimpleNamespace(side_data=None, rotation=90)) == (90, False)
    assert frame_orientation(SimpleNamespace(side_data=[], rotation=0), {"rotate": "90"}) == (270, False)
    assert frame_orientation(SimpleNamespace(), {"rotate": "180"}) == (180, False)
    assert frame_orientation(SimpleNamespace()) == (0, False)


@pytest.mark.parametrize("deg", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, deg):
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write rotation metadata (set_display_rotation needs PyAV >= 15)")
    path = write_test_video(tmp_path / "rot.mp4", n=5, rotation_deg=deg)
    info = probe_video(path)
    assert info.rotation_deg == deg % 360
    assert (info.coded_width, info.coded_height) == (W, H)
    frame = next(iter(read_video(path)))
    assert frame.image.shape[:2] == (info.height, info.width)
    if deg % 180:
        assert (info.width, info.height) == (H, W)
    # where the top-left marker ends up as displayed: counter-clockwise 90 puts it bottom-left
    corner = {90: (-1, 0), 270: (0, -1), 180: (-1, -1)}[deg % 360]
    assert frame.image[corner[0], corner[1]].min() > 200
    assert frame.image[0 if corner[0] else -1, 0 if corner[1] else -1].min() < 80


# -- errors ------------------------------------------------------------------------------------------------------------

def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 10)
    with pytest.raises(VideoError, match="notes.mp4"):
        probe_video(path)
    with pytest.raises(VideoError, match="notes.mp4"):
        list(read_video(path))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(VideoError, match="not found.*missing.mp4"):
        probe_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="directory"):
        probe_video(tmp_path)


def test_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    c = av.open(str(path), "w")
    s = c.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    for p in s.encode(frame):
        c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    with pytest.raises(VideoError, match="sound.wav has no video stream"):
        probe_video(path)


def test_invalid_selection_options(cfr):
    for kw in ({"fps": 0}, {"fps": -2}, {"every": 0}, {"every": 2.5}, {"fps": 5, "every": 2},
               {"start_s": 2, "end_s": 1}, {"start_s": -1}, {"dtype": "float64"}):
        with pytest.raises(ConfigError):
            VideoReader(cfr, **kw)


# -- writer ------------------------------------------------------------------------------------------------------------

def test_writer_round_trip_atomic(tmp_path):
    out = tmp_path / "overlay.mp4"
    out.write_bytes(b"previous run")
    w = VideoWriter(out, fps=12)
    for i in range(15):
        img = np.full((31, 45, 3), level(i) / 255, np.float32)  # odd size: padded to 32x46
        w.write(img)
        assert out.read_bytes() == b"previous run"  # the final name is replaced only at close
    assert w.close() == out
    assert out.exists() and not w.tmp_path.exists()
    info = probe_video(out)
    assert (info.width, info.height) == (46, 32)
    assert info.fps == pytest.approx(12) and info.frame_count == 15
    assert info.codec == {"libx264": "h264"}.get(w.codec, w.codec)
    frames = list(read_video(out))
    assert [int(round(float(np.median(f.image[:30, :44, 1])) / 4)) for f in frames] == list(range(15))
    assert np.allclose([f.time_s for f in frames], np.arange(15) / 12)


def test_writer_abort_leaves_no_file(tmp_path):
    out = tmp_path / "broken.mp4"
    out.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with VideoWriter(out, fps=25) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("failure while tracking")
    assert out.read_bytes() == b"previous"  # the old file is untouched
    assert not w.tmp_path.exists()


def test_writer_checks(tmp_path):
    with VideoWriter(tmp_path / "a.mp4", fps=25) as w:
        w.write(np.zeros((16, 16, 3), np.uint8))
        with pytest.raises(VideoError, match="one size"):
            w.write(np.zeros((18, 16, 3), np.uint8))
    assert not (tmp_path / "a.mp4").exists()
    with pytest.raises(VideoError, match="no frames"):
        VideoWriter(tmp_path / "b.mp4", fps=25).close()
    with pytest.raises(ConfigError):
        VideoWriter(tmp_path / "c.mp4", fps=0)
    with pytest.raises(VideoError, match="does not exist"):
        VideoWriter(tmp_path / "nowhere" / "d.mp4", fps=25)


def test_writer_variable_rate_and_mpeg4(tmp_path):
    times = [0.0, 0.04, 0.1, 0.13, 0.3, 0.31, 0.5]
    with VideoWriter(tmp_path / "v.mp4", fps=25, codec="mpeg4", variable_rate=True) as w:
        for t in times:
            w.write(np.full((16, 16, 3), 128, np.uint8), time_s=t)
        with pytest.raises(ConfigError):
            w.write(np.zeros((16, 16, 3), np.uint8), time_s=0.2)  # not increasing
    assert probe_video(tmp_path / "v.mp4").codec == "mpeg4"
    assert np.allclose([f.time_s for f in read_video(tmp_path / "v.mp4")], times, atol=1e-3)


def test_pick_codec():
    assert pick_codec() in ("libx264", "h264", "mpeg4")
    assert pick_codec(("no-such-encoder", "mpeg4")) == "mpeg4"
    with pytest.raises(VideoError):
        pick_codec(("no-such-encoder",))


# -- the shared real videos --------------------------------------------------------------------------------------------

SHARED_VIDEOS = {
    "obama_weekly_address_matted_512.mp4": (512, 512, 25.0, 190),
    "tears_of_steel_clip01_640x360.mp4": (640, 360, 24.0, 240),
}


@pytest.mark.parametrize("name", sorted(SHARED_VIDEOS))
def test_shared_videos(shared_assets, name):
    path = shared_assets / "videos" / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    w, h, fps, count = SHARED_VIDEOS[name]
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.frame_count) == (w, h, fps, count)
    assert info.duration_s == pytest.approx(count / fps, abs=0.05)
    first_second = list(read_video(path, end_s=1.0))
    assert [f.index for f in first_second] == list(range(int(fps)))
    assert first_second[0].image.shape == (h, w, 3)
    assert first_second[0].image.std() > 5  # a real picture, not a blank frame
    # a later range by seeking names the same frames as decoding from the start
    ref = {f.index: f.image for f in read_video(path, start_s=0.0, end_s=2.5) if f.time_s >= 2.0}
    got = list(read_video(path, start_s=2.0, end_s=2.5))
    assert [f.index for f in got] == sorted(ref)
    assert all(np.array_equal(f.image, ref[f.index]) for f in got)
