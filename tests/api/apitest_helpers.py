"""Helpers shared by the API tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import io

from PIL import Image

TOKEN = "test-token-0123456789"


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()
