"""The duplicate judge, tier by tier, and local verification, on real TrashNet photos and Fashion-MNIST PNGs: a
crop of a photo verifies, two different photos of one class do not; an unreadable file counts only at the cosine
identical pixels give."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from similarity.hygiene import IDENTICAL_COSINE, DuplicateRule
from similarity.imageio import open_image
from engine.duplicate_rule import DENSE_MIN_CORRELATION
from similarity.judge import ImageSignals, Pair, SignalCache, judge, judge_candidates, same_pixels
from similarity.verify import align_thumbnail, aligned_correlation, count_inliers, features_of, working_gray

TRASHNET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "trashnet-150"
RULE = DuplicateRule()


def _roundtrip(image: Image.Image, fmt: str, **options) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return open_image(buffer.getvalue())


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    """Three real TrashNet-150 photos of one class."""
    if not TRASHNET.is_dir():
        pytest.skip(f"TrashNet-150 is not at {TRASHNET}")
    return [open_image(p) for p in sorted((TRASHNET / "glass").iterdir())[:3]]


def _cropped_copy(photo: Image.Image) -> Image.Image:
    """8% off the left and top, 5% off the others, resized x0.7, darker, JPEG q50."""
    w, h = photo.size
    out = photo.crop((round(0.08 * w), round(0.08 * h), round(0.95 * w), round(0.95 * h)))
    out = ImageEnhance.Brightness(out.resize((round(out.width * 0.7), round(out.height * 0.7)))).enhance(0.9)
    return _roundtrip(out, "JPEG", quality=50)


def test_a_crop_of_a_photo_verifies_and_another_photo_does_not(photos):
    original, other, third = photos
    copy = _cropped_copy(original)
    found = count_inliers(features_of(original), features_of(copy))
    assert found >= RULE.min_inliers
    assert count_inliers(features_of(original), features_of(other)) < RULE.min_inliers
    assert count_inliers(features_of(other), features_of(third)) < RULE.min_inliers
    verdict = judge(Pair(ImageSignals.of_image(original), ImageSignals.of_image(copy), 0.995))
    assert verdict.kind == "verified" and verdict.confirmed and verdict.inliers == found
    assert verdict.phash_bits > RULE.phash_bits and not verdict.exact and verdict.readable


def test_a_mirrored_crop_verifies_through_the_mirror_image_only_when_flips_are_allowed(photos):
    original = ImageSignals.of_image(photos[0])
    flipped = ImageSignals.of_image(ImageOps.mirror(_cropped_copy(photos[0])))
    assert judge(Pair(original, flipped, 0.995)).kind == "verified"
    no_flips = judge(Pair(original, flipped, 0.995), DuplicateRule(flips=False))
    assert no_flips.kind is None and no_flips.inliers < RULE.min_inliers


def test_working_size_upscales_tiny_images_and_caps_big_ones(fmnist_folder):
    tiny = working_gray(open_image(fmnist_folder.paths[0]))
    assert tiny.shape == (160, 160) and tiny.dtype == np.uint8
    big = working_gray(Image.new("RGB", (3000, 1000), (90, 10, 200)))
    assert big.shape == (171, 512)


def test_tiers_cheapest_first(fmnist_folder, photos):
    png = ImageSignals(fmnist_folder.paths[0], open_image(fmnist_folder.paths[0]))
    bmp = ImageSignals("copy.bmp", _roundtrip(open_image(fmnist_folder.paths[0]), "BMP"))
    jpeg = ImageSignals("copy.jpg", _roundtrip(open_image(fmnist_folder.paths[0]), "JPEG", quality=70))
    other = ImageSignals(fmnist_folder.paths[1], open_image(fmnist_folder.paths[1]))
    exact = judge(Pair(png, bmp, 1.0))
    assert exact.kind == "exact" and exact.exact and exact.phash_bits == 0 and exact.inliers is None
    assert same_pixels(png, bmp) and not same_pixels(png, jpeg) and not same_pixels(png, None)
    hashed = judge(Pair(png, jpeg, 0.999), DuplicateRule(phash_bits=10))  # the JPEG moves a few pHash bits
    assert hashed.kind == "hash" and hashed.confirmed and not hashed.exact and hashed.inliers is None
    assert 0 < hashed.phash_bits <= 10
    below = judge(Pair(png, bmp, 0.98))  # not a candidate: nothing is compared
    assert below.kind is None and below.phash_bits is None
    # an embedding trained for copies: its cosine decides what the pixels do not, unconfirmed unless verified
    copies_model = DuplicateRule(descriptor_cosine=0.995)
    crop = ImageSignals.of_image(_cropped_copy(photos[0]))
    original, distinct = ImageSignals.of_image(photos[0]), ImageSignals.of_image(photos[1])
    descriptor = judge(Pair(original, distinct, 0.997), copies_model)
    assert descriptor.kind == "descriptor" and not descriptor.confirmed and descriptor.inliers is None
    assert judge(Pair(original, distinct, 0.997), copies_model, confirm=True).kind == "descriptor"
    assert judge(Pair(original, crop, 0.997), copies_model, confirm=True).kind == "verified"
    assert judge(Pair(original, distinct, 0.993), copies_model).kind is None  # in the band: verified, and not
    assert judge(Pair(original, crop, 0.993), DuplicateRule(min_inliers=None)).kind is None  # no verification


def test_an_unreadable_file_counts_only_at_the_identical_cosine(fmnist_folder, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cache = SignalCache()
    bad, good = cache.get(str(broken)), cache.get(fmnist_folder.paths[0])
    assert not bad.readable and "broken.png" in bad.error and cache.get(str(broken)) is bad and len(cache) == 2
    for cosine, kind in ((0.9995, None), (IDENTICAL_COSINE, "cosine-only"), (1.0, "cosine-only")):
        verdict = judge(Pair(good, bad, cosine))
        assert verdict.kind == kind and not verdict.confirmed and verdict.readable is False
        assert verdict.phash_bits is None and verdict.inliers is None
    assert judge(Pair(None, None, 0.9995)).kind is None  # pixels not examined: the same rule
    assert judge(Pair(None, None, 1.0)).readable is None
    assert judge(Pair(good, bad, 0.9995), DuplicateRule(descriptor_cosine=0.999)).kind == "descriptor"


def test_images_below_the_size_gate_are_not_verified(fmnist_folder):
    """A 28-px garment and its 2-px crop: verified only once the rule lets 28-px images through the size gate."""
    image = open_image(fmnist_folder.paths[3])
    original = ImageSignals.of_image(image)
    crop = ImageSignals.of_image(image.crop((2, 2, 27, 27)).resize((28, 28)))
    assert original.short_side == 28 and crop.short_side == 28
    gated = judge(Pair(original, crop, 0.999))
    assert gated.kind is None and gated.inliers is None  # not verified: nothing computed
    opened = judge(Pair(original, crop, 0.999), DuplicateRule(verify_min_side=28))
    assert opened.inliers is not None


def test_rule_validation():
    for bad, match in (({"min_inliers": 2}, "min_inliers"), ({"descriptor_cosine": 0.5}, "descriptor_cosine"),
                       ({"ratio": 1.0}, "ratio"), ({"verify_min_side": 0}, "verify_min_side"),
                       ({"min_correlation": -1.0}, "min_correlation"), ({"min_correlation": 1.5}, "min_correlation"),
                       ({"dense_ratio": 0.5}, "dense_ratio")):
        with pytest.raises(ValueError, match=match):
            DuplicateRule(**bad)
    assert DuplicateRule(min_inliers=None).min_inliers is None
    with pytest.raises(ValueError, match="finite"):
        judge(Pair(None, None, float("nan")))


def _small_copy(image: Image.Image) -> Image.Image:
    """A 28-px garment cropped by 2-3 px a side, shrunk to 24 px, darkened and re-saved as JPEG q80."""
    out = image.crop((2, 3, 26, 25)).resize((24, 22), Image.Resampling.LANCZOS)
    return _roundtrip(ImageEnhance.Brightness(out).enhance(0.9), "JPEG", quality=80)


@pytest.fixture(scope="module")
def garments(fmnist_folder) -> tuple[list[Image.Image], np.ndarray]:
    """200 fixture garments and, for each, the others ranked by pixel correlation (nearest first)."""
    images = [open_image(p) for p in fmnist_folder.paths[:200]]
    pixels = np.stack([np.asarray(im.convert("L"), np.float32).ravel() for im in images])
    pixels -= pixels.mean(1, keepdims=True)
    pixels /= np.linalg.norm(pixels, axis=1, keepdims=True)
    similar = pixels @ pixels.T
    np.fill_diagonal(similar, -2)
    return images, np.argsort(-similar, axis=1)


def test_small_images_are_verified_densely_among_their_candidates(garments):
    """Dense alignment, with the ratio test over a query's candidates, confirms edited copies of 28-px garments
    among their nearest distinct garments, and confirms none of a distinct garment's nearest."""
    images, nearest = garments
    rule = DuplicateRule(cosine=0.5, min_correlation=DENSE_MIN_CORRELATION)  # a copy descriptor's candidates
    found = matched_other = flagged = 0
    for i in range(20):
        copy = ImageSignals.of_image(_small_copy(images[i]))
        candidates = [i, *nearest[i, :4].tolist()]
        verdicts = judge_candidates([Pair(copy, ImageSignals.of_image(images[j]), 0.8) for j in candidates], rule)
        assert all(v.inliers is None for v in verdicts)
        found += verdicts[0].kind == "verified"
        matched_other += any(v.duplicate for v in verdicts[1:])
        if verdicts[0].kind == "verified":
            assert verdicts[0].correlation >= DENSE_MIN_CORRELATION and verdicts[0].confirmed
        outsider = ImageSignals.of_image(images[i])  # not a copy of its nearest garments
        others = [Pair(outsider, ImageSignals.of_image(images[j]), 0.8) for j in nearest[i, :5].tolist()]
        flagged += any(v.duplicate for v in judge_candidates(others, rule))
    assert found >= 10 and matched_other == 0 and flagged <= 1  # 12 of 20 here: the nearest in pixels are hard
    # no dense tier without min_correlation, nor in judge() alone
    pair = Pair(ImageSignals.of_image(_small_copy(images[0])), ImageSignals.of_image(images[0]), 0.8)
    assert judge(pair, rule).kind is None and judge(pair, rule).correlation is None
    off = judge_candidates([pair], replace(rule, min_correlation=None))
    assert off[0].kind is None and off[0].correlation is None


