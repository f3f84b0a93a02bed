"""Report thumbnails: scaled by the same function as the API's, thin strips included, undecodable files skipped."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from report.thumbnails import load_thumbnail, thumbnail_uris


@pytest.mark.parametrize("width, height, upscale, expected", [
    (1, 200, True, (1, 64)), (200, 1, False, (64, 1)), (20, 10, True, (64, 32)), (20, 10, False, (20, 10)),
    (300, 100, False, (64, 21)),
])
def test_load_thumbnail_sizes(tmp_path, width, height, upscale, expected):
    path = tmp_path / "image.png"
    Image.fromarray(np.full((height, width), 128, dtype=np.uint8)).save(path)
    thumb = load_thumbnail(str(path), 64, upscale=upscale)
    assert thumb is not None and thumb.size == expected and thumb.mode == "RGB"


def test_thumbnail_uris_of_thin_and_bad_files(tmp_path):
    strip, bad = tmp_path / "strip.png", tmp_path / "bad.png"
    Image.fromarray(np.zeros((1, 500), dtype=np.uint8)).save(strip)
    bad.write_bytes(b"not an image")
    uris = thumbnail_uris([str(strip), str(bad)], 32)
    assert uris[0] is not None and uris[0].startswith("data:image/") and uris[1] is None
