"""Retrieval and kNN-classification metrics of embeddings, chunked so 100k+ galleries fit in memory.

Pure numpy (no torch): training validation, the report, the benchmarks and the notebook all score
embeddings here. Embeddings are L2-normalised float32 arrays, so cosine similarity is a dot product.

precision@1, R-precision and MAP@R follow pytorch-metric-learning's ``AccuracyCalculator`` exactly
(``k="max_bin_count"``): R is the number of same-class gallery items of a query (itself excluded in
leave-one-out), and queries whose class has no gallery item are left out of these metrics (and of
recall@k, so recall@1 == precision@1). The kNN vote (:func:`similarity.vote.vote_labels`, the API's rule)
counts every query.

PML needs all queries' top max-class-count neighbors at once; here queries are sorted by R and
searched a chunk at a time, each chunk only as deep as its own largest R.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from similarity.vote import vote_labels

log = logging.getLogger(__name__)


def top_k_neighbors(query: np.ndarray, gallery: np.ndarray, k: int, *,
                    chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k. query: (nq, d), gallery: (ng, d), both normalised float32.

    Returns (similarities (nq, min(k, ng)) float32, indices (nq, min(k, ng)) int64), best first; equal
    similarities are ordered by gallery row.
    """
    q = np.ascontiguousarray(query, dtype=np.float32)
    g = np.ascontiguousarray(gallery, dtype=np.float32)
    k = min(k, len(g))
    if k < 1:
        raise ValueError(f"top-{k} search needs k >= 1 and a non-empty gallery ({len(g)} items)")
    sims_out, idx_out = [], []
    for start in range(0, len(q), chunk):
        sims = q[start:start + chunk] @ g.T
        if k < len(g):
            candidates = np.sort(np.argpartition(sims, len(g) - k, axis=1)[:, len(g) - k:], axis=1)
        else:
            candidates = np.broadcast_to(np.arange(len(g)), sims.shape)
        candidate_sims = np.take_along_axis(sims, candidates, axis=1)
        order = np.argsort(-candidate_sims, axis=1, kind="stable")
        sims_out.append(np.take_along_axis(candidate_sims, order, axis=1))
        idx_out.append(np.take_along_axis(candidates, order, axis=1))
    if not sims_out:
        return np.empty((0, k), dtype=np.float32), np.empty((0, k), dtype=np.int64)
    return np.concatenate(sims_out), np.concatenate(idx_out).astype(np.int64)


@dataclass(frozen=True)
class QueryScores:
    """Per-query results of :func:`score_queries`; nq queries, m kept neighbors.

    indices: (nq, m) int64 gallery rows, best first. similarities: (nq, m) float32 cosine.
    relevant: (nq,) int64 R, same-class gallery items. precision_at_1, r_precision,
    average_precision_at_r: (nq,) float64, NaN where R == 0.
    """

    indices: np.ndarray
    similarities: np.ndarray
    relevant: np.ndarray
    precision_at_1: np.ndarray
    r_precision: np.ndarray
    average_precision_at_r: np.ndarray


