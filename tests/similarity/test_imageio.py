"""Decoding: every mode to L/RGB, EXIF orientation, bombs and garbage refused with clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from similarity.imageio import ImageDecodeError, open_image


def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("mode,fmt,expected", [
    ("L", "PNG", "L"), ("LA", "PNG", "L"), ("RGBA", "PNG", "RGB"), ("CMYK", "JPEG", "RGB"),
    ("I;16", "PNG", "L"), ("1", "PNG", "L"), ("RGB", "WEBP", "RGB"), ("I", "TIFF", "L"), ("F", "TIFF", "L"),
])
def test_modes_are_normalised(mode, fmt, expected):
    image = Image.new(mode, (20, 10))
    out = open_image(_bytes(image, fmt))
    assert out.mode == expected and out.size == (20, 10)


def test_palette_transparency_is_composited_on_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    out = open_image(_bytes(image, "PNG", transparency=0))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_range_is_scaled():
    array = np.linspace(1000, 3000, 64, dtype=np.uint16).reshape(8, 8)
    out = open_image(_bytes(Image.fromarray(array), "PNG"))
    values = np.asarray(out)
    assert values.min() == 0 and values.max() == 255


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (30, 10), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = open_image(_bytes(image, "JPEG", exif=exif.tobytes()))
    assert out.size == (10, 30)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("L", (5, 5), 10), Image.new("L", (5, 5), 200)]
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert np.asarray(open_image(data)).mean() < 50


@pytest.mark.parametrize("payload,message", [
    (b"", "empty"), (b"hello, not an image", "not a recognised"), (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a recognised"),
    (b"%PDF-1.4\n", "not a recognised"),
])
def test_garbage_is_refused(payload, message):
    with pytest.raises(ImageDecodeError, match=message):
        open_image(payload)


def test_truncated_png_and_jpeg_are_refused():
    for fmt in ("PNG", "JPEG"):
        data = _bytes(Image.new("RGB", (64, 64), (1, 2, 3)), fmt)
        with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
            open_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    data = _bytes(Image.new("1", (20000, 20000)), "PNG")  # tiny file, 400 megapixels
    with pytest.raises(ImageDecodeError, match="over the limit|decompression bomb"):
        open_image(data)
    with pytest.raises(ImageDecodeError, match="over the limit"):
        open_image(_bytes(Image.new("L", (100, 100)), "PNG"), max_pixels=5000)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageDecodeError, match="not found"):
        open_image(tmp_path / "nope.png")
    with pytest.raises(ImageDecodeError, match="directory"):
        open_image(tmp_path)
