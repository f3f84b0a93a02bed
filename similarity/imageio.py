"""Decoding images: the one place where bytes or files become ``PIL.Image`` objects.

Every caller (training, indexing, the API, reports) decodes through :func:`open_image`, so EXIF
orientation, mode conversion and decompression-bomb limits are the same everywhere.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

# 40 megapixels: larger than any photo a user would search with, far below a decompression bomb.
DEFAULT_MAX_PIXELS = 40_000_000
# The JPEG and WebP limit. Pillow spends 8 bytes per row on top of the pixels, so a 1 x 40,000,000 strip
# within the pixel limit would still cost 320 MB per copy; longer sides than this only come from such strips.
MAX_SIDE = 65_535
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".avif")
# The formats photos and datasets come in (JPEG includes multi-picture MPO files). Pillow knows ~40
# more (DDS, SGI, SPIDER, EPS through Ghostscript, ...); each is decoder code an upload could reach, so
# they are refused like any non-image.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "AVIF")


class ImageDecodeError(ValueError):
    """The input is not an image we can decode (corrupt, truncated, unsupported or too large)."""


ImageSource = str | os.PathLike | bytes | BinaryIO


def open_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``source`` (a path, raw bytes or a binary file object) into an "RGB" or "L" image.

    - EXIF orientation is applied, and only the first frame of animated/multi-frame files is used.
    - Images with more than ``max_pixels`` pixels or a side longer than :data:`MAX_SIDE` are refused before
      decoding (decompression bombs), and again after it (an ICO entry may turn out larger than its header).
    - Every mode is normalised: 1/L/I/I;16/F become "L", alpha is composited on white, P/CMYK/YCbCr/
      LAB/HSV become "RGB".
    - Pillow's warnings about damaged metadata (corrupt EXIF, oversized TIFF tags) are logged at DEBUG level,
      not raised: the pixels are still good. Its decompression-bomb warning refuses the image.

    Raises :class:`ImageDecodeError` with a readable message on any failure.
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "upload"
    if isinstance(source, bytes):
        if not source:
            raise ImageDecodeError("empty file (0 bytes)")
        source = io.BytesIO(source)
    try:
        with _PILLOW_WARNINGS.capture() as caught:
            return _decode(source, name, max_pixels, caught)
    except ImageDecodeError:
        raise
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{name}: file not found") from exc
    except IsADirectoryError as exc:
        raise ImageDecodeError(f"{name}: is a directory, not an image") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name}: not a recognised image format (supported: JPEG, PNG, GIF, BMP, "
                               f"WebP, TIFF, PPM/PGM, AVIF)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"{name}: image too large (decompression bomb refused)") from exc
    except MemoryError as exc:
        raise ImageDecodeError(f"{name}: not enough memory to decode this image") from exc
    # Pillow's plugins report malformed input with all of these (struct.error: a short header field;
    # RuntimeError: AVIF "Failed to decode frame", NotImplementedError: DDS "Unknown pixel format").
    except (OSError, SyntaxError, ValueError, EOFError, LookupError, TypeError, ArithmeticError, RuntimeError,
            struct.error, zlib.error) as exc:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({exc})") from exc


def _decode(source: str | os.PathLike | BinaryIO, name: str, max_pixels: int,
            caught: list[warnings.WarningMessage]) -> Image.Image:
    with Image.open(source, formats=ALLOWED_FORMATS) as image:  # type: ignore[arg-type]
        if any(issubclass(warning.category, Image.DecompressionBombWarning) for warning in caught):
            raise ImageDecodeError(f"{name}: image too large (decompression bomb refused)")
        _check_size(image, name, max_pixels)
        image.seek(0)
        image.load()
        _check_size(image, name, max_pixels)
        ImageOps.exif_transpose(image, in_place=True)  # not a copy: a 40-megapixel RGBA image is 160 MB
    for warning in caught:
        logger.debug("%s: decoder warning: %s", name, warning.message)
    return _normalise_mode(image)


def _check_size(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{name}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{name}: image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    if max(width, height) > MAX_SIDE:
        raise ImageDecodeError(f"{name}: image is {width}x{height}, a side is over the limit of {MAX_SIDE} pixels")


class _WarningCapture:
    """Collects the warnings Pillow emits in the current thread while it decodes.

    ``warnings.catch_warnings`` swaps process-wide state and is not thread-safe: the API decodes in several
    threads at once, and interleaved enter/exit pairs leave a recording hook installed for good. Here the first
    thread in installs one filter (Pillow's warnings always reach the hook, whatever the outer filters say, so
    pytest's "error" does not turn a corrupt EXIF block into an exception) and one hook, the last thread out
    removes them, and the hook hands each warning to the list of the thread that emitted it; other threads'
    warnings go on to the previous hook.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._local = threading.local()
        self._filter: tuple | None = None
        self._previous_hook = warnings.showwarning

    @contextmanager
    def capture(self) -> Iterator[list[warnings.WarningMessage]]:
        caught: list[warnings.WarningMessage] = []
        with self._lock:
            if self._users == 0:
                warnings.filterwarnings("always", module=r"PIL(\.|$)")
                self._filter = warnings.filters[0]
                self._previous_hook, warnings.showwarning = warnings.showwarning, self._hook
            self._users += 1
        self._local.caught = caught
        try:
            yield caught
        finally:
            self._local.caught = None
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    if warnings.showwarning == self._hook:
                        warnings.showwarning = self._previous_hook
                    with suppress(ValueError):  # someone else replaced the filter list meanwhile
                        warnings.filters.remove(self._filter)  # type: ignore[arg-type]

    def _hook(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        caught = getattr(self._local, "caught", None)
        if caught is None:
            self._previous_hook(message, category, filename, lineno, file, line)
        else:
            caught.append(warnings.WarningMessage(message, category, filename, lineno, file, line))


_PILLOW_WARNINGS = _WarningCapture()  # one per process, like the warnings state it manages


def _normalise_mode(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("RGB", "L"):
        return image.copy() if image.readonly else image
    if mode == "1":
        return image.convert("L")
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _high_bit_depth_to_l(image)
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        composed = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        del image, rgba  # free a converted copy (P, LA) before the last conversion
        return composed.convert("L" if mode in ("LA", "La") else "RGB")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit / 32-bit / float images into 8 bits by their actual range (of the finite values: NaN and
    -inf become black, +inf white). Works in row blocks of float64, so a 25-megapixel float TIFF needs ~50 MB
    on top of its pixels instead of ten full-size float64 copies."""
    import numpy as np

    array = np.asarray(image)
    if array.ndim != 2:
        array = array[..., 0]
    floats = array.dtype.kind == "f"
    finite = np.isfinite(array) if floats else None
    if finite is not None and not finite.any():
        return Image.new("L", image.size, 0)
    low = float(np.min(array, where=finite, initial=np.inf)) if floats else float(array.min())
    high = float(np.max(array, where=finite, initial=-np.inf)) if floats else float(array.max())
    scaled = np.zeros(array.shape, dtype=np.uint8)
    if high > low:
        rows = max(1, 2**20 // max(array.shape[1], 1))
        for top in range(0, array.shape[0], rows):
            with np.errstate(invalid="ignore"):  # casting a signalling NaN (a float TIFF may hold any bits)
                block = array[top:top + rows].astype(np.float64)
            if floats:
                bad = ~finite[top:top + rows]
                block[bad] = np.where(block[bad] > 0, high, low)
            block -= low
            block *= 255.0 / (high - low)
            scaled[top:top + rows] = np.clip(block, 0, 255, out=block).round(out=block)
    return Image.fromarray(scaled, mode="L")


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def scale_to_fit(image: Image.Image, size: int) -> Image.Image:
    """``image`` scaled, up or down, so that its longer side is ``size`` pixels (the thumbnail of every caller).

    The aspect ratio is kept and no side drops below 1 pixel (a 1x200 strip becomes 1x64, not 0x64).
    Images enlarged 2x or more use nearest-neighbor, so tiny ones (28x28 Fashion-MNIST) stay crisp; all
    others use LANCZOS.
    """
    if size < 1:
        raise ValueError(f"thumbnail size must be >= 1 pixel, got {size}")
    width, height = image.size
    if width >= height:
        target = (size, max(1, round(height / width * size)))
    else:
        target = (max(1, round(width / height * size)), size)
    resample = Image.Resampling.NEAREST if max(width, height) * 2 <= size else Image.Resampling.LANCZOS
    return image.resize(target, resample=resample)