def score_queries(query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray | None,
                  gallery_labels: np.ndarray | None, *, keep: int = 10, chunk_elements: int = 1 << 25,
                  progress: bool = False) -> QueryScores:
    """Search every query in the gallery and score its ranking.

    query: (nq, d) float32 normalised, query_labels: (nq,) int64; gallery: (ng, d), gallery_labels: (ng,),
    or both None for leave-one-out within ``query``. ``keep`` neighbors are returned per query;
    at most ``chunk_elements`` similarities are held at once.
    """
    leave_one_out = gallery is None
    if leave_one_out:
        gallery, gallery_labels = query, query_labels
    assert gallery is not None and gallery_labels is not None
    query_labels = np.asarray(query_labels, dtype=np.int64)
    gallery_labels = np.asarray(gallery_labels, dtype=np.int64)
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query dim {query.shape[1]} != gallery dim {gallery.shape[1]}")
    nq, ng = len(query), len(gallery)
    self_count = int(leave_one_out)
    keep = min(keep, ng - self_count)
    if keep < 1:
        raise ValueError(f"gallery of {ng} items is too small to search")

    num_classes = int(max(query_labels.max(), gallery_labels.max())) + 1
    relevant = np.bincount(gallery_labels, minlength=num_classes)[query_labels] - self_count
    indices = np.empty((nq, keep), dtype=np.int64)
    similarities = np.empty((nq, keep), dtype=np.float32)
    p_at_1, r_prec, ap_at_r = (np.full(nq, np.nan) for _ in range(3))

    order = np.argsort(relevant, kind="stable")  # similar R together: each chunk searches only as deep as needed
    rows_per_chunk = max(1, chunk_elements // ng)
    starts = range(0, nq, rows_per_chunk)
    for start in tqdm(starts, desc="retrieval", unit="chunk", disable=not progress or len(starts) < 2):
        rows = order[start:start + rows_per_chunk]
        depth = max(keep, int(relevant[rows].max()))
        sims, idx = top_k_neighbors(query[rows], gallery, depth + self_count, chunk=len(rows))
        if leave_one_out:
            sims, idx = _drop_self(sims, idx, rows)
        indices[rows], similarities[rows] = idx[:, :keep], sims[:, :keep]
        matches = gallery_labels[idx] == query_labels[rows, None]
        p1, rp, ap = _rank_scores(matches, relevant[rows])
        p_at_1[rows], r_prec[rows], ap_at_r[rows] = p1, rp, ap
    return QueryScores(indices, similarities, relevant, p_at_1, r_prec, ap_at_r)


def _drop_self(sims: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's own row from its (m, depth + 1) neighbors (else the last one, as PML does)."""
    is_self = idx == rows[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    depth = idx.shape[1] - 1
    return sims[keep].reshape(-1, depth), idx[keep].reshape(-1, depth)


def _rank_scores(matches: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """matches: (m, depth) bool, neighbor has the query's class; relevant: (m,) R, depth >= max R.

    Returns precision@1, R-precision and average precision at R, each (m,) float64, NaN where R == 0.
    """
    depth = matches.shape[1]
    within_r = np.arange(depth) < relevant[:, None]
    hits = matches & within_r
    cumulative = np.cumsum(hits, axis=1, dtype=np.int32)
    precision_at_hits = np.where(hits, cumulative / np.arange(1, depth + 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r_precision = hits.sum(axis=1) / relevant
        average_precision = precision_at_hits.sum(axis=1) / relevant
    has_relevant = relevant > 0
    precision_at_1 = np.where(has_relevant, matches[:, 0], np.nan)
    return (precision_at_1, np.where(has_relevant, r_precision, np.nan),
            np.where(has_relevant, average_precision, np.nan))


def recall_at_k(neighbor_labels: np.ndarray, query_labels: np.ndarray, k: int) -> float:
    """Share of queries with at least one same-class item among their first ``k`` neighbors.

    neighbor_labels: (nq, m) int64 with m >= k; query_labels: (nq,). Returns a fraction in [0, 1].
    """
    if neighbor_labels.shape[1] < k:
        raise ValueError(f"recall@{k} needs {k} neighbors per query, got {neighbor_labels.shape[1]}")
    if len(query_labels) == 0:
        return float("nan")
    return float((neighbor_labels[:, :k] == query_labels[:, None]).any(axis=1).mean())


def retrieval_summary(scores: QueryScores, query_labels: np.ndarray, gallery_labels: np.ndarray, *,
                      k: int, recall_at: tuple[int, ...], num_classes: int) -> tuple[dict[str, float], np.ndarray]:
    """Aggregate :class:`QueryScores` into retrieval numbers (fractions in [0, 1]).

    Returns (metrics by name, plain kNN-vote predictions (nq,) int64). The vote runs over the first
    ``min(k, m)`` neighbors, and the kNN keys name that number.
    """
    neighbor_labels = gallery_labels[scores.indices]
    k = min(k, neighbor_labels.shape[1])
    predicted = vote_labels(neighbor_labels[:, :k], num_classes=num_classes)
    weighted = vote_labels(neighbor_labels[:, :k], scores.similarities[:, :k], num_classes=num_classes,
                           weighted=True)
    scored = scores.relevant > 0
    if not scored.all():
        log.warning("%d of %d queries have no same-class gallery item; left out of precision/recall/MAP@R",
                    int((~scored).sum()), len(scored))
    metrics: dict[str, float] = {
        "precision_at_1": _mean(scores.precision_at_1[scored]),
        "r_precision": _mean(scores.r_precision[scored]),
        "mean_average_precision_at_r": _mean(scores.average_precision_at_r[scored]),
    }
    for rank in recall_at:
        if rank <= neighbor_labels.shape[1]:
            metrics[f"recall@{rank}"] = recall_at_k(neighbor_labels[scored], query_labels[scored], rank)
    metrics[f"knn_accuracy@{k}"] = float((predicted == query_labels).mean())
    metrics[f"weighted_knn_accuracy@{k}"] = float((weighted == query_labels).mean())
    metrics["queries"] = float(len(query_labels))
    metrics["queries_without_relevant"] = float((~scored).sum())
    return metrics, predicted


def retrieval_metrics(query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray | None = None,
                      gallery_labels: np.ndarray | None = None, *, k: int = 10,
                      recall_at: tuple[int, ...] = (1, 5, 10), chunk_elements: int = 1 << 25) -> dict[str, float]:
    """precision@1, R-precision, MAP@R, recall@``recall_at`` and plain / weighted kNN-vote accuracy at ``k``
    of ``query`` (nq, d) searched in ``gallery`` (ng, d); with ``gallery`` None, in ``query`` itself,
    leaving each query out. Keys as in :func:`retrieval_summary`.
    """
    query_labels = np.asarray(query_labels, dtype=np.int64)
    reference_labels = query_labels if gallery_labels is None else np.asarray(gallery_labels, dtype=np.int64)
    scores = score_queries(query, query_labels, gallery, gallery_labels, keep=max((k, *recall_at)),
                           chunk_elements=chunk_elements)
    num_classes = int(max(query_labels.max(), reference_labels.max())) + 1
    metrics, _ = retrieval_summary(scores, query_labels, reference_labels, k=k, recall_at=recall_at,
                                   num_classes=num_classes)
    return metrics


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")
