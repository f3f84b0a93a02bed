"""Duplicates inside an index: found through the index's own search, judged, grouped, listed, and optionally
removed; and the copies of outside files (``index dedup --queries``).

Candidates are pairs whose embeddings' cosine reaches ``rule.cosine`` among each item's ``k`` nearest neighbours
(``VectorStore.search`` in batches: the ANN index does the work, memory is the ``(n, d)`` vectors plus one batch of
hits, never an ``n x n`` matrix).  Each candidate pair gets :func:`similarity.judge.judge`'s verdict: with
``pixels=True`` the candidates' files are decoded, each once (an exact copy embeds to the same vector, so it is
always a candidate as long as an item has at most ``neighbours`` copies), and the pixels decide (exact, pHash,
local verification); without, the embedding alone decides (a cosine only identical pixels give, or the descriptor
threshold of an embedding trained for copies).  Pairs become groups transitively
(:func:`similarity.hygiene.group_pairs`); each group keeps its oldest item (the smallest id among equally old
ones: Milvus ids are random, not ordered).  A member is *confirmed* when pixel evidence (exact, hash, verified)
links it to the kept item, directly or through other confirmed members; only confirmed members are removed.
The listing's HTML page is :mod:`report.duplicates`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from index import VectorStore
from similarity.hygiene import DuplicateRule, group_pairs
from similarity.judge import ImageSignals, Pair, SignalCache, Verdict, dense_tier, judge

logger = logging.getLogger(__name__)

DEFAULT_NEIGHBOURS = 10  # nearest neighbours examined per item
SEARCH_BATCH = 1024  # queries per store.search call


@dataclass(frozen=True)
class DuplicateMember:
    """One item of a group: ``similarity`` is its embedding cosine to the group's kept item; ``evidence`` the
    verdict (:meth:`similarity.judge.Verdict.to_dict`, with ``"with"``: the other member's id) of its strongest link
    into the group (None for the kept item); ``confirmed``: linked to the kept item by pixel evidence."""

    id: int
    label: str
    path: str
    similarity: float
    evidence: dict | None = None
    confirmed: bool = True


@dataclass(frozen=True)
class DuplicateGroup:
    """Items that duplicate each other, oldest first; ``members[0]`` is kept by a dedup.

    ``exact``: all members have the same decoded pixels (only known when pixels were hashed);
    ``mixed_labels``: the members do not all carry one label (a likely labelling error); ``remove``: the
    confirmed members but the first; ``unconfirmed``: members kept because no pixel evidence links them."""

    members: list[DuplicateMember]
    exact: bool

    @property
    def keep(self) -> int:
        return self.members[0].id

    @property
    def remove(self) -> list[int]:
        return [m.id for m in self.members[1:] if m.confirmed]

    @property
    def unconfirmed(self) -> list[int]:
        return [m.id for m in self.members[1:] if not m.confirmed]

    @property
    def mixed_labels(self) -> bool:
        return len({m.label for m in self.members}) > 1

    def to_dict(self) -> dict:
        return {"keep": self.keep, "remove": self.remove, "unconfirmed": self.unconfirmed, "exact": self.exact,
                "mixed_labels": self.mixed_labels, "members": [asdict(m) for m in self.members]}


@dataclass
class DuplicateReport:
    """The groups of one index and how they were found."""

    groups: list[DuplicateGroup]
    items: int
    threshold: float
    neighbours: int
    pixels: bool
    near_pairs: int
    exact_pairs: int
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0
    queried: int | None = None  # items whose neighbours were searched (None: every item)
    pairs_by_kind: dict[str, int] = field(default_factory=dict)  # duplicate pairs by verdict kind

    @property
    def duplicates(self) -> list[int]:
        """The ids a dedup removes: the confirmed members but the first of each group, sorted."""
        return sorted(i for g in self.groups for i in g.remove)

    @property
    def unconfirmed(self) -> list[int]:
        """Group members no pixel evidence links to their group's kept item (kept by a dedup), sorted."""
        return sorted(i for g in self.groups for i in g.unconfirmed)

    def summary(self) -> dict:
        return {"items": self.items, "groups": len(self.groups), "exact_groups": sum(g.exact for g in self.groups),
                "near_groups": sum(not g.exact for g in self.groups),
                "mixed_label_groups": sum(g.mixed_labels for g in self.groups),
                "items_in_groups": sum(len(g.members) for g in self.groups), "duplicates": len(self.duplicates),
                "unconfirmed": len(self.unconfirmed), "pairs_by_kind": dict(self.pairs_by_kind),
                "threshold": self.threshold, "neighbours": self.neighbours, "pixels": self.pixels,
                "queried": self.items if self.queried is None else self.queried,
                "near_pairs": self.near_pairs, "exact_pairs": self.exact_pairs, "unreadable": len(self.unreadable),
                "seconds": round(self.seconds, 3)}

    def to_dict(self) -> dict:
        return {**self.summary(), "unreadable_files": self.unreadable, "groups": [g.to_dict() for g in self.groups]}


def near_duplicate_pairs(store: VectorStore, ids: np.ndarray, xb: np.ndarray, *, threshold: float,
                         neighbours: int = DEFAULT_NEIGHBOURS, batch: int = SEARCH_BATCH,
                         progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(m, 2) int64`` (smaller id first, unique, sorted) of items whose cosine is at least ``threshold``,
    among each item's ``neighbours`` nearest, and their cosines ``(m,) float32``.  ``ids: (n,)``, ``xb: (n, d)
    float32``: the items to query with."""
    found: dict[tuple[int, int], float] = {}
    for start in tqdm(range(0, len(ids), batch), desc="duplicates: search", unit="batch", disable=not progress,
                      leave=False):
        hits = store.search(xb[start:start + batch], neighbours + 1)  # +1: the item finds itself
        for item_id, row in zip(ids[start:start + batch].tolist(), hits):
            for hit in row:
                if hit.similarity < threshold:
                    break  # best first
                if hit.id != item_id:
                    key = (min(item_id, hit.id), max(item_id, hit.id))
                    found[key] = max(found.get(key, -1.0), hit.similarity)
    keys = sorted(found)
    return (np.array(keys, dtype=np.int64).reshape(-1, 2),
            np.array([found[k] for k in keys], dtype=np.float32))


def judge_pairs(store: VectorStore, pairs: np.ndarray, cosines: np.ndarray, rule: DuplicateRule, *, pixels: bool,
                confirm: bool = False, cache: SignalCache | None = None, progress: bool = False
                ) -> list[Verdict]:
    """The judge's verdict on each candidate pair (``pairs (m, 2)`` ids, ``cosines (m,)``); with ``pixels`` the
    files are decoded through ``cache`` (each once), else the embedding alone decides.  An item deleted meanwhile
    has no file to read.  Dense verification (:func:`similarity.judge.dense_tier`, where the rule asks for it)
    takes each item's pairs as that item's candidates: a pair is a copy when it passes from either side."""
    cache = cache if cache is not None else SignalCache()
    metas = store.get_many(np.unique(pairs).tolist()) if pixels and len(pairs) else {}

    def signals(item_id: int) -> ImageSignals | None:
        if not pixels:
            return None
        meta = metas.get(item_id)
        return cache.get(meta.path) if meta is not None else ImageSignals(str(item_id), error="deleted")

    verdicts = [judge(Pair(signals(a), signals(b), float(c)), rule, confirm=confirm)
                for (a, b), c in tqdm(zip(pairs.tolist(), cosines.tolist()), total=len(pairs),
                                      desc="duplicates: judge", unit="pair", disable=not progress, leave=False)]
    if rule.min_correlation is None or not pixels:
        return verdicts
    # dense verification looks at a query's candidates together: each item's pairs, from its side
    by_item: dict[int, list[int]] = {}
    for n, (a, b) in enumerate(pairs.tolist()):
        by_item.setdefault(a, []).append(n)
        by_item.setdefault(b, []).append(n)
    out = list(verdicts)
    for item, rows in by_item.items():
        oriented = [Pair(signals(item), signals(int(pairs[n, 1] if pairs[n, 0] == item else pairs[n, 0])),
                         float(cosines[n])) for n in rows]
        for n, verdict in zip(rows, dense_tier(oriented, [verdicts[n] for n in rows], rule, confirm=confirm)):
            if (verdict.duplicate and not out[n].duplicate) or (out[n].correlation is None
                                                                and verdict.correlation is not None):
                out[n] = verdict
    return out


def _links(group: list[int], edges: list[tuple[int, int, Verdict]]
           ) -> tuple[set[int], dict[int, tuple[int, Verdict]]]:
    """For a group (kept item first) and the duplicate edges among its items: the members pixel evidence links to
    the kept item (through confirmed edges), and each member's strongest edge (confirmed first, then by cosine)
    with the member at its other end."""
    members = set(group)
    best: dict[int, tuple[int, Verdict]] = {}
    neighbours: dict[int, list[int]] = {i: [] for i in group}
    for a, b, verdict in edges:
        if a not in members or b not in members:  # an item deleted meanwhile
            continue
        if verdict.confirmed:
            neighbours[a].append(b)
            neighbours[b].append(a)
        for one, other in ((a, b), (b, a)):
            rank = (verdict.confirmed, verdict.cosine)
            if one not in best or rank > (best[one][1].confirmed, best[one][1].cosine):
                best[one] = (other, verdict)
    reached, frontier = {group[0]}, [group[0]]
    while frontier:
        for other in neighbours[frontier.pop()]:
            if other not in reached:
                reached.add(other)
                frontier.append(other)
    return reached, best


def _digest(signals: ImageSignals) -> str | None:
    return signals.hashes.exact if signals.hashes is not None else None


def find_duplicates(store: VectorStore, *, rule: DuplicateRule = DuplicateRule(),
                    neighbours: int = DEFAULT_NEIGHBOURS, pixels: bool = False, sample: int | None = None,
                    seed: int = 0, confirm: bool = False, progress: bool = False) -> DuplicateReport:
    """Duplicate groups of a store: candidates at ``rule.cosine`` through ``store.search``, each pair judged by
    :func:`similarity.judge.judge` (``pixels``: decode the candidates' files; ``confirm``: verify descriptor
    matches too, so they can be confirmed).  ``sample``: search the neighbours of a seeded sample of this many
    items only (every pair found has a sampled member), so the time follows the sample, not the store."""
    if neighbours < 1:
        raise ValueError(f"neighbours must be >= 1, got {neighbours}")
    if sample is not None and sample < 1:
        raise ValueError(f"sample must be >= 1, got {sample}")
    started = time.perf_counter()
    ids, xb = store.all_vectors()
    queried = None
    if sample is not None and sample < len(ids):
        rows = np.sort(np.random.default_rng(seed).choice(len(ids), size=sample, replace=False))
        candidates, cosines = near_duplicate_pairs(store, ids[rows], xb[rows], threshold=rule.cosine,
                                                   neighbours=neighbours, progress=progress)
        queried = sample
    else:
        candidates, cosines = near_duplicate_pairs(store, ids, xb, threshold=rule.cosine, neighbours=neighbours,
                                                   progress=progress)
    cache = SignalCache()
    verdicts = judge_pairs(store, candidates, cosines, rule, pixels=pixels, confirm=confirm, cache=cache,
                           progress=progress)
    edges = {(a, b): v for (a, b), v in zip(candidates.tolist(), verdicts) if v.duplicate}
    kinds = Counter(v.kind for v in edges.values())
    groups = group_pairs(np.array(list(edges), dtype=np.int64).reshape(-1, 2))
    group_of = {i: n for n, g in enumerate(groups) for i in g}
    edges_of: list[list[tuple[int, int, Verdict]]] = [[] for _ in groups]
    for (a, b), verdict in edges.items():
        edges_of[group_of[a]].append((a, b, verdict))
    metas = store.get_many([i for g in groups for i in g])
    built = []
    for group, group_edges in zip(groups, edges_of):
        rows = np.minimum(np.searchsorted(ids, group), len(ids) - 1)  # ids are sorted
        # left out: items deleted meanwhile (no meta) or added after the vectors were read (not in ids)
        live = [(i, r) for i, r in zip(group, rows.tolist()) if i in metas and ids[r] == i]
        if len(live) < 2:
            continue
        live.sort(key=lambda pair: (metas[pair[0]].added_at, pair[0]))  # the oldest item is kept
        keeper = xb[live[0][1]]
        confirmed, best = _links([i for i, _ in live], group_edges)
        members = []
        for position, (i, r) in enumerate(live):
            evidence = None
            if position and i in best:
                evidence = {**best[i][1].to_dict(), "with": best[i][0]}
            members.append(DuplicateMember(i, metas[i].label, metas[i].path, round(float(xb[r] @ keeper), 6),
                                           evidence, position == 0 or i in confirmed))
        digests = {_digest(cache.get(metas[i].path)) for i, _ in live} if pixels else {None}
        built.append(DuplicateGroup(members, len(digests) == 1 and None not in digests))
    unreadable = sorted({path for path, signals in cache.items() if not signals.readable})
    report = DuplicateReport(built, len(ids), rule.cosine, neighbours, pixels,
                             sum(n for kind, n in kinds.items() if kind != "exact"), kinds.get("exact", 0),
                             unreadable, time.perf_counter() - started, queried, dict(sorted(kinds.items())))
    logger.info("duplicates: %d groups, %d items to remove, %d unconfirmed kept, among %d items", len(built),
                len(report.duplicates), len(report.unconfirmed), len(ids))
    return report
