"""Re-encoded copies of real images, for the duplicate tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import io

from PIL import Image

from similarity.data import LabelledImages
from similarity.imageio import ImageSource, open_image


def reencode(source: ImageSource, fmt: str, **options) -> bytes:
    """``source`` decoded and saved again as ``fmt`` (``size=(w, h)`` resizes first, LANCZOS)."""
    buffer = io.BytesIO()
    image = open_image(source)
    if "size" in options:
        image = image.resize(options.pop("size"), Image.Resampling.LANCZOS)
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def outsider_png(train: LabelledImages, indexed: LabelledImages) -> bytes:
    """A PNG of an image of ``train`` (in memory) whose pixels are none of ``indexed``'s."""
    seen = {indexed.pixels[i].tobytes() for i in range(len(indexed))}
    row = next(j for j in range(len(train)) if train.pixels[j].tobytes() not in seen)
    buffer = io.BytesIO()
    train.load(row).save(buffer, format="PNG")
    return buffer.getvalue()
