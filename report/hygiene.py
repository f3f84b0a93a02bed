"""The report's data-hygiene section: held-out queries that have a near-duplicate in the gallery (leakage), the
kNN accuracy with and without them, and duplicates that carry different labels (likely labelling errors).

A query leaks when the judge (:func:`similarity.judge.judge`, the rule of ``simsearch index dedup`` and of the
duplicate check at upload) finds one of its kept neighbours a copy: same pixels, pHash, local verification, or,
where a file cannot be read (or there are no paths), only a cosine that identical pixels give.  Only candidate
files are decoded, each once.
Duplicate groups inside the gallery come from the index (``engine.dedup.find_duplicates``) as dicts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from report.config import EmbeddingSet
from report.thumbnails import thumbnail_uris
from similarity.hygiene import DuplicateRule
from similarity.judge import Pair, SignalCache, first_copy
from similarity.metrics import QueryScores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leak:
    """Query row ``query`` has gallery row ``gallery`` as a duplicate: ``kind`` is the judge's verdict (exact,
    hash, verified, descriptor, cosine-only); ``phash_bits`` is None when a file could not be read; ``exact``:
    same decoded pixels; ``inliers``: of local verification, ``correlation``: of dense alignment (None when not
    run)."""

    query: int
    gallery: int
    similarity: float
    phash_bits: int | None
    exact: bool
    same_label: bool
    kind: str = "exact"
    inliers: int | None = None
    correlation: float | None = None


@dataclass(frozen=True)
class LeakNeighbours:
    """Each query's nearest gallery rows by another vector than the report's embeddings (an index's copy
    descriptor), for the leak check: ``indices (nq, m) int64`` gallery rows best first, ``similarities (nq, m)
    float32`` their cosines (``-inf`` pads a short row)."""

    indices: np.ndarray
    similarities: np.ndarray


def find_leaks(queries: EmbeddingSet, gallery: EmbeddingSet, scores: QueryScores | LeakNeighbours,
               rule: DuplicateRule, signals: SignalCache | None = None) -> list[Leak]:
    """Queries with a duplicate among their kept neighbours (``scores``: queries against ``gallery``, by the report's
    embeddings or by :class:`LeakNeighbours`); the first neighbour the judge accepts, best first, is reported.
    Without paths on both sides the embedding alone decides."""
    signals = signals if signals is not None else SignalCache()
    pixels = queries.paths is not None and gallery.paths is not None
    leaks = []
    rows, cols = np.nonzero(scores.similarities >= rule.cosine)  # row-major: each query's neighbours best first
    starts = np.flatnonzero(np.diff(rows, prepend=-1)).tolist()  # where each query's neighbours begin
    for start, end in zip(starts, starts[1:] + [len(rows)]):
        q = int(rows[start])
        neighbours = [int(scores.indices[q, c]) for c in cols[start:end].tolist()]
        cosines = scores.similarities[q, cols[start:end]].tolist()
        found = first_copy((Pair(signals.get(queries.paths[q]) if pixels else None,
                                 signals.get(gallery.paths[g]) if pixels else None, cosine)
                            for g, cosine in zip(neighbours, cosines)), rule)
        if found is not None:
            position, verdict = found
            g = neighbours[position]
            leaks.append(Leak(q, g, round(verdict.cosine, 6), verdict.phash_bits, verdict.exact,
                              bool(queries.labels[q] == gallery.labels[g]), verdict.kind, verdict.inliers,
                              verdict.correlation))
    return leaks


def hygiene_metrics(leaks: Sequence[Leak] | None, predicted: np.ndarray, labels: np.ndarray, rule: DuplicateRule,
                    groups: Sequence[Mapping] | None, *, queries: int) -> dict:
    """The section's numbers: leakage (None without held-out queries) with the kNN accuracy over all queries and
    over the queries without a gallery duplicate, and the gallery's duplicate groups (None when not searched)."""
    out: dict = {"rule": asdict(rule)}
    if leaks is not None:
        leaked = np.zeros(queries, dtype=bool)
        leaked[[leak.query for leak in leaks]] = True
        correct = np.asarray(predicted) == np.asarray(labels)
        out["leakage"] = {
            "queries": queries, "queries_with_duplicate_in_gallery": int(leaked.sum()),
            "exact": sum(leak.exact for leak in leaks),
            "cosine_only": sum(leak.kind == "cosine-only" for leak in leaks),
            "verified": sum(leak.kind == "verified" for leak in leaks),
            "label_differs": sum(not leak.same_label for leak in leaks),
            "knn_accuracy_all": float(correct.mean()),
            "knn_accuracy_without_leaked": float(correct[~leaked].mean()) if (~leaked).any() else None,
            "knn_accuracy_leaked": float(correct[leaked].mean()) if leaked.any() else None,
        }
    if groups is not None:
        out["gallery_duplicates"] = {
            "groups": len(groups), "exact_groups": sum(bool(g["exact"]) for g in groups),
            "items_in_groups": sum(len(g["members"]) for g in groups),
            "removable": sum(len(g["members"]) - 1 for g in groups),
            "mixed_label_groups": sum(bool(g["mixed_labels"]) for g in groups),
        }
    return out


