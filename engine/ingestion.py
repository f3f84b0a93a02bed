"""Duplicates at ingestion: the policy of ``simsearch index build/add`` and ``POST /api/images``.

Each new item is compared with what the index already holds (and, for a collection, with the earlier items of the
same batch): its ``neighbours`` nearest items at cosine >= ``rule.cosine`` are the candidates, and the verdict on
each candidate pair is :func:`similarity.judge.judge`'s, as in ``simsearch index dedup`` and the report (exact
pixels, pHash, the descriptor cosine of an embedding trained for copies, local verification; where a file cannot
be read, only a cosine that identical pixels give).  An exact copy wins, else the most similar copy.

Policies: ``keep`` stores everything unchecked (no extra decoding), ``flag`` (the default) stores the item and
reports what it duplicates, ``skip`` stores nothing for a duplicate its pixels confirm (exact, hash, verified) and
stores and flags one the descriptor alone found, as ``index dedup --remove`` deletes confirmed copies only.  The check and the add are two steps: two
identical uploads racing each other may both be stored.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from engine.dedup import DEFAULT_NEIGHBOURS, SEARCH_BATCH
from index import ItemMeta, VectorStore
from index.milvus import MilvusStore
from similarity.hygiene import DuplicateRule
from similarity.judge import ImageSignals, Pair, SignalCache, Verdict, first_copy, judge, same_pixels

logger = logging.getLogger(__name__)

DUPLICATE_POLICIES = ("keep", "skip", "flag")
DEFAULT_POLICY = "flag"
BATCH_CHUNK = 512  # rows of the (chunk, n) cosine table within a batch


@dataclass(frozen=True)
class DuplicateFinding:
    """What a new item duplicates: an indexed item (``duplicate_of``, its id) or an earlier item of the same
    batch (``earlier_in_batch``, its row), with the judge's verdict on the pair."""

    verdict: Verdict
    duplicate_of: int | None = None
    earlier_in_batch: int | None = None

    @property
    def similarity(self) -> float:
        """The embeddings' cosine, rounded to 6 digits."""
        return round(self.verdict.cosine, 6)

    @property
    def exact(self) -> bool:
        return self.verdict.kind == "exact"


@dataclass(frozen=True)
class AddResult:
    """One upload's outcome: the stored item (or, when ``skipped``, the existing item it duplicates) and the
    duplicate found (``duplicate_of`` None when none was, or when the policy was ``keep``) with the judge's
    ``verdict`` on the pair (its tier and evidence)."""

    item: ItemMeta
    duplicate_of: int | None = None
    verdict: Verdict | None = None
    skipped: bool = False

    @property
    def similarity(self) -> float | None:
        """The embeddings' cosine with the duplicate, rounded to 6 digits; None without one."""
        return None if self.verdict is None else round(self.verdict.cosine, 6)

    @property
    def exact(self) -> bool:
        return self.verdict is not None and self.verdict.kind == "exact"


