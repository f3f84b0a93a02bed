"""check_flips: drawn, handwritten and photographed digits change class when mirrored; garments, photos and
randomly mirrored digits do not; noise is inconclusive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from similarity.data import DatasetError, LabelledImages, load_fashion_mnist, load_labelled_images
from similarity.flips import FlipCheck, check_flips
from tests.digits import draw_digits, photo_digits

TRASHNET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "trashnet-150"


def randomly_mirrored(data: LabelledImages, *, seed: int = 0) -> LabelledImages:
    """The same images, each mirrored with probability 1/2: in this set a mirror image is the same class."""
    flip = np.random.default_rng(seed).random(len(data)) < 0.5
    flip = flip.reshape((-1,) + (1,) * (data.pixels.ndim - 1))  # grayscale (N, H, W) or colour (N, H, W, 3)
    pixels = np.where(flip, data.pixels[:, :, ::-1], data.pixels)
    return LabelledImages(labels=data.labels, class_names=data.class_names, ids=data.ids, pixels=pixels,
                          source="randomly-mirrored")


def sklearn_digits() -> LabelledImages:
    """scikit-learn's bundled handwritten digits (8x8, values 0-16) as uint8 0-255, offline."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    return LabelledImages(labels=bunch.target, class_names=[str(d) for d in range(10)],
                          ids=[f"sklearn/{i:04d}" for i in range(len(pixels))], pixels=pixels,
                          source="sklearn-digits")


@pytest.fixture(scope="module")
def digits() -> LabelledImages:
    return draw_digits(60, seed=0)


@pytest.fixture(scope="module")
def photos() -> LabelledImages:
    return photo_digits(60, seed=0)


def test_drawn_digits_change_class_when_mirrored(digits):
    check = check_flips(digits)
    assert not check.preserves_class, check.reason
    assert not check.inconclusive and check.signal > check.min_signal + 0.1
    assert check.retained < check.min_retained - 0.15  # a clear margin, not a near miss
    assert check.reason.startswith("flips change the class")


def test_randomly_mirrored_digits_keep_class(digits):
    check = check_flips(randomly_mirrored(digits))
    assert check.preserves_class, check.reason
    assert not check.inconclusive
    assert check.retained > check.min_retained
    assert check.reason.startswith("flips keep the class")


def test_photographed_digits_change_class_when_mirrored(photos):
    # Raw pixels hardly tell house-number crops apart (any colour on any background); gradient histograms do.
    check = check_flips(photos)
    assert not check.preserves_class, check.reason
    assert check.representation == "hog"
    assert not check.inconclusive and check.signal > check.min_signal + 0.1
    assert check.retained < check.min_retained - 0.15
    assert check.reason.startswith("flips change the class") and "HOG" in check.reason


def test_randomly_mirrored_photographed_digits_keep_class(photos):
    check = check_flips(randomly_mirrored(photos))
    assert check.preserves_class, check.reason
    assert check.representation == "hog"
    assert not check.inconclusive
    assert check.retained > check.min_retained + 0.1


def test_handwritten_digits_change_class_when_mirrored():
    check = check_flips(sklearn_digits())
    assert not check.preserves_class, check.reason
    assert check.retained < check.min_retained - 0.15


def test_fashion_mnist_keeps_class():
    try:
        data = load_fashion_mnist(None, "test")
    except DatasetError as exc:
        pytest.skip(str(exc))
    check = check_flips(data)  # its shoes all face left, yet flips help there
    assert check.preserves_class, check.reason
    assert not check.inconclusive
    assert check.retained > check.min_retained + 0.1


@pytest.mark.skipif(not TRASHNET.is_dir(), reason=f"{TRASHNET} not present")
def test_photos_keep_flips():
    check = check_flips(load_labelled_images(TRASHNET, verify=False), sample=300)
    assert check.preserves_class, check.reason


def test_same_seed_same_result(digits):
    first, second = check_flips(digits, seed=3), check_flips(digits, seed=3)
    assert first == second
    assert isinstance(first, FlipCheck)
    assert first.sampled == len(digits)


def test_noise_is_inconclusive_and_keeps_flips():
    rng = np.random.default_rng(0)
    noise = LabelledImages(labels=rng.integers(0, 5, 400), class_names=[str(c) for c in range(5)],
                           ids=[f"noise/{i}" for i in range(400)],
                           pixels=rng.integers(0, 256, (400, 28, 28), dtype=np.uint8), source="noise")
    check = check_flips(noise)
    assert check.preserves_class
    assert check.inconclusive
    assert "inconclusive" in check.reason


def test_unreadable_images_are_skipped(tmp_path, digits):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(6):
            index = i if name == "a" else 300 + i  # digit 0 and digit 5
            digits.load(index).save(tmp_path / name / f"{i}.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    data = load_labelled_images(tmp_path, verify=False)
    check = check_flips(data)
    assert check.sampled == 12


def test_one_class_is_an_error(digits):
    with pytest.raises(ValueError, match="two classes"):
        check_flips(digits.subset(np.flatnonzero(digits.labels == 3)))
