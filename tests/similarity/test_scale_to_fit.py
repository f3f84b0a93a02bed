"""scale_to_fit: the one thumbnail scaling (API and report): fits size x size, up or down, never a 0-pixel side."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from similarity.imageio import scale_to_fit


def image(width: int, height: int, mode: str = "L") -> Image.Image:
    pixels = np.random.default_rng(width * 1000 + height).integers(0, 256, (height, width), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.mark.parametrize("width, height, size, expected", [
    (1, 200, 64, (1, 64)), (200, 1, 64, (64, 1)), (1, 1, 64, (64, 64)), (2, 1000, 64, (1, 64)),
    (28, 28, 64, (64, 64)), (640, 480, 128, (128, 96)), (480, 640, 128, (96, 128)), (300, 100, 256, (256, 85)),
])
def test_longer_side_becomes_size_and_no_side_is_empty(width, height, size, expected):
    thumb = scale_to_fit(image(width, height, "RGB"), size)
    assert thumb.size == expected and thumb.mode == "RGB"
    for fmt in ("JPEG", "PNG"):
        thumb.save(io.BytesIO(), fmt)  # a 0-pixel side raises "cannot write empty image"


def test_small_images_enlarged_2x_or_more_stay_crisp():
    small = image(28, 28)
    enlarged = np.asarray(scale_to_fit(small, 56))
    np.testing.assert_array_equal(enlarged, np.asarray(small).repeat(2, axis=0).repeat(2, axis=1))  # nearest
    checkerboard = Image.fromarray((np.indices((40, 40)).sum(axis=0) % 2 * 255).astype(np.uint8))
    assert set(np.unique(np.asarray(scale_to_fit(checkerboard, 80)))) == {0, 255}
    assert len(np.unique(np.asarray(scale_to_fit(checkerboard, 64)))) > 2  # under 2x: LANCZOS blends


def test_bad_size_is_refused():
    with pytest.raises(ValueError, match="size"):
        scale_to_fit(image(10, 10), 0)