def test_the_ratio_test_refuses_a_query_that_aligns_with_two_candidates_alike(garments):
    images, _ = garments
    rule = DuplicateRule(cosine=0.5, min_correlation=DENSE_MIN_CORRELATION)
    mirrors = [aligned_correlation(align_thumbnail(np.asarray(im.convert("L"))),
                                   align_thumbnail(np.asarray(ImageOps.mirror(im).convert("L")))) for im in images]
    original = images[int(np.argmin(mirrors))]  # the least symmetric garment
    copy = ImageSignals.of_image(_small_copy(original))
    alone = judge_candidates([Pair(copy, ImageSignals.of_image(original), 0.8)], rule)
    assert alone[0].kind == "verified"
    # the same garment indexed twice (a lossy re-save): the copy aligns with both, so neither stands out
    twice = [Pair(copy, ImageSignals.of_image(original), 0.8),
             Pair(copy, ImageSignals.of_image(_roundtrip(original, "JPEG", quality=95)), 0.8)]
    verdicts = judge_candidates(twice, rule)
    assert [v.kind for v in verdicts] == [None, None]
    assert all(v.correlation >= DENSE_MIN_CORRELATION for v in verdicts)
    # a mirrored copy: through the mirror image only when the rule allows flips
    mirrored = ImageSignals.of_image(ImageOps.mirror(_small_copy(original)))
    assert judge_candidates([Pair(mirrored, ImageSignals.of_image(original), 0.8)], rule)[0].kind == "verified"
    assert judge_candidates([Pair(mirrored, ImageSignals.of_image(original), 0.8)],
                            replace(rule, flips=False))[0].kind is None
    # a query another tier has matched is left alone
    exact = ImageSignals.of_image(original)
    verdicts = judge_candidates([Pair(exact, ImageSignals.of_image(original), 0.9),
                                 Pair(exact, ImageSignals.of_image(images[4]), 0.8)], rule)
    assert verdicts[0].kind == "exact" and verdicts[1].kind is None and verdicts[1].correlation is None


def test_dense_alignment_refuses_implausible_warps():
    rng = np.random.default_rng(0)
    texture = align_thumbnail((rng.random((28, 28)) * 255).astype(np.uint8))
    assert aligned_correlation(texture, texture) == pytest.approx(1.0, abs=1e-4)
    assert aligned_correlation(texture, align_thumbnail(np.full((28, 28), 128, np.uint8))) == -1.0  # nothing to align
    rotated = np.ascontiguousarray(np.rot90(texture))
    assert aligned_correlation(texture, rotated) < 0.5  # a quarter turn is no crop or resize
