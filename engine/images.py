"""Loading the user's photo: whatever PIL can open, as float RGB(A) in [0, 1], upright.

Photos arrive in every shape a camera or an editor writes: EXIF-rotated JPEGs, 16-bit PNGs,
CMYK or palette images, grayscale. ``load_image`` turns each into one form the engine works
with: an ``(H, W, 3)`` or, when the photo carries transparency, ``(H, W, 4)`` float32 array in
[0, 1] in the sRGB the photo was stored in, rotated as the EXIF orientation tag says, and no
larger than ``max_side`` pixels on its longer side (downscaled with antialiasing, keeping the
aspect ratio). Everything a user can get wrong raises ``ImageError`` with the reason.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 16
"""Smaller photos hold too little of a person to reconstruct (pixels, each side)."""
DEFAULT_MAX_SIDE = 2048
"""Longer photos are downscaled to this side first: the engine works at a few hundred pixels
and a 100-megapixel photo would only cost memory."""
MAX_PIXELS = 256_000_000
"""Larger images are refused before decoding (a decompression bomb or a corrupt header)."""


class ImageError(ValueError):
    """An image that cannot be used, a photo to read or a render's file to write; the message says why."""


def load_image(
    source: str | os.PathLike | bytes | Image.Image | np.ndarray, max_side: int = DEFAULT_MAX_SIDE
) -> np.ndarray:
    """The photo as float32 ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA in [0, 1].

    ``source`` is a file path, the file's bytes, a PIL image or an array (``(H, W)``,
    ``(H, W, 3)`` or ``(H, W, 4)``; integer arrays are scaled by their dtype's maximum, float
    arrays must already lie in [0, 1]).
    """
    if isinstance(source, np.ndarray):
        image = _array_to_float(source)
    else:
        image = _pil_to_float(_open(source))
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"image is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if max(height, width) > max_side:
        image = _downscale(image, max_side)
    return image


def _open(source: str | os.PathLike | bytes | Image.Image) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    name = "image bytes" if isinstance(source, bytes) else os.fspath(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageError("image bytes are empty")
        source = io.BytesIO(source)
    elif os.path.isdir(source):
        raise ImageError(f"{name} is a folder, not an image")
    elif os.path.exists(source) and os.path.getsize(source) == 0:
        raise ImageError(f"{name} is an empty file")
    # PIL warns past MAX_IMAGE_PIXELS and raises past twice that; make both one clear error.
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} has more than {MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image PIL can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ImageError(f"{name} is damaged or truncated: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return image


def _pil_to_float(image: Image.Image) -> np.ndarray:
    """Upright float RGB(A) from any PIL mode."""
    if image.width * image.height > MAX_PIXELS:
        raise ImageError(f"image has more than {MAX_PIXELS:,} pixels")
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: PIL's own RGB conversion would clip at 255.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        return _gray_to_rgb(np.clip(values / peak, 0, 1))
    if mode == "F":
        return _gray_to_rgb(np.clip(np.asarray(image, dtype=np.float64), 0, 1))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if mode == "CMYK":
        # PIL's naive CMYK->RGB; an embedded ICC profile would be more exact but rarely matters here.
        image = image.convert("RGB")
    image = image.convert("RGBA" if has_alpha else "RGB")
    return np.asarray(image, dtype=np.float32) / 255.0


def _gray_to_rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1).astype(np.float32)


def _array_to_float(array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        raise ImageError(f"image array is empty (shape {array.shape})")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(f"image array has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if np.issubdtype(array.dtype, np.integer):
        return (array / np.iinfo(array.dtype).max).astype(np.float32)
    if np.issubdtype(array.dtype, np.bool_):
        return array.astype(np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageError(f"image array has dtype {array.dtype}; expected integers or floats")
    if not np.isfinite(array).all():
        raise ImageError("image array has NaN or infinite values")
    if array.min() < 0 or array.max() > 1:
        raise ImageError(f"float image values must lie in [0, 1], got [{array.min():.3g}, {array.max():.3g}]")
    return array.astype(np.float32)


def _downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Area-averaged downscale so the longer side is ``max_side``."""
    import cv2

    height, width = image.shape[:2]
    factor = max_side / max(height, width)
    size = (max(MIN_SIDE, round(width * factor)), max(MIN_SIDE, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
