"""The kNN majority vote: the one rule the API, the report and training validation all use.

Pure numpy (no torch, no faiss), so both ``index`` (which re-exports :func:`majority_vote`) and ``report``
import it. :func:`majority_vote` votes for one query with string labels; :func:`vote_labels` applies the
very same rule to every row of an ``(nq, k)`` array of integer labels at once.

The rule, for ``k`` neighbors given best first:

* plain: each neighbor gives its class 1 vote; weighted: it gives ``(1 + cos) / 2`` in [0, 1] (the
  index's score), so nearer neighbors count more and weights are never negative. A class's votes are
  summed in rank order.
* tie-break (deterministic): among classes whose votes equal the largest within :data:`TIE_REL_TOL`
  relative (or :data:`TIE_ABS_TOL` absolute), the class whose best neighbor ranks highest wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

TIE_REL_TOL = 1e-9
TIE_ABS_TOL = 1e-12


@dataclass(frozen=True)
class Vote:
    """Outcome of :func:`majority_vote`.

    ``label``: the winning class (None only when there were no neighbors); ``votes``: per class, the
    neighbor count or the summed weights, classes ordered by first appearance; ``confidence``: the
    winner's share of all votes in [0, 1]; ``is_unknown``: the nearest neighbor of the winning class is
    less similar than ``unknown_below`` (or there were no neighbors). ``label`` is kept even when unknown
    so callers can still show the closest guess.
    """

    label: str | None
    votes: dict[str, float] = field(default_factory=dict)
    confidence: float = 0.0
    is_unknown: bool = True


def vote_weights(similarities: np.ndarray, *, weighted: bool) -> np.ndarray:
    """Each neighbor's vote, float64 of the shape of ``similarities`` (cosines): 1, or ``(1 + cos) / 2``."""
    sims = np.asarray(similarities, dtype=np.float64)
    return (1.0 + np.clip(sims, -1.0, 1.0)) / 2.0 if weighted else np.ones(sims.shape)


def class_votes(labels: np.ndarray, weights: np.ndarray, num_classes: int) -> np.ndarray:
    """labels: (nq, k) int in [0, num_classes), weights: (nq, k) -> votes per class (nq, num_classes) float64,
    each class's weights summed in rank order."""
    nq, k = labels.shape
    votes = np.zeros((nq, num_classes))
    rows = np.arange(nq)
    for rank in range(k):  # one neighbor per row at a time: the sums run in rank order
        votes[rows, labels[:, rank]] += weights[:, rank]
    return votes


def winning_ranks(labels: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """labels: (nq, k), votes: (nq, C) from :func:`class_votes` -> (nq,) int64, per row the rank of the
    best neighbor of the winning class (its first neighbor among the classes tied for the most votes)."""
    top = votes.max(axis=1, keepdims=True)
    diff = np.abs(votes - top)
    tied = diff <= np.maximum(TIE_REL_TOL * np.maximum(np.abs(votes), np.abs(top)), TIE_ABS_TOL)
    tied_at_rank = np.take_along_axis(tied, labels, axis=1)
    return tied_at_rank.argmax(axis=1)


def vote_labels(labels: np.ndarray, similarities: np.ndarray | None = None, *, num_classes: int,
                weighted: bool = False) -> np.ndarray:
    """The vote of every row: labels (nq, k) int in [0, num_classes), best first; similarities (nq, k)
    cosines (needed when ``weighted``) -> predicted labels (nq,) int64.

    Row by row the same as ``majority_vote(labels[i], similarities[i], weighted=weighted).label``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise ValueError(f"labels must be (nq, k) with k >= 1, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    if similarities is None:
        if weighted:
            raise ValueError("a weighted vote needs similarities")
        similarities = np.zeros(labels.shape)
    elif np.shape(similarities) != labels.shape:
        raise ValueError(f"similarities shape {np.shape(similarities)} != labels shape {labels.shape}")
    votes = class_votes(labels, vote_weights(similarities, weighted=weighted), num_classes)
    return labels[np.arange(len(labels)), winning_ranks(labels, votes)]


def majority_vote(labels: Sequence[str], similarities: Sequence[float] | np.ndarray, *,
                  weighted: bool = False, unknown_below: float | None = None) -> Vote:
    """Vote among ``k`` neighbors given best first: ``labels: (k,)``, ``similarities: (k,)`` cosines.

    The rule is the module's (plain or ``weighted`` votes, ties to the class whose best neighbor ranks
    highest). ``unknown_below``: ``is_unknown`` is set when the winning class's best cosine is below it.
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
    classes = list(dict.fromkeys(labels))  # in order of first appearance
    code = {label: i for i, label in enumerate(classes)}
    codes = np.array([[code[label] for label in labels]])
    per_class = class_votes(codes, vote_weights(sims[None], weighted=weighted), len(classes))[0]
    winner = int(codes[0, winning_ranks(codes, per_class[None])[0]])
    votes = {label: float(v) for label, v in zip(classes, per_class)}
    total = sum(votes.values())
    confidence = votes[classes[winner]] / total if total > 0 else 0.0
    if not weighted:
        votes = {label: int(v) for label, v in votes.items()}
    is_unknown = unknown_below is not None and float(sims[codes[0] == winner].max()) < unknown_below
    return Vote(classes[winner], votes, float(confidence), bool(is_unknown))
