"""Majority vote over the labels of a query's nearest neighbours (a pure function, lists/arrays in)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Vote:
    """Outcome of :func:`majority_vote`.

    ``label``: the winning class (None only when there were no neighbours); ``votes``: per class, the
    neighbour count or the summed weights, classes ordered by first appearance; ``confidence``: the
    winner's share of all votes in [0, 1]; ``is_unknown``: the nearest neighbour of the winning class is
    less similar than ``unknown_below`` (or there were no neighbours). ``label`` is kept even when unknown
    so callers can still show the closest guess.
    """

    label: str | None
    votes: dict[str, float] = field(default_factory=dict)
    confidence: float = 0.0
    is_unknown: bool = True


def majority_vote(labels: Sequence[str], similarities: Sequence[float] | np.ndarray, *,
                  weighted: bool = False, unknown_below: float | None = None) -> Vote:
    """Vote among ``k`` neighbours given best first: ``labels: (k,)``, ``similarities: (k,)`` cosines.

    * plain: each neighbour gives its class 1 vote; ``weighted``: it gives ``(1 + cos) / 2`` in [0, 1]
      (the store's score), so nearer neighbours count more and weights are never negative.
    * tie-break (deterministic): among classes with equal votes (within 1e-9 relative), the class whose
      best neighbour ranks highest (comes first in ``labels``) wins.
    * ``unknown_below``: ``is_unknown`` is set when the winning class's best cosine is below it.
    """
    labels = list(labels)
    sims = np.asarray(similarities, dtype=np.float64)
    if sims.ndim != 1 or len(sims) != len(labels):
        raise ValueError(f"labels ({len(labels)}) and similarities (shape {sims.shape}) must be 1-D of equal length")
    if not np.isfinite(sims).all():
        raise ValueError("similarities contain NaN or infinite values")
    if unknown_below is not None and not math.isfinite(unknown_below):
        raise ValueError(f"unknown_below must be a finite number, got {unknown_below!r}")
    if not labels:
        return Vote(None, {}, 0.0, True)
    weights = (1.0 + np.clip(sims, -1.0, 1.0)) / 2.0 if weighted else np.ones(len(labels))
    votes: dict[str, float] = {}
    first_rank: dict[str, int] = {}
    best_sim: dict[str, float] = {}
    for rank, (label, w, s) in enumerate(zip(labels, weights.tolist(), sims.tolist())):
        votes[label] = votes.get(label, 0.0) + w
        first_rank.setdefault(label, rank)
        best_sim[label] = max(best_sim.get(label, -math.inf), s)
    top = max(votes.values())
    tied = [lab for lab, v in votes.items() if math.isclose(v, top, rel_tol=1e-9, abs_tol=1e-12)]
    winner = min(tied, key=first_rank.__getitem__)
    total = sum(votes.values())
    confidence = votes[winner] / total if total > 0 else 0.0
    if not weighted:
        votes = {lab: int(v) for lab, v in votes.items()}
    is_unknown = unknown_below is not None and best_sim[winner] < unknown_below
    return Vote(winner, votes, float(confidence), bool(is_unknown))