@dataclass
class DuplicateCounts:
    """A collection's duplicates: ``exact`` + ``near`` found, of which ``skipped`` were left out or ``flagged``
    stored (by the policy)."""

    exact: int = 0
    near: int = 0
    skipped: int = 0
    flagged: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def check_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`DUPLICATE_POLICIES`, else ``ValueError``."""
    if policy not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates policy must be one of {list(DUPLICATE_POLICIES)}, got {policy!r}")
    return policy


SignalsOf = Callable[[int], ImageSignals]  # row -> that new item's pixel signals (asked only for candidates)


def _search_stale_ok(store: VectorStore) -> Callable[[np.ndarray, int], list]:
    """``store.search`` for a check that may miss the writes of the last moments (a duplicate added at the
    same instant): on Milvus with Bounded consistency, which saves a server time tick per call; the embedded
    store is always fresh (catching up is one cheap query)."""
    if isinstance(store, MilvusStore):
        return functools.partial(store.search, consistency="Bounded")
    return store.search


def _pick(new: ImageSignals, hits: list[tuple[int, float, ImageSignals]], rule: DuplicateRule
          ) -> tuple[int, Verdict] | None:
    """The copy among ``hits`` (``(key, cosine, signals)``, best cosine first, all candidates): the first exact
    one, else the most similar one the judge accepts, else the one dense verification picks among them
    (:func:`similarity.judge.first_copy`); None."""
    found = first_copy((Pair(new, old, cosine) for _key, cosine, old in hits), rule)
    if found is None:
        return None
    position, verdict = found
    if verdict.kind != "exact":  # a later exact copy still wins; only the first tier is asked of the rest
        for later_key, later_cosine, later in hits[position + 1:]:
            if same_pixels(new, later):
                return later_key, judge(Pair(new, later, later_cosine), rule)
    return hits[position][0], verdict


def find_in_store(store: VectorStore, xq: np.ndarray, signals_of: SignalsOf, *,
                  rule: DuplicateRule = DuplicateRule(), neighbours: int = DEFAULT_NEIGHBOURS,
                  cache: SignalCache | None = None) -> list[DuplicateFinding | None]:
    """For each new item its duplicate among the indexed items, or None.  ``xq: (n, d) float32`` the new
    embeddings, ``signals_of(row)`` their pixel signals, asked for only when a row has a candidate.  Like ``index
    dedup``, the ``neighbours`` nearest items at cosine >= ``rule.cosine`` are the candidates (the nearest alone may
    be a distinct image of the same class), each judged by :func:`similarity.judge.judge`; an exact one wins, else
    the most similar copy.  Candidate files are decoded once (``cache``)."""
    if xq.ndim != 2:
        raise ValueError(f"xq must be (n, d), got shape {xq.shape}")
    cache = cache if cache is not None else SignalCache()
    search = _search_stale_ok(store)
    findings: list[DuplicateFinding | None] = []
    for start in range(0, len(xq), SEARCH_BATCH):
        rows = search(xq[start:start + SEARCH_BATCH], neighbours)
        for row_index, row in enumerate(rows, start):
            hits = [(hit.id, hit.similarity, cache.get(hit.path)) for hit in row if hit.similarity >= rule.cosine]
            found = _pick(signals_of(row_index), hits, rule) if hits else None
            findings.append(None if found is None else DuplicateFinding(found[1], duplicate_of=found[0]))
    return findings


def find_in_batch(xb: np.ndarray, signals_of: SignalsOf, *, rule: DuplicateRule = DuplicateRule(),
                  neighbours: int = DEFAULT_NEIGHBOURS, chunk: int = BATCH_CHUNK) -> list[DuplicateFinding | None]:
    """For each row of a new batch its duplicate among the rows before it (``earlier_in_batch``), or None.
    ``xb: (n, d) float32`` L2-normalised embeddings; ``signals_of(row)`` is asked only for rows in a candidate
    pair.  The candidates are the earlier rows at cosine >= ``rule.cosine`` (a ``(chunk, n)`` table at a time:
    O(n^2 d) time, seconds for 60k items); the earliest exact copy among them wins (identical pixels embed
    identically, so a copy is always a candidate), else the most similar of the ``neighbours`` most similar
    candidates that the judge accepts, as in :func:`find_in_store`."""
    if xb.ndim != 2:
        raise ValueError(f"xb must be (n, d), got shape {xb.shape}")
    findings: list[DuplicateFinding | None] = []
    for start in range(0, len(xb), chunk):
        sims = xb[start:start + chunk] @ xb.T  # (c, n)
        for offset, row in enumerate(sims):
            i = start + offset
            candidates = np.flatnonzero(row[:i] >= rule.cosine)
            if not len(candidates):
                findings.append(None)
                continue
            new = signals_of(i)
            exact = next((int(j) for j in candidates.tolist() if same_pixels(new, signals_of(j))), None)
            if exact is not None:
                findings.append(DuplicateFinding(judge(Pair(new, signals_of(exact), float(row[exact])), rule),
                                                 earlier_in_batch=exact))
                continue
            nearest = candidates[np.argsort(-row[candidates], kind="stable")[:neighbours]]
            found = _pick(new, [(int(j), float(row[j]), signals_of(int(j))) for j in nearest.tolist()], rule)
            findings.append(None if found is None else DuplicateFinding(found[1], earlier_in_batch=found[0]))
    return findings


def find_new_duplicates(store: VectorStore | None, xb: np.ndarray, paths: list[str], *,
                        rule: DuplicateRule = DuplicateRule()) -> list[DuplicateFinding | None]:
    """Each new file's duplicate in ``store`` (if given and not empty), else among the earlier files of the
    batch, else None.  ``xb: (n, d) float32`` their embeddings, in the order of ``paths``.  Only the files of
    candidate pairs are decoded, each once."""
    if len(xb) != len(paths):
        raise ValueError(f"{len(xb)} embeddings for {len(paths)} paths")
    cache = SignalCache()

    def signals_of(row: int) -> ImageSignals:
        return cache.get(paths[row])

    in_store = (find_in_store(store, xb, signals_of, rule=rule, cache=cache) if store is not None
                else [None] * len(paths))
    in_batch = find_in_batch(xb, signals_of, rule=rule)
    logger.info("duplicate check of %d new files: %d files decoded", len(paths), len(cache))
    return [a if a is not None else b for a, b in zip(in_store, in_batch)]


def apply_policy(findings: list[DuplicateFinding | None], policy: str) -> tuple[np.ndarray, DuplicateCounts]:
    """The rows to store (``(m,) int64``) under ``policy`` and the counts of duplicates."""
    counts = DuplicateCounts(exact=sum(1 for f in findings if f is not None and f.exact),
                             near=sum(1 for f in findings if f is not None and not f.exact))
    found = counts.exact + counts.near
    if policy == "skip":  # a copy only the descriptor found is stored, and flagged
        stored = [i for i, f in enumerate(findings) if f is None or not f.verdict.confirmed]
        counts.skipped = len(findings) - len(stored)
        counts.flagged = found - counts.skipped
        return np.array(stored, dtype=np.int64), counts
    if policy == "flag":
        counts.flagged = found
    return np.arange(len(findings), dtype=np.int64), counts
