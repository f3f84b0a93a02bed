"""GET /api/images/<id>?size=: long thin images still give a thumbnail (every side at least 1 pixel)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from apitest_helpers import TOKEN, encode


@pytest.mark.parametrize("width, height", [(1, 200), (200, 1)])
@pytest.mark.parametrize("fmt, pil_format", [("jpeg", "JPEG"), ("png", "PNG")])
def test_thumbnail_of_a_thin_strip(make_writable_app, width, height, fmt, pil_format):
    client = make_writable_app().test_client()
    pixels = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
    added = client.post("/api/images", data={"image": (io.BytesIO(encode(Image.fromarray(pixels))), "strip.png"),
                                             "label": "Strip"},
                        content_type="multipart/form-data", headers={"Authorization": f"Bearer {TOKEN}"})
    assert added.status_code == 201, added.get_json()
    with client.get(f"/api/images/{added.get_json()['id']}?size=64&format={fmt}") as r:
        assert r.status_code == 200, r.get_json()
        with Image.open(io.BytesIO(r.data)) as thumb:
            thumb.load()
            assert thumb.format == pil_format
            assert thumb.size == ((1, 64) if width == 1 else (64, 1))
