"""Files for the bad-input suite, generated at run time (nothing binary is committed): odd but valid images
in every mode and container the decoder claims to handle, and broken or hostile files that must be refused.

Every function returns the file's bytes; ``seed`` makes the pixels reproducible.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _pixels(seed: int, height: int, width: int, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def rgb_image(seed: int = 0, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A smooth random RGB picture ``size = (width, height)`` (smooth, so JPEG artefacts stay small)."""
    small = Image.fromarray(_pixels(seed, 6, 6))
    return small.resize(size, Image.Resampling.BILINEAR)


# ---------------------------------------------------------------------- valid but unusual
def png(seed: int = 0, size: tuple[int, int] = (48, 40)) -> bytes:
    return _encode(rgb_image(seed, size), "PNG")


def jpeg(seed: int = 0, size: tuple[int, int] = (48, 40), **params) -> bytes:
    return _encode(rgb_image(seed, size), "JPEG", quality=90, **params)


def png_16bit(seed: int = 0) -> bytes:
    array = (_pixels(seed, 32, 32, 1).astype(np.uint16) * 257)
    return _encode(Image.fromarray(array), "PNG")


def png_palette_transparent(seed: int = 0) -> bytes:
    image = rgb_image(seed).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(image, "PNG", transparency=0)


def png_la(seed: int = 0) -> bytes:
    return _encode(Image.fromarray(_pixels(seed, 32, 32, 2)), "PNG")


def png_rgba(seed: int = 0) -> bytes:
    return _encode(Image.fromarray(_pixels(seed, 32, 32, 4)), "PNG")


def png_1bit(seed: int = 0) -> bytes:
    return _encode(Image.fromarray(_pixels(seed, 32, 32, 1)).convert("1"), "PNG")


def jpeg_cmyk(seed: int = 0) -> bytes:
    return _encode(rgb_image(seed).convert("CMYK"), "JPEG", quality=90)


def jpeg_grayscale(seed: int = 0) -> bytes:
    return _encode(rgb_image(seed).convert("L"), "JPEG", quality=90)


def jpeg_exif_rotated(seed: int = 0) -> bytes:
    """A 48x40 JPEG whose EXIF orientation (6: rotate 90° clockwise) makes it display as 40x48."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(seed, exif=exif.tobytes())


def jpeg_progressive(seed: int = 0) -> bytes:
    return jpeg(seed, size=(64, 64), progressive=True, optimize=True)


def gif_animated(seed: int = 0) -> bytes:
    frames = [rgb_image(seed + i).convert("P") for i in range(3)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def tiff_multiframe(seed: int = 0) -> bytes:
    frames = [rgb_image(seed + i) for i in range(3)]
    return _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def webp(seed: int = 0) -> bytes:
    return _encode(rgb_image(seed), "WEBP", quality=90)


def bmp(seed: int = 0) -> bytes:
    return _encode(rgb_image(seed), "BMP")


def one_pixel() -> bytes:
    return _encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG")


def sliver(width: int = 1, height: int = 10_000) -> bytes:
    """An extreme aspect ratio: ``width`` x ``height`` pixels (1x10000 by default)."""
    return _encode(Image.new("L", (width, height), 128), "PNG")


# ---------------------------------------------------------------------- broken or hostile
def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(1, int(len(data) * keep))]


def png_bad_crc(seed: int = 0) -> bytes:
    data = bytearray(png(seed))
    data[29] ^= 0xFF  # inside the IHDR CRC (8-byte signature + 4 length + 4 type + 13 data)
    return bytes(data)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels: ~110 KB on disk, 900 megapixels decoded."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def gif_huge_screen() -> bytes:
    """A tiny GIF whose header claims a 65535x65535 canvas (4.3 gigapixels)."""
    data = bytearray(_encode(Image.new("P", (2, 2)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", jpeg())
    return buffer.getvalue()


TEXT = b"this is not an image, just some text\n"
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"
PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] "
       b"/Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<rect width="10" height="10" fill="red"/></svg>')


def random_bytes(seed: int = 0, n: int = 4096) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def png_magic_then_garbage(seed: int = 0) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + random_bytes(seed, 2048)