def _tile(uri: str | None, text: str) -> dict:
    return {"uri": uri, "text": text}


def hygiene_rows(leaks: Sequence[Leak], groups: Sequence[Mapping], queries: EmbeddingSet, gallery: EmbeddingSet, *,
                 shown: int, size: int) -> dict[str, list[dict]]:
    """Thumbnail rows of the section, at most ``shown`` per list: ``leaks`` (a query beside its gallery
    duplicate), ``mixed`` (duplicates with different labels: leaked pairs whose labels differ, then the
    gallery's mixed-label groups) and ``groups`` (other gallery groups).  A tile is ``{"uri", "text"}``; the
    uri is None where there is no readable file."""
    def uris(paths: list[str | None]) -> list[str | None]:
        readable = [p for p in paths if p is not None]
        found = dict(zip(readable, thumbnail_uris(readable, size))) if readable else {}
        return [found.get(p) if p is not None else None for p in paths]

    def leak_row(leak: Leak) -> dict:
        paths = [queries.paths[leak.query] if queries.paths else None,
                 gallery.paths[leak.gallery] if gallery.paths else None]
        q_uri, g_uri = uris(paths)
        how = {"exact": "same pixels", "hash": f"pHash {leak.phash_bits} bits",
               "verified": f"{leak.inliers} inliers" if leak.correlation is None
               else f"aligned correlation {leak.correlation:.3f}"}.get(leak.kind, leak.kind.replace("-", " "))
        return {"caption": f"cos {leak.similarity:.4f}, {how}",
                "tiles": [_tile(q_uri, f"query {queries.name_of(leak.query)} · "
                                       f"{queries.class_names[queries.labels[leak.query]]}"),
                          _tile(g_uri, f"gallery {gallery.name_of(leak.gallery)} · "
                                       f"{gallery.class_names[gallery.labels[leak.gallery]]}")]}

    def group_row(group: Mapping) -> dict:
        members = group["members"]
        found = uris([m["path"] or None for m in members])
        kind = "exact" if group["exact"] else "near"
        return {"caption": f"{kind}, {len(members)} items, keep {group['keep']}",
                "tiles": [_tile(uri, f"{m['id']} · {m['label']} · cos {m['similarity']:.4f}")
                          for uri, m in zip(found, members)]}

    mixed_leaks = [leak for leak in leaks if not leak.same_label]
    mixed_groups = [g for g in groups if g["mixed_labels"]]
    mixed = [leak_row(leak) for leak in mixed_leaks[:shown]]
    mixed += [group_row(g) for g in mixed_groups[:max(0, shown - len(mixed))]]
    plain_groups = [g for g in groups if not g["mixed_labels"]]
    return {"leaks": [leak_row(leak) for leak in leaks[:shown]], "mixed": mixed,
            "groups": [group_row(g) for g in plain_groups[:shown]]}
