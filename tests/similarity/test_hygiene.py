"""Pixel signals of duplicates (exact digest, pHash/dHash with mirror) and the grouping of pairs, on real
Fashion-MNIST PNGs and a real TrashNet-like photo made from them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from similarity.hygiene import (DuplicateRule, group_pairs, hamming, image_hashes, perceptual_hashes, phash_distance,
                                pixel_digest)
from similarity.imageio import open_image


def _reencode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo(fmnist_folder) -> Image.Image:
    """A 112x112 RGB image made of four real Fashion-MNIST images (a "photo" with structure in colour)."""
    tiles = [open_image(fmnist_folder.paths[i]).resize((56, 56)) for i in (0, 70, 140, 210)]
    canvas = Image.new("RGB", (112, 112))
    for n, tile in enumerate(tiles):
        canvas.paste(ImageOps.colorize(tile, (20, 40, 90), (250, 230, 200)), ((n % 2) * 56, (n // 2) * 56))
    return canvas


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "PPM"])
def test_a_lossless_reencode_has_the_same_digest(fmnist_folder, fmt):
    original = open_image(fmnist_folder.paths[3])
    assert pixel_digest(open_image(_reencode(original, fmt))) == image_hashes(fmnist_folder.paths[3]).exact


def test_the_digest_sees_mode_size_and_every_pixel(photo):
    digest = pixel_digest(photo)
    assert pixel_digest(open_image(_reencode(photo, "JPEG", quality=95))) != digest
    assert pixel_digest(photo.convert("L")) != pixel_digest(photo.convert("L").convert("RGB"))
    changed = photo.copy()
    changed.putpixel((5, 5), (0, 0, 0) if photo.getpixel((5, 5)) != (0, 0, 0) else (1, 1, 1))
    assert pixel_digest(changed) != digest
    assert pixel_digest(photo.crop((0, 0, 112, 56))) != pixel_digest(photo.crop((0, 0, 56, 112)))


def test_near_copies_are_close_in_phash_and_other_images_are_far(photo, fmnist_folder):
    base = perceptual_hashes(photo)
    jpeg = perceptual_hashes(open_image(_reencode(photo, "JPEG", quality=40)))
    resized = perceptual_hashes(photo.resize((80, 80), Image.Resampling.LANCZOS))
    flipped = perceptual_hashes(ImageOps.mirror(photo))
    near = 4  # bits
    assert phash_distance(base, jpeg) <= near and phash_distance(base, resized) <= near
    assert phash_distance(base, flipped, flips=False) > near  # pHash alone misses a flip ...
    assert phash_distance(base, flipped) == phash_distance(flipped, base) <= near  # ... its mirror hash does not
    others = [perceptual_hashes(open_image(p)) for p in fmnist_folder.paths[300:340]]
    assert min(phash_distance(base, o) for o in others) > near


def test_hamming_broadcasts_over_uint64_hashes():
    a = np.array([0, 2**64 - 1, 0b1011], dtype=np.uint64)
    table = hamming(a[:, None], a[None, :])
    assert table.shape == (3, 3) and table.dtype == np.uint8
    assert table.tolist() == [[0, 64, 3], [64, 0, 61], [3, 61, 0]]
    assert int(hamming(2**63, 1)) == 2


def test_groups_are_transitive_sorted_and_stable():
    pairs = np.array([[9, 4], [4, 7], [20, 21], [7, 4], [3, 3], [2**62, 21]])
    groups = group_pairs(pairs)
    assert groups == [[4, 7, 9], [20, 21, 2**62]]  # smallest id first in each, groups by that id
    shuffled = np.random.default_rng(0).permutation(pairs)[:, ::-1]
    assert group_pairs(shuffled) == groups
    assert group_pairs(np.zeros((0, 2))) == [] and group_pairs([[5, 5]]) == []


def test_rule_thresholds_are_checked():
    with pytest.raises(ValueError, match="phash_bits"):
        DuplicateRule(phash_bits=65)
    with pytest.raises(ValueError, match="cosine"):
        DuplicateRule(cosine=1.5)
