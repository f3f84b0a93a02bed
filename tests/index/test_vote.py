"""majority_vote: plain and weighted counts, deterministic tie-break, unknown threshold."""

from __future__ import annotations

import numpy as np
import pytest

from index import Vote, majority_vote


def test_plain_majority():
    vote = majority_vote(["cat", "dog", "dog", "cat", "dog"], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert vote == Vote("dog", {"cat": 2, "dog": 3}, 0.6, False)


def test_tie_goes_to_the_class_whose_best_neighbour_ranks_highest():
    assert majority_vote(["a", "b", "b", "a"], [0.9, 0.8, 0.7, 0.6]).label == "a"
    assert majority_vote(["b", "a", "a", "b"], [0.9, 0.8, 0.7, 0.6]).label == "b"
    # deterministic: same input, same answer, whatever the dict order of the classes
    results = {majority_vote(["x", "y", "z"], np.array([0.5, 0.5, 0.5])).label for _ in range(20)}
    assert results == {"x"}


def test_weighted_vote_can_overturn_plain_count():
    labels, sims = ["shirt", "coat", "coat"], [0.95, -0.6, -0.6]
    assert majority_vote(labels, sims).label == "coat"
    weighted = majority_vote(labels, sims, weighted=True)
    assert weighted.label == "shirt"
    assert weighted.votes == pytest.approx({"shirt": 0.975, "coat": 0.4})
    assert weighted.confidence == pytest.approx(0.975 / 1.375)


def test_unknown_threshold():
    vote = majority_vote(["bag", "bag", "shoe"], [0.41, 0.30, 0.2], unknown_below=0.5)
    assert vote.is_unknown and vote.label == "bag"
    assert not majority_vote(["bag", "bag"], [0.61, 0.3], unknown_below=0.5).is_unknown


def test_empty_and_invalid():
    assert majority_vote([], []) == Vote(None, {}, 0.0, True)
    with pytest.raises(ValueError, match="equal length"):
        majority_vote(["a", "b"], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        majority_vote(["a"], [float("nan")])
