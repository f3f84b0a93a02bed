"""Retrieval and kNN-classification metrics on embeddings. Pure functions: arrays in, numbers out.

Embeddings are L2-normalised float32 arrays, so cosine similarity is a dot product. Work is chunked
over queries, so 100k+ galleries fit in memory.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

PML_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


def top_k_neighbours(query: np.ndarray, gallery: np.ndarray, k: int, *, exclude_self: bool = False,
                     chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k. query: (nq, d), gallery: (ng, d), both normalised float32.

    Returns (similarities (nq, k) float32, indices (nq, k) int64), best first. With ``exclude_self``
    (query set == gallery set) each query's own row is skipped.
    """
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    g = torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32))
    k = min(k, len(gallery) - (1 if exclude_self else 0))
    if k < 1:
        raise ValueError("gallery too small for a kNN search")
    sims_out, idx_out = [], []
    with torch.inference_mode():
        for start in range(0, len(q), chunk):
            sims = q[start:start + chunk] @ g.T
            if exclude_self:
                rows = torch.arange(sims.shape[0])
                sims[rows, rows + start] = -float("inf")
            values, indices = sims.topk(k, dim=1)
            sims_out.append(values.numpy())
            idx_out.append(indices.numpy())
    return np.concatenate(sims_out), np.concatenate(idx_out).astype(np.int64)


def vote(neighbour_labels: np.ndarray, neighbour_sims: np.ndarray | None = None, *,
         num_classes: int) -> np.ndarray:
    """Majority vote over each row of neighbour labels (nq, k) -> predicted labels (nq,).

    With ``neighbour_sims`` the votes are similarity-weighted. Ties go to the tied class whose best
    neighbour ranks highest (nearest first), so results are deterministic.
    """
    nq, k = neighbour_labels.shape
    weights = np.ones((nq, k)) if neighbour_sims is None else np.asarray(neighbour_sims, dtype=np.float64)
    scores = np.zeros((nq, num_classes))
    np.add.at(scores, (np.repeat(np.arange(nq), k), neighbour_labels.ravel()), weights.ravel())
    best = scores.max(axis=1, keepdims=True)
    tied = np.isclose(scores, best)
    # rank of each class's first appearance among the neighbours (k if absent)
    first_rank = np.full((nq, num_classes), k)
    for rank in range(k - 1, -1, -1):
        first_rank[np.arange(nq), neighbour_labels[:, rank]] = rank
    first_rank = np.where(tied, first_rank, k + 1)
    return first_rank.argmin(axis=1)


def knn_accuracy(query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray,
                 gallery_labels: np.ndarray, *, k: int = 10, weighted: bool = False,
                 exclude_self: bool = False) -> float:
    """Accuracy of the k-nearest-neighbour majority vote (fraction in [0, 1])."""
    sims, idx = top_k_neighbours(query, gallery, k, exclude_self=exclude_self)
    num_classes = int(max(gallery_labels.max(), query_labels.max())) + 1
    predicted = vote(gallery_labels[idx], sims if weighted else None, num_classes=num_classes)
    return float((predicted == query_labels).mean())


def retrieval_metrics(query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray | None = None,
                      gallery_labels: np.ndarray | None = None, *, k: int = 10,
                      include: tuple[str, ...] = PML_METRICS) -> dict[str, float]:
    """precision@1, R-precision and MAP@R (pytorch-metric-learning's AccuracyCalculator) plus kNN
    majority-vote accuracy at ``k`` (plain and similarity-weighted).

    With ``gallery`` None the query set is searched against itself, leaving each query out.
    """
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    same_set = gallery is None
    if same_set:
        gallery, gallery_labels = query, query_labels
    assert gallery is not None and gallery_labels is not None
    calculator = AccuracyCalculator(include=include, k="max_bin_count", device=torch.device("cpu"))
    results = calculator.get_accuracy(
        torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)), torch.from_numpy(np.asarray(query_labels)),
        torch.from_numpy(np.ascontiguousarray(gallery, dtype=np.float32)), torch.from_numpy(np.asarray(gallery_labels)),
        ref_includes_query=same_set,
    )
    out = {name: float(results[name]) for name in include}
    out[f"knn_accuracy@{k}"] = knn_accuracy(query, query_labels, gallery, gallery_labels, k=k,
                                            exclude_self=same_set)
    out[f"weighted_knn_accuracy@{k}"] = knn_accuracy(query, query_labels, gallery, gallery_labels, k=k,
                                                     weighted=True, exclude_self=same_set)
    return out
