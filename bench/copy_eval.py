"""Scoring copy detection for ``bench/dedup_quality.py``: ranking references by score, the threshold that keeps
false matches at or under a target, and DISC21's micro average precision (the library's
:func:`similarity.copies.micro_average_precision`).  Arrays in, numbers out.

Vocabulary: ``nq`` queries (edited copies, and *unmatched* queries whose original is not among the references),
``nr`` references (originals and distractors).  ``truth (nq,) int64`` is the reference row of each query's
original, or -1 for an unmatched query.  A method gives every (query, reference) pair a score, higher = more of a
copy.  A query *matches* at threshold t when its best reference scores >= t; the match is *false* when that
reference is not its original (or the query is unmatched).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from similarity.copies import micro_average_precision

UNMATCHED = -1


def hamming_table(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (n, w) uint64, b: (m, w) uint64 (hashes of w x 64 bits) -> (n, m) int32 differing bits."""
    a = np.asarray(a, dtype=np.uint64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.uint64).reshape(len(b), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"hashes of {a.shape[1]} and {b.shape[1]} words")
    out = np.zeros((len(a), len(b)), dtype=np.int32)
    for word in range(a.shape[1]):
        out += np.bitwise_count(a[:, word, None] ^ b[None, :, word]).astype(np.int32)
    return out


def top_k(score_rows: Callable[[int, int], np.ndarray], nq: int, nr: int, k: int, *,
          chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best references of each query. ``score_rows(start, stop)`` gives the (stop - start, nr) scores of
    queries ``start:stop``.  Returns (scores (nq, k) float32, reference rows (nq, k) int64), best first; equal
    scores are ordered by reference row (shuffle the references so that ties do not favour anyone)."""
    k = min(k, nr)
    if k < 1:
        raise ValueError(f"top-{k} needs k >= 1 and references ({nr})")
    scores_out, rows_out = [], []
    for start in range(0, nq, chunk):
        scores = np.asarray(score_rows(start, min(nq, start + chunk)), dtype=np.float32)
        if k < nr:
            rows = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
        else:
            rows = np.broadcast_to(np.arange(nr), scores.shape)
        picked = np.take_along_axis(scores, rows, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        scores_out.append(np.take_along_axis(picked, order, axis=1))
        rows_out.append(np.take_along_axis(rows, order, axis=1))
    if not scores_out:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(scores_out), np.concatenate(rows_out).astype(np.int64)


def false_match_threshold(best: np.ndarray, correct: np.ndarray, *, max_false: float) -> float:
    """The lowest threshold at which at most ``max_false`` of the queries match falsely. ``best (nq,)``: each query's
    best score; ``correct (nq,) bool``: that best reference is its original.  ``inf`` when even the highest score
    is too many false matches (nothing may match)."""
    best = np.asarray(best, dtype=np.float64)
    wrong = ~np.asarray(correct, dtype=bool)
    if len(best) == 0:
        raise ValueError("no queries")
    levels = np.unique(best)[::-1]  # descending; a threshold at a level admits every query scoring >= it
    order = np.argsort(-best, kind="stable")
    wrong_so_far = np.cumsum(wrong[order])
    admitted = np.searchsorted(-best[order], -levels, side="right")  # queries scoring >= each level (>= 1)
    allowed = wrong_so_far[admitted - 1] <= max_false * len(best)
    # false matches only grow as the threshold falls: the allowed levels are a prefix of the descending list
    n_allowed = int(np.count_nonzero(allowed))
    return float(levels[n_allowed - 1]) if n_allowed else float("inf")


def rates_at(best: np.ndarray, correct: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, float | None]:
    """At ``threshold``: ``recall`` (copies whose best reference is their original and scores >= it, over copies),
    ``false_matches`` (queries that match a wrong reference, or match while unmatched, over all queries) and
    ``unmatched_matched`` (unmatched queries that match anything, over unmatched queries)."""
    matched = np.asarray(best) >= threshold
    correct = np.asarray(correct, dtype=bool)
    copy = np.asarray(truth) != UNMATCHED
    return {"recall": _share(matched & correct, copy), "false_matches": _share(matched & ~correct, np.ones_like(copy)),
            "unmatched_matched": _share(matched, ~copy)}


def _share(hit: np.ndarray, among: np.ndarray) -> float | None:
    """The share of ``among`` that is ``hit``, rounded; None when ``among`` is empty (JSON has no NaN)."""
    n = int(np.count_nonzero(among))
    return round(float(np.count_nonzero(hit & among) / n), 4) if n else None


def evaluate(top_scores: np.ndarray, top_rows: np.ndarray, truth: np.ndarray, *, max_false: float,
             threshold: float | None = None) -> dict:
    """One method on one group of queries: µAP over the top-k predictions, the threshold of at most ``max_false``
    false matches with the rates at it, and (given ``threshold``) the rates at that one too."""
    truth = np.asarray(truth, dtype=np.int64)
    correct = np.asarray(top_rows) == truth[:, None]
    best, best_correct = top_scores[:, 0], correct[:, 0]
    n_true = int(np.count_nonzero(truth != UNMATCHED))
    own = false_match_threshold(best, best_correct, max_false=max_false)
    out = {"queries": len(truth), "copies": n_true,
           "micro_ap": round(micro_average_precision(top_scores, correct, n_true), 4) if n_true else None,
           "recall_at_1": _share(best_correct, truth != UNMATCHED),
           "own_threshold": _jsonable(own), "at_own_threshold": rates_at(best, best_correct, truth, own)}
    if threshold is not None:
        out["at_threshold"] = rates_at(best, best_correct, truth, threshold)
    return out


def _jsonable(value: float) -> float | None:
    """A threshold for JSON: None for inf (nothing may match)."""
    return None if not np.isfinite(value) else round(float(value), 6)


__all__ = ["UNMATCHED", "evaluate", "false_match_threshold", "hamming_table", "rates_at",
           "top_k"]
