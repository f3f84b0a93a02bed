"""Chunked retrieval metrics: known answers, and agreement with pytorch-metric-learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from report_synthetic import clustered, normalise
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from report.classification import class_confusion, most_confused_pairs, per_class_accuracy
from similarity.metrics import (QueryScores, _rank_scores, recall_at_k, retrieval_metrics, retrieval_summary,
                                score_queries)
from similarity.vote import majority_vote

PML = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


def pml(query, query_labels, gallery=None, gallery_labels=None) -> dict[str, float]:
    calculator = AccuracyCalculator(include=PML, k="max_bin_count", device=torch.device("cpu"))
    if gallery is None:
        result = calculator.get_accuracy(torch.from_numpy(query), torch.from_numpy(query_labels))
    else:
        result = calculator.get_accuracy(torch.from_numpy(query), torch.from_numpy(query_labels),
                                         torch.from_numpy(gallery), torch.from_numpy(gallery_labels))
    return {name: float(result[name]) for name in PML}


def summary(query, query_labels, gallery=None, gallery_labels=None, *, k=5, chunk_elements=1 << 25):
    scores = score_queries(query, query_labels, gallery, gallery_labels, keep=max(k, 10),
                           chunk_elements=chunk_elements)
    labels = query_labels if gallery_labels is None else gallery_labels
    num_classes = int(max(query_labels.max(), labels.max())) + 1
    return retrieval_summary(scores, query_labels, labels, k=k, recall_at=(1, 5, 10), num_classes=num_classes)


def brute_force_knn_accuracy(query, query_labels, gallery, gallery_labels, *, k, weighted) -> float:
    """The API's vote (majority_vote) on each query's k most similar items from a full similarity matrix."""
    leave_one_out = gallery is None
    if leave_one_out:
        gallery, gallery_labels = query, query_labels
    sims = query.astype(np.float64) @ gallery.T.astype(np.float64)
    if leave_one_out:
        np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    right = [majority_vote(gallery_labels[row].tolist(), sims[i, row], weighted=weighted).label == query_labels[i]
             for i, row in enumerate(order)]
    return float(np.mean(right))


def test_rank_scores_by_hand():
    # R = 2, ranking right, wrong, right: AP@R = (1/1 + 0) / 2; R-precision = 1/2; P@1 = 1
    # R = 3, ranking wrong, right, right: AP@R = (0 + 1/2 + 2/3) / 3; R-precision = 2/3; P@1 = 0
    matches = np.array([[True, False, True], [False, True, True]])
    p1, rp, ap = _rank_scores(matches, np.array([2, 3]))
    np.testing.assert_allclose(p1, [1, 0])
    np.testing.assert_allclose(rp, [0.5, 2 / 3])
    np.testing.assert_allclose(ap, [0.5, (0.5 + 2 / 3) / 3])


def test_recall_at_k_by_hand():
    neighbors = np.array([[1, 0, 2], [2, 2, 2], [0, 0, 1]])
    assert recall_at_k(neighbors, np.array([0, 0, 1]), 1) == 0.0
    assert recall_at_k(neighbors, np.array([0, 0, 1]), 2) == pytest.approx(1 / 3)
    assert recall_at_k(neighbors, np.array([0, 0, 1]), 3) == pytest.approx(2 / 3)


def test_perfect_clusters_score_one():
    gallery, gallery_labels = clustered(200, 4, 16, noise=0.01, seed=1)
    query, query_labels = clustered(80, 4, 16, noise=0.01, seed=2)
    metrics, predicted = summary(query, query_labels, gallery, gallery_labels)
    for name in (*PML, "recall@1", "recall@5", "knn_accuracy@5", "weighted_knn_accuracy@5"):
        assert metrics[name] == pytest.approx(1.0), name
    np.testing.assert_array_equal(predicted, query_labels)


def test_random_embeddings_near_chance():
    rng = np.random.default_rng(3)
    gallery, query = normalise(rng.normal(size=(2000, 32))), normalise(rng.normal(size=(1000, 32)))
    gallery_labels, query_labels = rng.integers(0, 4, 2000), rng.integers(0, 4, 1000)
    metrics, _ = summary(query, query_labels, gallery, gallery_labels)
    assert metrics["precision_at_1"] == pytest.approx(0.25, abs=0.05)
    assert metrics["knn_accuracy@5"] == pytest.approx(0.25, abs=0.06)
    assert metrics["mean_average_precision_at_r"] < 0.15


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_agrees_with_pml_accuracy_calculator(leave_one_out):
    # unequal class sizes, noisy clusters, and (held-out) a query class absent from the gallery
    gallery, gallery_labels = clustered(300, 5, 12, noise=1.2, seed=4)
    keep = gallery_labels != 4
    gallery, gallery_labels = gallery[keep | (np.arange(300) % 3 == 0)], gallery_labels[keep | (np.arange(300) % 3 == 0)]
    query, query_labels = clustered(120, 6, 12, noise=1.2, seed=5)  # class 5 has no gallery item
    if leave_one_out:
        query, query_labels, gallery, gallery_labels = gallery, gallery_labels, None, None
    ours, _ = summary(query, query_labels, gallery, gallery_labels, chunk_elements=997)
    theirs = pml(query, query_labels, gallery, gallery_labels)
    for name in PML:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-9), name
    assert ours["recall@1"] == pytest.approx(ours["precision_at_1"])
    for weighted, name in ((False, "knn_accuracy@5"), (True, "weighted_knn_accuracy@5")):
        assert ours[name] == pytest.approx(brute_force_knn_accuracy(query, query_labels, gallery, gallery_labels,
                                                                    k=5, weighted=weighted)), name
    assert ours["queries_without_relevant"] == (0 if leave_one_out else (query_labels == 5).sum())


def test_chunking_does_not_change_results():
    gallery, gallery_labels = clustered(500, 5, 16, noise=1.0, seed=6)
    query, query_labels = clustered(150, 5, 16, noise=1.0, seed=7)
    whole = score_queries(query, query_labels, gallery, gallery_labels, keep=10)
    tiny = score_queries(query, query_labels, gallery, gallery_labels, keep=10, chunk_elements=1)
    np.testing.assert_allclose(whole.similarities, tiny.similarities, atol=1e-6)  # BLAS blocking differs
    for field in ("indices", "relevant", "precision_at_1", "r_precision", "average_precision_at_r"):
        np.testing.assert_array_equal(getattr(whole, field), getattr(tiny, field), err_msg=field)


def test_one_swapped_class_shows_in_per_class_accuracy_and_confusion():
    gallery, gallery_labels = clustered(200, 4, 16, noise=0.01, seed=8)
    query, query_labels = clustered(80, 4, 16, noise=0.01, seed=9)
    query_labels = np.where(query_labels == 3, 2, query_labels)  # class-3 queries mislabelled as class 2
    _, predicted = summary(query, query_labels, gallery, gallery_labels)
    confusion = class_confusion(query_labels, predicted, 4)
    expected = np.diag([20, 20, 20, 0])
    expected[2, 3] = 20
    np.testing.assert_array_equal(confusion, expected)
    np.testing.assert_allclose(per_class_accuracy(confusion), [1, 1, 0.5, np.nan])
    pairs = most_confused_pairs(confusion, ["a", "b", "c", "d"], top=5)
    assert pairs == [{"true": 2, "predicted": 3, "true_name": "c", "predicted_name": "d", "count": 20,
                      "share_of_true": 0.5}]


@pytest.mark.parametrize("seed", [0, 1])
def test_knn_vote_is_the_apis_majority_vote(seed):
    """The report's plain and weighted kNN predictions are majority_vote's label, row by row, ties included."""
    rng = np.random.default_rng(seed)
    nq, m, k = 2000, 8, 6
    gallery_labels = rng.integers(0, 3, 50)
    indices = rng.integers(0, 50, (nq, m))
    similarities = rng.choice([-1.0, -0.2, 0.2, 0.6, 1.0], size=(nq, m)).astype(np.float32)  # many ties
    query_labels = rng.integers(0, 3, nq)
    nan = np.full(nq, np.nan)
    scores = QueryScores(indices, similarities, np.zeros(nq, dtype=np.int64), nan, nan, nan)
    metrics, predicted = retrieval_summary(scores, query_labels, gallery_labels, k=k, recall_at=(1,), num_classes=3)
    neighbor_labels = gallery_labels[indices[:, :k]].tolist()
    plain = [majority_vote(labels, sims).label for labels, sims in zip(neighbor_labels, similarities[:, :k])]
    weighted = [majority_vote(labels, sims, weighted=True).label
                for labels, sims in zip(neighbor_labels, similarities[:, :k])]
    np.testing.assert_array_equal(predicted, plain)
    assert metrics["knn_accuracy@6"] == np.mean(np.array(plain) == query_labels)
    assert metrics["weighted_knn_accuracy@6"] == np.mean(np.array(weighted) == query_labels)
    assert np.mean(np.array(plain) != np.array(weighted)) > 0.05  # the weights mattered


def test_retrieval_metrics_is_score_queries_and_summary():
    """What training validation reports is the report's numbers, leave-one-out and with a gallery."""
    gallery, gallery_labels = clustered(200, 4, 16, noise=1.0, seed=10)
    query, query_labels = clustered(60, 4, 16, noise=1.0, seed=11)
    assert retrieval_metrics(query, query_labels, gallery, gallery_labels, k=5) == summary(
        query, query_labels, gallery, gallery_labels)[0]
    assert retrieval_metrics(gallery, gallery_labels, k=5) == summary(gallery, gallery_labels)[0]
