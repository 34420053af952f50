"""Reading images into flamefit's convention: ``(H, W, 3)`` float32 RGB in 0..1, EXIF orientation applied.

Pillow decodes (it notices truncated files, unlike OpenCV, which fills the missing part silently); OpenCV is used
only to keep the full precision of 16-bit colour PNG/TIFF files, which Pillow reduces to 8 bits. Every failure
is an :class:`~flamefit.errors.InputImageError` that names the file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from flamefit.errors import InputImageError

# Below this many pixels on the short side nothing face-like can be measured.
MIN_IMAGE_SIDE = 16

_EXIF_ORIENTATION_TAG = 0x0112
_EXIF_IFD = 0x8769
_EXIF_FOCAL_35MM = 0xA405  # FocalLengthIn35mmFilm (mm, 35 mm equivalent)
_DIAGONAL_35MM = 43.2666  # mm: the diagonal of a 36 x 24 mm frame, which defines the 35 mm equivalent focal
# A focal from EXIF is used only when it gives a field of view (long side) in this range: outside it the tag is
# more likely wrong (0, a crop the camera did not account for) than the lens.
EXIF_FOV_RANGE_DEG = (8.0, 120.0)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` float32 RGB in 0..1.

    Handles EXIF orientation (the array is upright as a viewer shows it), grayscale (replicated to RGB),
    palette images, 16-bit files (full precision), CMYK, and transparency (alpha is composited over white,
    the usual background of matted portraits). Raises :class:`InputImageError` naming the file when it is
    missing, not an image, truncated/damaged, absurdly large, or smaller than ``MIN_IMAGE_SIDE`` pixels.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise InputImageError(f"Image file not found: {path}. Check the path.")
    if path.is_dir():
        raise InputImageError(f"{path} is a folder, not an image file. Pass the image files inside it.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decode now, so truncation shows here and not later
                orientation = _exif_orientation(img)
                arr = _pil_to_float_rgb(img)
    except UnidentifiedImageError as exc:
        raise InputImageError(
            f"Cannot read {path}: not a recognised image format, or the file is damaged. "
            "Use PNG, JPEG, TIFF, BMP or WebP."
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputImageError(
            f"{path} is too large to load safely ({exc}). Downscale it (e.g. to 4000 px on the long side)."
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputImageError(
            f"Cannot decode {path}: the file is truncated or damaged ({exc}). Re-export or re-download it."
        ) from exc

    if _is_16bit_colour(path, arr):
        arr16 = _read_16bit_colour(path)
        if arr16 is not None and arr16.shape[:2] == arr.shape[:2]:
            arr = arr16
    arr = apply_exif_orientation(arr, orientation)
    check_image_size(arr, str(path))
    return np.ascontiguousarray(arr, dtype=np.float32)


def exif_focal_px(path: str | os.PathLike) -> float | None:
    """The focal length in pixels of an image file from its EXIF ``FocalLengthIn35mmFilm`` (phones and most
    cameras write it), or None when the file has none or an implausible one (see :data:`EXIF_FOV_RANGE_DEG`).

    The 35 mm equivalent is defined on the frame's diagonal, so ``f_px = f_35 / 43.27 mm * diagonal_px``, which
    holds for any aspect ratio and orientation (the diagonal is the same either way)."""
    import math

    from PIL import Image

    try:
        with Image.open(path) as img:
            exif = img.getexif()
            f35 = exif.get_ifd(_EXIF_IFD).get(_EXIF_FOCAL_35MM) or exif.get(_EXIF_FOCAL_35MM)
            w, h = img.size
    except Exception:  # unreadable EXIF is no focal; the image itself is validated by load_image
        return None
    try:
        f35 = float(f35)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(f35) and f35 > 0):
        return None
    focal = f35 / _DIAGONAL_35MM * math.hypot(w, h)
    fov = math.degrees(2 * math.atan(0.5 * max(w, h) / focal))
    return focal if EXIF_FOV_RANGE_DEG[0] <= fov <= EXIF_FOV_RANGE_DEG[1] else None


def check_image_size(image: np.ndarray, source: str) -> None:
    """Raise :class:`InputImageError` when an image is too small to hold a measurable face."""
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputImageError(
            f"{source} is only {w}x{h} pixels; a face needs at least {MIN_IMAGE_SIDE} pixels on each side "
            "(in practice 64 or more). Use a larger image."
        )


def to_float_rgb(image, source: str = "<array>") -> np.ndarray:
    """Bring an in-memory image to ``(H, W, 3)`` float32 RGB 0..1.

    Accepts numpy arrays or torch tensors, ``(H, W)``, ``(H, W, 1|3|4)``; uint8 (0..255), uint16 (0..65535) or
    float (0..1, clipped). Alpha is composited over white. Raises :class:`InputImageError` otherwise.
    """
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        try:  # PIL images and array-likes
            image = np.asarray(image)
        except Exception as exc:  # noqa: BLE001 - any failure means "not an image"
            raise InputImageError(f"{source}: expected an image array, got {type(image).__name__}.") from exc
    arr = image
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        raise InputImageError(
            f"{source}: image has shape {arr.shape}; flamefit expects channels last (H, W, 3). "
            "Transpose it (e.g. image.permute(1, 2, 0))."
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputImageError(f"{source}: expected an image of shape (H, W, 3), got {tuple(image.shape)}.")
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif arr.dtype == np.bool_:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if not np.isfinite(out).all():
            raise InputImageError(f"{source}: image contains NaN or infinite values.")
        if out.max(initial=0.0) > 1.5:  # 0..255 floats are a common slip; say so instead of clipping to white
            raise InputImageError(
                f"{source}: float image has values up to {out.max():.1f}; flamefit expects 0..1 "
                "(divide by 255)."
            )
        out = np.clip(out, 0.0, 1.0)
    elif np.issubdtype(arr.dtype, np.integer):
        raise InputImageError(f"{source}: integer images must be uint8 or uint16, got {arr.dtype}.")
    else:
        raise InputImageError(f"{source}: unsupported image dtype {arr.dtype}.")
    c = out.shape[2]
    if c == 1:
        out = np.repeat(out, 3, axis=2)
    elif c == 2:  # gray + alpha
        out = _over_white(np.repeat(out[:, :, :1], 3, axis=2), out[:, :, 1:])
    elif c == 4:
        out = _over_white(out[:, :, :3], out[:, :, 3:])
    return np.ascontiguousarray(out, dtype=np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float 0..1 RGB -> uint8 (rounded)."""
    return np.clip(np.asarray(image, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a float 0..1 (or uint8) RGB image as 8-bit PNG/JPEG."""
    from PIL import Image

    arr = image if image.dtype == np.uint8 else to_uint8(image)
    Image.fromarray(np.ascontiguousarray(arr)).save(Path(path))


def apply_exif_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a decoded array upright for EXIF orientation values 1..8 (as Pillow's ``exif_transpose``)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return np.swapaxes(arr, 0, 1)
    if orientation == 6:
        return np.rot90(arr, k=-1)
    if orientation == 7:
        return np.rot90(arr, k=1)[::-1]
    if orientation == 8:
        return np.rot90(arr, k=1)
    return arr


def _exif_orientation(img) -> int:
    try:
        value = int(img.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - broken EXIF must not make a readable image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return rgb * alpha + (1.0 - alpha)


def _pil_to_float_rgb(img) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        gray = np.asarray(img).astype(np.float32) / 65535.0
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "I":  # 32-bit integer gray; in practice 16-bit data
        gray = np.asarray(img).astype(np.float64)
        scale = 65535.0 if gray.max(initial=0) <= 65535 else float(gray.max())
        return np.repeat((np.clip(gray, 0, None) / scale).astype(np.float32)[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.asarray(img).astype(np.float32)
        if not np.isfinite(gray).all():
            raise ValueError("float image contains NaN or infinite values")
        peak = float(gray.max(initial=0.0))
        if peak > 1.0:
            gray = gray / peak
        return np.repeat(np.clip(gray, 0, 1)[:, :, None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        img = img.convert("RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")
    arr = np.asarray(img)
    return to_float_rgb(arr)


def _is_16bit_colour(path: Path, arr: np.ndarray) -> bool:
    """Whether the file is a 16-bit colour PNG/TIFF (Pillow gave us only the high byte)."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        try:
            with open(path, "rb") as fh:
                head = fh.read(26)
        except OSError:
            return False
        # PNG signature (8) + IHDR length/type (8) + width/height (8) + bit depth (1) + colour type (1)
        return len(head) == 26 and head[24] == 16 and head[25] in (2, 6)
    return suffix in (".tif", ".tiff")


def _read_16bit_colour(path: Path) -> np.ndarray | None:
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16 or decoded.ndim != 3:
        return None
    if decoded.shape[2] == 4:
        rgb = decoded[:, :, [2, 1, 0, 3]]
    else:
        rgb = decoded[:, :, 2::-1]
    return to_float_rgb(rgb)
