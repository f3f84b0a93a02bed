"""majority_vote: plain and weighted counts, deterministic tie-break, unknown threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from index import Vote, majority_vote
from similarity.vote import vote_labels


def test_plain_majority():
    vote = majority_vote(["cat", "dog", "dog", "cat", "dog"], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert vote == Vote("dog", {"cat": 2, "dog": 3}, 0.6, False)


def test_tie_goes_to_the_class_whose_best_neighbor_ranks_highest():
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



def reference_label(labels: list[str], sims: list[float], weighted: bool) -> str:
    """The API's rule spelled out one neighbor at a time (the oracle for the vectorised vote)."""
    votes: dict[str, float] = {}
    for label, sim in zip(labels, sims):
        votes[label] = votes.get(label, 0.0) + ((1.0 + min(max(sim, -1.0), 1.0)) / 2.0 if weighted else 1.0)
    top = max(votes.values())
    tied = [label for label, v in votes.items() if math.isclose(v, top, rel_tol=1e-9, abs_tol=1e-12)]
    return min(tied, key=labels.index)


def random_neighbors(seed: int, nq: int = 3000, k: int = 7, num_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(nq, k) int labels and float32 cosines. A third of the rows draw cosines from a few values, so equal
    vote totals (ties) are common, including all-zero weights (cosine -1); a third add noise far below the
    tie tolerance to those; a third are uniform."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, (nq, k))
    sims = rng.choice([-1.0, -0.2, 0.2, 0.6, 1.0], size=(nq, k))
    third = nq // 3
    sims[third:2 * third] += rng.normal(scale=1e-12, size=(third, k))
    sims[2 * third:] = rng.uniform(-1, 1, size=(nq - 2 * third, k))
    return labels, sims.astype(np.float32)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [1, 4, 7])
def test_vectorised_vote_equals_majority_vote_row_by_row(weighted, k):
    """vote_labels (the report's and training validation's kNN prediction) is majority_vote on every row."""
    labels, sims = random_neighbors(seed=k)
    labels, sims = labels[:, :k], sims[:, :k]
    predicted = vote_labels(labels, sims, num_classes=4, weighted=weighted)
    names = np.array(["shirt", "coat", "bag", "boot"])
    ties = 0
    for row, (row_labels, row_sims) in enumerate(zip(names[labels].tolist(), sims.tolist())):
        vote = majority_vote(row_labels, row_sims, weighted=weighted)
        assert names[predicted[row]] == vote.label == reference_label(row_labels, row_sims, weighted), row
        top = max(vote.votes.values())
        ties += sum(math.isclose(v, top, rel_tol=1e-9, abs_tol=1e-12) for v in vote.votes.values()) > 1
    assert k == 1 or ties > 100  # the tie-break was exercised


def test_vectorised_vote_checks_its_inputs():
    with pytest.raises(ValueError, match="lie in"):
        vote_labels(np.array([[0, 3]]), num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        vote_labels(np.array([[0, 1]]), np.array([0.5]), num_classes=2)
    with pytest.raises(ValueError, match="needs similarities"):
        vote_labels(np.array([[0, 1]]), num_classes=2, weighted=True)
