"""The descriptor-alone cosine follows the index: its calibrated cosine (the 99th percentile of its items' cosines to
their nearest other item) keeps the share of outside images matched on the descriptor alone near 1% however many
items the index holds, where a fixed cosine flags ever more of them."""

from __future__ import annotations

import numpy as np
import pytest

from engine.duplicate_rule import (CALIBRATION_QUANTILE, CANDIDATE_COSINE, DEFAULT_DESCRIPTOR_COSINE,
                                   RECALIBRATE_CHANGE, CalibrationCache, MatrixSpace, calibrate)
from index import IndexConfig, IndexStore
from similarity.hygiene import IDENTICAL_COSINE, DuplicateRule
from tests.index.conftest import model_info


def rule_for_copies() -> DuplicateRule:
    """A copy descriptor's rule with the default cosines (what engine.duplicate_rule.rule_for gives it)."""
    return DuplicateRule(cosine=CANDIDATE_COSINE, descriptor_cosine=DEFAULT_DESCRIPTOR_COSINE)


def _cloud(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float = 0.2) -> np.ndarray:
    """``n`` unit vectors scattered around ``centres``: many items alike, none a copy of another."""
    x = centres[rng.integers(len(centres), size=n)] + spread * rng.normal(size=(n, centres.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _centres(rng: np.random.Generator, k: int = 20, dim: int = 32) -> np.ndarray:
    centres = rng.normal(size=(k, dim))
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def test_the_calibration_is_the_quantile_of_each_items_nearest_other_item():
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(500, 16)).astype(np.float32)
    xb[11] = xb[10]  # an identical twin: the exact tier's, left out of the calibration
    found = calibrate(MatrixSpace(xb))
    unit = xb / np.linalg.norm(xb, axis=1, keepdims=True)
    cosines = unit @ unit.T
    np.fill_diagonal(cosines, -np.inf)
    nearest = cosines.max(axis=1)
    alike = nearest >= IDENTICAL_COSINE
    assert alike.sum() == 2 and found.copies == 2 and found.sampled == 498 and found.items == 500
    assert found.quantile == CALIBRATION_QUANTILE
    assert found.cosine == pytest.approx(np.quantile(nearest[~alike], CALIBRATION_QUANTILE, method="higher"), abs=1e-5)
    assert calibrate(MatrixSpace(xb[:1])) is None  # one item has no nearest other


def test_copies_the_pixels_confirm_are_left_out(tmp_path):
    """A collection's own copies (here ten pairs of the same picture saved twice) are not the distinct images the
    calibration is about: with the rule, their pairs are judged on their pixels and left out."""
    from PIL import Image

    rng = np.random.default_rng(3)
    xb = rng.normal(size=(200, 16)).astype(np.float32)
    xb[1:20:2] = xb[0:20:2] + 0.05 * rng.normal(size=(10, 16)).astype(np.float32)  # ten near pairs
    paths = []
    for i in range(200):
        picture = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) if i >= 20 or i % 2 == 0 else None
        path = tmp_path / f"{i}.png"
        if picture is None:  # the odd member of a pair: its partner's picture again
            path.write_bytes((tmp_path / f"{i - 1}.png").read_bytes())
        else:
            Image.fromarray(picture).save(path)
        paths.append(str(path))
    space = MatrixSpace(xb, paths)
    rule = rule_for_copies()
    blind = calibrate(space)
    seen = calibrate(space, rule)
    assert blind.cosine > 0.98 and blind.copies == 0  # the pairs fill the top 1% of nearest cosines
    assert seen.copies == 20 and seen.sampled == 180 and seen.cosine < 0.9
    others = calibrate(MatrixSpace(xb[20:]))
    assert seen.cosine == pytest.approx(others.cosine, abs=0.05)  # about what the distinct pictures alone give


def test_the_share_of_outside_images_matched_stays_near_one_percent_as_the_index_grows():
    rng = np.random.default_rng(1)
    centres = _centres(rng)
    fixed, followed = {}, {}
    for n in (1_000, 20_000):
        space = MatrixSpace(_cloud(rng, centres, n))
        outside = _cloud(rng, centres, 2_000)  # drawn like the index, copies of nothing in it
        nearest = np.array([hits[0].similarity for hits in space.search(outside, 1)])
        calibration = calibrate(space)
        fixed[n] = float(np.mean(nearest >= DEFAULT_DESCRIPTOR_COSINE))
        followed[n] = float(np.mean(nearest >= max(DEFAULT_DESCRIPTOR_COSINE, calibration.cosine)))
    assert fixed[20_000] > 0.3 and fixed[20_000] > 3 * fixed[1_000]  # a fixed cosine: ever more false matches
    assert followed[1_000] <= 0.025 and followed[20_000] <= 0.025, followed


def test_a_store_is_measured_again_once_it_has_grown(tmp_path):
    rng = np.random.default_rng(2)
    centres = _centres(rng, dim=16)
    store = IndexStore.create(tmp_path / "idx", 16, config=IndexConfig(index_type="flat"),
                              model_info=model_info(16))
    try:
        def add(n: int) -> None:
            store.add(_cloud(rng, centres, n), labels=["a"] * n, paths=[f"{i}.png" for i in range(n)])

        add(400)
        cache = CalibrationCache(store)
        first = cache.get()
        assert first.items == 400 and first.sampled == 400
        assert first.cosine == pytest.approx(calibrate(store).cosine)  # seeded: the same sample again
        add(int(400 * RECALIBRATE_CHANGE) - 1)  # within the change allowed: kept
        assert cache.get() is first
        add(2)
        again = cache.get()
        assert again.items == len(store) == 400 + int(400 * RECALIBRATE_CHANGE) + 1
    finally:
        store.close()
