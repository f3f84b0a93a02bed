"""Decoding images: the one place where bytes or files become ``PIL.Image`` objects.

Every caller (training, indexing, the API, reports) decodes through :func:`open_image`, so EXIF
orientation, mode conversion and decompression-bomb limits are the same everywhere.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

# 40 megapixels: larger than any photo a user would search with, far below a decompression bomb.
DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class ImageDecodeError(ValueError):
    """The input is not an image we can decode (corrupt, truncated, unsupported or too large)."""


ImageSource = str | os.PathLike | bytes | BinaryIO


def open_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``source`` (a path, raw bytes or a binary file object) into an "RGB" or "L" image.

    - EXIF orientation is applied, and only the first frame of animated/multi-frame files is used.
    - Images with more than ``max_pixels`` pixels are refused before decoding (decompression bombs).
    - Every mode is normalised: 1/L/I/I;16/F become "L", alpha is composited on white, P/CMYK/YCbCr/
      LAB/HSV become "RGB".

    Raises :class:`ImageDecodeError` with a readable message on any failure.
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "upload"
    if isinstance(source, bytes):
        if not source:
            raise ImageDecodeError("empty file (0 bytes)")
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:  # type: ignore[arg-type]
                width, height = image.size
                if width < 1 or height < 1:
                    raise ImageDecodeError(f"{name}: image has no pixels ({width}x{height})")
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        f"{name}: image is {width}x{height} = {width * height} pixels, "
                        f"over the limit of {max_pixels}"
                    )
                image.seek(0)
                image.load()
                image = ImageOps.exif_transpose(image)
                return _normalise_mode(image)
    except ImageDecodeError:
        raise
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{name}: file not found") from exc
    except IsADirectoryError as exc:
        raise ImageDecodeError(f"{name}: is a directory, not an image") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name}: not a recognised image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"{name}: image too large (decompression bomb refused)") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError, TypeError) as exc:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({exc})") from exc


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
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        composed = Image.alpha_composite(background, rgba)
        return composed.convert("L" if mode in ("LA", "La") else "RGB")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit / 32-bit / float images into 8 bits by their actual range."""
    import numpy as np

    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        array = array[..., 0]
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        scaled = np.zeros(array.shape, dtype=np.uint8)
    else:
        scaled = np.clip((array - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
