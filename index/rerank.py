"""Exact re-ranking of approximate candidates: compressed codes find the neighbourhood, the true vectors order it.

An ``ivfpq`` view compares product-quantised codes, whose scores are approximate: alone it finds about half
of the true ten nearest neighbours of a clustered collection.  The store takes ``rerank`` candidates from it
(a cheap first stage) and orders them by the exact inner product with their float32 vectors, read from the
truth (SQLite, by id), so that only the codes, never the vectors, stay in memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

VectorReader = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def rerank(xq: np.ndarray, candidates: np.ndarray, read_vectors: VectorReader,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """Order each query's candidates by exact inner product and keep the best ``k``.

    ``xq: (nq, d) float32``; ``candidates: (nq, r) int64`` ids (``-1`` pads short rows); ``read_vectors(ids)``
    takes sorted unique ``(m,) int64`` ids and returns ``(found (f,) int64 sorted, xb (f, d) float32)`` for
    those that still exist (an item deleted since the search is dropped).  Returns ``(D, I)``, each
    ``(nq, min(k, r))``, best first, with ``-1`` / ``-inf`` padding rows that have fewer than ``k`` candidates.
    """
    nq, r = candidates.shape
    width = min(k, r)
    D = np.full((nq, width), -np.inf, dtype=np.float32)
    I = np.full((nq, width), -1, dtype=np.int64)
    wanted = np.unique(candidates[candidates >= 0])
    if not len(wanted):
        return D, I
    found, xb = read_vectors(wanted)
    if not len(found):
        return D, I
    rows = np.searchsorted(found, candidates).clip(0, len(found) - 1)
    present = (candidates >= 0) & (found[rows] == candidates)
    for q in range(nq):
        ids = candidates[q][present[q]]
        scores = xb[rows[q][present[q]]] @ xq[q]
        best = np.argsort(-scores, kind="stable")[:width]
        D[q, :len(best)] = scores[best]
        I[q, :len(best)] = ids[best]
    return D, I
