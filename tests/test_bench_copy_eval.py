"""The pure helpers of ``bench/dedup_quality.py``: ranking, the false-match threshold, µAP, and the edited copies."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.copy_eval import UNMATCHED, evaluate, false_match_threshold, hamming_table, rates_at, top_k
from bench.copy_sets import FAMILIES, edited_copy
from similarity.copies import micro_average_precision


def test_hamming_table_counts_bits_over_every_word():
    a = np.array([[0, 0], [2**64 - 1, 1]], dtype=np.uint64)
    b = np.array([[0, 3], [1, 0]], dtype=np.uint64)
    assert hamming_table(a, b).tolist() == [[2, 1], [65, 64]]
    with pytest.raises(ValueError):
        hamming_table(a, b[:, :1])


def test_top_k_orders_best_first_and_breaks_ties_by_row():
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]], dtype=np.float32)
    s, rows = top_k(lambda start, stop: scores[start:stop], 2, 4, 3, chunk=1)
    assert rows.tolist() == [[1, 3, 2], [0, 1, 2]]
    assert s[0].tolist() == pytest.approx([0.9, 0.9, 0.5])


def test_threshold_is_the_lowest_with_few_enough_false_matches():
    best = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([True, True, False, True, False])
    assert false_match_threshold(best, correct, max_false=0.0) == 0.8  # 0.7 would admit a false match
    assert false_match_threshold(best, correct, max_false=0.2) == 0.6  # one false match of five allowed
    assert false_match_threshold(best, correct, max_false=0.4) == 0.5
    assert false_match_threshold(np.array([0.9]), np.array([False]), max_false=0.0) == float("inf")


def test_ties_enter_together():
    best = np.array([1.0, 1.0, 0.5])
    correct = np.array([True, False, True])
    assert false_match_threshold(best, correct, max_false=0.0) == float("inf")  # the tie cannot be split


def test_rates_count_unmatched_queries_as_false_matches():
    best = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, False, False, True])
    truth = np.array([0, 1, UNMATCHED, 3])
    assert rates_at(best, correct, truth, 0.65) == {"recall": 0.3333, "false_matches": 0.5, "unmatched_matched": 1.0}
    assert rates_at(best, correct, truth, 0.95)["recall"] == 0.0


def test_micro_ap_is_one_when_every_true_pair_ranks_first_and_ties_are_one_step():
    scores = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert micro_average_precision(scores, np.array([[True, False], [True, False]]), 2) == 1.0
    assert micro_average_precision(scores, np.array([[False, True], [True, False]]), 2) == pytest.approx(
        (1 / 2 + 2 / 4) / 2)
    tied = np.array([[1.0], [1.0]])
    assert micro_average_precision(tied, np.array([[False], [True]]), 1) == 0.5  # either order: precision 1/2
    assert micro_average_precision(tied, np.array([[True], [False]]), 1) == 0.5


def test_evaluate_reports_the_own_and_a_given_threshold():
    scores = np.array([[0.9, 0.2], [0.7, 0.6], [0.8, 0.1]], dtype=np.float32)
    rows = np.array([[0, 1], [2, 1], [1, 0]])
    truth = np.array([0, 1, UNMATCHED])
    out = evaluate(scores, rows, truth, max_false=0.0, threshold=0.5)
    assert out["own_threshold"] == 0.9 and out["at_own_threshold"]["recall"] == 0.5
    assert out["at_threshold"] == {"recall": 0.5, "false_matches": 0.6667, "unmatched_matched": 1.0}
    assert out["copies"] == 2 and 0 < out["micro_ap"] <= 1


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_every_family_makes_a_seeded_copy_in_the_original_mode(mode):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    for family in FAMILIES:
        first = edited_copy(image, family, np.random.default_rng(1))
        again = edited_copy(image, family, np.random.default_rng(1))
        assert first.mode == mode and np.array_equal(np.asarray(first), np.asarray(again)), family
        if family in ("flip", "jpeg", "brightness", "overlay"):
            assert first.size == image.size, family
    crop = edited_copy(image, "crop", np.random.default_rng(2))
    assert 0.8 * 48 <= crop.width <= 48 and 0.8 * 40 <= crop.height <= 40
    with pytest.raises(ValueError):
        edited_copy(image, "rotate", np.random.default_rng(0))
