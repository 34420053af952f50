"""load_image / to_float_rgb: every kind of file a user may pass, and every way it can be broken."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flamefit.errors import InputImageError
from flamefit.observe.image import load_image, to_float_rgb


def _gradient(h=40, w=60):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x / (w - 1), y / (h - 1), np.full((h, w), 0.25)], axis=2)


def test_rgb_png_roundtrip(tmp_path):
    ref = (_gradient() * 255).round().astype(np.uint8)
    Image.fromarray(ref).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (40, 60, 3) and img.dtype == np.float32 and img.flags.c_contiguous
    np.testing.assert_allclose(img, ref / 255.0, atol=1e-6)


def test_grayscale_becomes_rgb(tmp_path):
    g = (np.linspace(0, 255, 40 * 60).reshape(40, 60)).astype(np.uint8)
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    Image.fromarray(g, mode="L").save(tmp_path / "g.jpg", quality=95)
    for name in ("g.png", "g.jpg"):
        img = load_image(tmp_path / name)
        assert img.shape == (40, 60, 3)
        np.testing.assert_array_equal(img[..., 0], img[..., 1])
        np.testing.assert_array_equal(img[..., 0], img[..., 2])
    np.testing.assert_allclose(load_image(tmp_path / "g.png")[..., 0], g / 255.0, atol=1e-6)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, :15, 3] = 255  # left half opaque, right half transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    np.testing.assert_allclose(img[:, :15], np.broadcast_to([1.0, 0.0, 0.0], (20, 15, 3)))
    np.testing.assert_allclose(img[:, 15:], 1.0)


def test_palette_images(tmp_path):
    ref = (_gradient() * 255).astype(np.uint8)
    pal = Image.fromarray(ref).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png")
    assert img.shape == (40, 60, 3)
    assert np.abs(img - ref / 255.0).mean() < 0.03
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    assert load_image(tmp_path / "pt.png").shape == (40, 60, 3)


def test_16bit_gray_keeps_precision(tmp_path):
    import cv2

    g = np.linspace(0, 65535, 40 * 60).reshape(40, 60).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g)
    img = load_image(tmp_path / "g16.png")
    np.testing.assert_allclose(img[..., 1], g / 65535.0, atol=1e-6)


def test_16bit_colour_keeps_precision_and_channel_order(tmp_path):
    import cv2

    rgb = (_gradient() * 65535).round().astype(np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb[..., ::-1])  # OpenCV writes BGR
    cv2.imwrite(str(tmp_path / "c16.tif"), rgb[..., ::-1])
    for name in ("c16.png", "c16.tif"):
        img = load_image(tmp_path / name)
        np.testing.assert_allclose(img, rgb / 65535.0, atol=1e-6)  # 8-bit would be off by up to 1/510


def test_16bit_rgba_png(tmp_path):
    import cv2

    rgba = np.zeros((20, 24, 4), np.uint16)
    rgba[..., 2] = 65535  # blue in RGB order
    rgba[..., 3] = 65535
    cv2.imwrite(str(tmp_path / "a16.png"), rgba[..., [2, 1, 0, 3]])
    img = load_image(tmp_path / "a16.png")
    np.testing.assert_allclose(img, np.broadcast_to([0.0, 0.0, 1.0], (20, 24, 3)), atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:10, :10] = 255  # white block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be turned 90 degrees clockwise to view
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif, quality=95)
    img = load_image(tmp_path / "r.jpg")
    assert img.shape == (60, 40, 3)
    # rotating clockwise moves the stored top-left corner to the top-right
    assert img[:10, -10:].mean() > 0.9 and img[:10, :10].mean() < 0.1


def test_cmyk_jpeg(tmp_path):
    Image.fromarray((_gradient() * 255).astype(np.uint8)).convert("CMYK").save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "c.jpg").shape == (40, 60, 3)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_truncated_file_names_the_file(tmp_path, fmt):
    rng = np.random.default_rng(0)
    path = tmp_path / f"cut.{fmt}"
    Image.fromarray((rng.random((200, 300, 3)) * 255).astype(np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputImageError, match="cut"):
        load_image(path)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "noise.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(InputImageError, match="noise.png"):
        load_image(bad)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(InputImageError, match="notes.jpg"):
        load_image(text)
    with pytest.raises(InputImageError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputImageError, match="folder"):
        load_image(tmp_path)


def test_tiny_image_is_a_clear_error(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(InputImageError, match=r"tiny.png.*8x8"):
        load_image(tmp_path / "tiny.png")


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputImageError, match="too large"):
        load_image(tmp_path / "big.png")


def test_to_float_rgb_arrays():
    u8 = (np.arange(24 * 3).reshape(4, 6, 3) % 256).astype(np.uint8)
    np.testing.assert_allclose(to_float_rgb(u8), u8 / 255.0, atol=1e-7)
    u16 = u8.astype(np.uint16) * 257
    np.testing.assert_allclose(to_float_rgb(u16), u8 / 255.0, atol=1e-6)
    assert to_float_rgb(u8[..., 0]).shape == (4, 6, 3)
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(to_float_rgb(torch.as_tensor(u8 / 255.0)), u8 / 255.0, atol=1e-6)
    with pytest.raises(InputImageError, match="channels last"):
        to_float_rgb(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(InputImageError, match="0..1"):
        to_float_rgb(np.full((8, 8, 3), 200.0))
    with pytest.raises(InputImageError, match="NaN"):
        to_float_rgb(np.full((8, 8, 3), np.nan))
    with pytest.raises(InputImageError, match="int32"):
        to_float_rgb(np.zeros((8, 8, 3), np.int32))


def _jpeg_with_focal(path, size, f35):
    img = Image.new("RGB", size, (120, 90, 80))
    exif = Image.Exif()
    if f35 is not None:
        exif.get_ifd(0x8769)[0xA405] = f35  # FocalLengthIn35mmFilm
    img.save(path, exif=exif)
    return path


def test_exif_focal_from_the_35mm_equivalent(tmp_path):
    import math

    from flamefit.observe.image import exif_focal_px

    # a 26 mm (phone main camera) equivalent on a 4:3 frame: f_px = 26 / 43.27 * diagonal
    p = _jpeg_with_focal(tmp_path / "phone.jpg", (400, 300), 26)
    assert exif_focal_px(p) == pytest.approx(26 / 43.2666 * math.hypot(400, 300), rel=1e-6)
    assert exif_focal_px(_jpeg_with_focal(tmp_path / "none.jpg", (400, 300), None)) is None
    assert exif_focal_px(_jpeg_with_focal(tmp_path / "zero.jpg", (400, 300), 0)) is None
    assert exif_focal_px(_jpeg_with_focal(tmp_path / "fisheye.jpg", (400, 300), 4)) is None  # > 120 deg: not trusted


def test_exif_focal_reaches_the_fit_unless_the_config_says_otherwise(tmp_path):
    from flamefit.fit.config import CameraConfig
    from flamefit.fit.init import target_focal
    from flamefit.fit.targets import FitTarget

    t = FitTarget(image=np.zeros((300, 400, 3), np.float32), exif_focal_px=333.0)
    assert target_focal(t, 300, 400, CameraConfig()) == (333.0, "exif")
    assert target_focal(t, 300, 400, CameraConfig(focal_px=500.0)) == (500.0, "config")
    f, source = target_focal(t, 300, 400, CameraConfig(use_exif=False))
    assert source.startswith("fov_deg prior")
    assert f == pytest.approx(200 / np.tan(np.radians(CameraConfig().fov_deg) / 2))
    t.focal_px = 250.0
    assert target_focal(t, 300, 400, CameraConfig(focal_px=500.0)) == (250.0, "given")
