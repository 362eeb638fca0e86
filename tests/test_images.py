"""Photo loading: every kind of file a user may hand in, good or bad."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from splatcast.engine import images
from splatcast.engine.images import ImageError, load_image


def encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def gradient(width: int = 64, height: int = 48) -> np.ndarray:
    """An RGB test card whose every pixel differs, so rotations and flips show."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) % 256], -1).astype(np.uint8)


def test_rgb_png_round_trips_exactly(tmp_path):
    card = gradient()
    path = tmp_path / "card.png"
    Image.fromarray(card).save(path)
    loaded = load_image(path)
    assert loaded.dtype == np.float32 and loaded.shape == (48, 64, 3)
    np.testing.assert_array_equal(np.round(loaded * 255).astype(np.uint8), card)
    np.testing.assert_array_equal(load_image(path.read_bytes()), loaded)
    np.testing.assert_array_equal(load_image(Image.open(path)), loaded)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", "empty"),
        (b"hello, I am a text file\n" * 10, "not an image"),
        (encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)))[:2000], "damaged or truncated"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_bad_bytes_raise_image_error(payload, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(payload)


def test_empty_file_and_folder_and_missing(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(empty)
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("not a picture at all")
    with pytest.raises(ImageError, match="notes.png is not an image"):
        load_image(text)


@pytest.mark.parametrize("size", [(1, 1), (15, 300), (300, 15)])
def test_tiny_images_are_refused(size):
    with pytest.raises(ImageError, match="at least 16x16"):
        load_image(encode(Image.new("RGB", size, (10, 20, 30))))


def test_empty_array_is_refused():
    with pytest.raises(ImageError, match="empty"):
        load_image(np.zeros((0, 0, 3), np.uint8))


def test_large_photos_are_downscaled_keeping_aspect():
    photo = Image.fromarray(np.full((300, 1200, 3), 200, np.uint8))
    loaded = load_image(encode(photo), max_side=400)
    assert loaded.shape == (100, 400, 3)
    np.testing.assert_allclose(loaded, 200 / 255, atol=1e-6)


def test_images_past_the_pixel_limit_are_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    payload = encode(Image.new("L", (101, 100)))
    with pytest.raises(ImageError, match="more than 10,000 pixels"):
        load_image(payload)
    assert load_image(encode(Image.new("L", (100, 100)))).shape == (100, 100, 3)
    assert Image.MAX_IMAGE_PIXELS != 100 * 100  # PIL's own limit is restored


def test_grayscale_becomes_equal_channels():
    gray = gradient()[..., 0]
    loaded = load_image(encode(Image.fromarray(gray, "L")))
    assert loaded.shape == (48, 64, 3)
    np.testing.assert_array_equal(loaded[..., 0], loaded[..., 2])
    np.testing.assert_allclose(loaded[..., 1], gray / 255, atol=1e-6)


def test_sixteen_bit_keeps_its_precision():
    values = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    loaded = load_image(encode(Image.fromarray(values)))
    assert loaded.shape == (32, 32, 3)
    # Steps of ~64/65535 survive: an 8-bit path would quantise them to 1/255.
    np.testing.assert_allclose(loaded[..., 0], values / 65535, atol=1e-6)


def test_sixteen_bit_arrays_are_scaled_by_their_range():
    values = np.full((20, 20, 3), 32768, np.uint16)
    np.testing.assert_allclose(load_image(values), 32768 / 65535, atol=1e-6)


def test_cmyk_is_converted_to_rgb():
    cyan = Image.new("CMYK", (32, 32), (255, 0, 0, 0))
    for format in ("JPEG", "TIFF"):
        loaded = load_image(encode(cyan, format))
        assert loaded.shape == (32, 32, 3)
        np.testing.assert_allclose(loaded.mean((0, 1)), [0, 1, 1], atol=0.02)


def test_palette_images_keep_colours_and_transparency():
    palette = Image.fromarray(gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    loaded = load_image(encode(palette))
    assert loaded.shape == (48, 64, 3)
    np.testing.assert_allclose(loaded, np.asarray(palette.convert("RGB")) / 255, atol=1e-6)
    transparent = palette.copy()
    transparent.info["transparency"] = 0
    loaded = load_image(encode(transparent, transparency=0))
    assert loaded.shape == (48, 64, 4)
    np.testing.assert_array_equal(loaded[..., 3] == 0, np.asarray(palette) == 0)


def test_alpha_channel_is_kept():
    rgba = np.dstack([gradient(), np.full((48, 64), 128, np.uint8)])
    loaded = load_image(encode(Image.fromarray(rgba, "RGBA")))
    assert loaded.shape == (48, 64, 4)
    np.testing.assert_allclose(loaded[..., 3], 128 / 255, atol=1e-6)


@pytest.mark.parametrize("orientation, turn", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(orientation, turn):
    """Orientation 6 means the camera was turned clockwise: the upright photo is the stored one turned
    clockwise, i.e. np.rot90 with k=-1; 8 the other way; 3 upside down."""
    card = gradient()
    exif = Image.Exif()
    exif[0x0112] = orientation
    loaded = load_image(encode(Image.fromarray(card), exif=exif))
    np.testing.assert_array_equal(np.round(loaded * 255).astype(np.uint8), np.rot90(card, turn))


@pytest.mark.parametrize(
    "array, reason",
    [
        (np.full((20, 20, 3), 1.5, np.float32), r"\[0, 1\]"),
        (np.full((20, 20, 3), np.nan, np.float32), "NaN"),
        (np.zeros((20, 20, 2), np.uint8), "shape"),
        (np.zeros((20, 20, 3), np.complex64), "dtype"),
    ],
    ids=["out-of-range", "nan", "two-channels", "complex"],
)
def test_bad_arrays_raise_image_error(array, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(array)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)
