"""Duplicates at ingestion: the policy of ``simsearch index build/add`` and ``POST /api/images``.

Each new item is compared with what the index already holds (and, for a collection, with the earlier items of the
same batch) under the rule of ``simsearch index dedup`` (:class:`similarity.hygiene.DuplicateRule`):

- **exact**: the same decoded pixels (:func:`similarity.hygiene.pixel_digest`);
- **near**: embedding cosine at least ``rule.cosine`` *and* pHash within ``rule.phash_bits`` (mirror included when
  ``rule.flips``).  A class-trained model's cosine is no proof on its own (30% of Fashion-MNIST images have a
  distinct neighbour at >= 0.99 with the demo model), so a cosine candidate counts only once the pixels confirm it;
- a candidate whose stored file cannot be read has no pixel signal: it counts (as near, not exact) only at cosine
  >= :data:`IDENTICAL_COSINE`, a threshold only identical pixels reach with the demo model (``tests/test_dedup.py``).

Policies: ``keep`` stores everything unchecked (no extra decoding, the behaviour before policies existed),
``flag`` (the default) stores the item and reports what it duplicates, ``skip`` stores nothing for a duplicate.
The check and the add are two steps: two identical uploads racing each other may both be stored.
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
from similarity.hygiene import DuplicateRule, HashCache, ImageHashes, hamming, phash_distance

logger = logging.getLogger(__name__)

DUPLICATE_POLICIES = ("keep", "skip", "flag")
DEFAULT_POLICY = "flag"
# Without the candidate's pixels only the embedding is left, and distinct images of one class reach 0.9999 with
# the demo model (tests/test_dedup.py): this stricter threshold is what identical pixels give (float rounding).
IDENTICAL_COSINE = 0.99999
BATCH_CHUNK = 512  # rows of the (chunk, n) cosine table within a batch


@dataclass(frozen=True)
class DuplicateFinding:
    """What a new item duplicates: an indexed item (``duplicate_of``, its id) or an earlier item of the same
    batch (``earlier_in_batch``, its row), with the embeddings' cosine and whether the pixels are the same."""

    similarity: float
    exact: bool
    duplicate_of: int | None = None
    earlier_in_batch: int | None = None


@dataclass(frozen=True)
class AddResult:
    """One upload's outcome: the stored item (or, when ``skipped``, the existing item it duplicates) and the
    duplicate found (``duplicate_of`` None when none was, or when the policy was ``keep``)."""

    item: ItemMeta
    duplicate_of: int | None = None
    similarity: float | None = None
    exact: bool = False
    skipped: bool = False


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


HashOf = Callable[[int], "ImageHashes | None"]  # row -> that new item's pixel signals (None: unreadable)


def _judge(new: ImageHashes | None, old: ImageHashes | None, similarity: float, rule: DuplicateRule) -> str | None:
    """"exact", "near" or None for one candidate pair already at cosine >= ``rule.cosine``."""
    if new is not None and old is not None:
        if new.exact == old.exact:
            return "exact"
        return "near" if phash_distance(new, old, flips=rule.flips) <= rule.phash_bits else None
    # a file unreadable: no pixel signal, so only a cosine that identical pixels give
    return "near" if similarity >= max(rule.cosine, IDENTICAL_COSINE) else None


def _search_stale_ok(store: VectorStore) -> Callable[[np.ndarray, int], list]:
    """``store.search`` for a check that may miss the writes of the last moments (a duplicate added at the
    same instant): on Milvus with Bounded consistency, which saves a server time tick per call; the embedded
    store is always fresh (catching up is one cheap query)."""
    if isinstance(store, MilvusStore):
        return functools.partial(store.search, consistency="Bounded")
    return store.search


def find_in_store(store: VectorStore, xq: np.ndarray, hash_of: HashOf, *, rule: DuplicateRule = DuplicateRule(),
                  neighbours: int = DEFAULT_NEIGHBOURS, cache: HashCache | None = None
                  ) -> list[DuplicateFinding | None]:
    """For each new item its duplicate among the indexed items, or None.  ``xq: (n, d) float32`` the new
    embeddings, ``hash_of(row)`` their pixel signals, asked for only when a row has a candidate.  Like ``index
    dedup``, the ``neighbours`` nearest items at cosine >= ``rule.cosine`` are the candidates (the nearest alone may
    be a distinct image of the same class); an exact one wins, else the most similar near one.  Candidate files are
    decoded once (``cache``)."""
    cache = cache if cache is not None else HashCache()
    search = _search_stale_ok(store)
    findings: list[DuplicateFinding | None] = []
    for start in range(0, len(xq), SEARCH_BATCH):
        rows = search(xq[start:start + SEARCH_BATCH], neighbours)
        for row_index, row in enumerate(rows, start):
            best = None
            for hit in row:  # best first
                if hit.similarity < rule.cosine:
                    break
                kind = _judge(hash_of(row_index), cache.get(hit.path), hit.similarity, rule)
                if kind == "exact":
                    best = DuplicateFinding(round(hit.similarity, 6), True, duplicate_of=hit.id)
                    break
                if kind == "near" and best is None:
                    best = DuplicateFinding(round(hit.similarity, 6), False, duplicate_of=hit.id)
            findings.append(best)
    return findings


class _RowHashes:
    """The pixel signals of a batch's rows as arrays, filled on demand (each row's file decoded once)."""

    def __init__(self, n: int, hash_of: HashOf) -> None:
        self.hash_of = hash_of
        self.known = np.zeros(n, dtype=bool)
        self.readable = np.zeros(n, dtype=bool)
        self.phash = np.zeros(n, dtype=np.uint64)
        self.mirror = np.zeros(n, dtype=np.uint64)
        self.digest = np.full(n, "", dtype=object)

    def ensure(self, rows: np.ndarray) -> None:
        for row in rows[~self.known[rows]].tolist():
            found = self.hash_of(row)
            self.known[row] = True
            if found is not None:
                self.readable[row] = True
                self.phash[row], self.mirror[row], self.digest[row] = found.phash, found.phash_mirror, found.exact


def find_in_batch(xb: np.ndarray, hash_of: HashOf, *, rule: DuplicateRule = DuplicateRule(),
                  chunk: int = BATCH_CHUNK) -> list[DuplicateFinding | None]:
    """For each row of a new batch its duplicate among the rows before it (``earlier_in_batch``), or None.
    ``xb: (n, d) float32`` L2-normalised embeddings; ``hash_of(row)`` is asked once, only for rows in a candidate
    pair.  The candidates are the earlier rows at cosine >= ``rule.cosine`` (a ``(chunk, n)`` table at a time:
    O(n^2 d) time, seconds for 60k items); the earliest exact copy among them wins (identical pixels embed
    identically, so a copy is always a candidate), else the most similar one the pHash confirms, as in
    :func:`find_in_store`."""
    n = len(xb)
    signals = _RowHashes(n, hash_of)
    findings: list[DuplicateFinding | None] = []
    for start in range(0, n, chunk):
        sims = xb[start:start + chunk] @ xb.T  # (c, n)
        for offset, row in enumerate(sims):
            i = start + offset
            candidates = np.flatnonzero(row[:i] >= rule.cosine)
            if not len(candidates):
                findings.append(None)
                continue
            signals.ensure(np.append(candidates, i))
            if signals.readable[i]:
                same = candidates[signals.digest[candidates] == signals.digest[i]]
                if len(same):
                    findings.append(DuplicateFinding(round(float(row[same[0]]), 6), True, earlier_in_batch=int(same[0])))
                    continue
                bits = hamming(signals.phash[i], signals.phash[candidates])
                if rule.flips:
                    bits = np.minimum(bits, np.minimum(hamming(signals.mirror[i], signals.phash[candidates]),
                                                       hamming(signals.phash[i], signals.mirror[candidates])))
                near = np.where(signals.readable[candidates], bits <= rule.phash_bits,
                                row[candidates] >= IDENTICAL_COSINE)
            else:  # no pixel signal for the new item: only a cosine that identical pixels give
                near = row[candidates] >= max(rule.cosine, IDENTICAL_COSINE)
            confirmed = candidates[near]
            if len(confirmed):
                j = int(confirmed[np.argmax(row[confirmed])])
                findings.append(DuplicateFinding(round(float(row[j]), 6), False, earlier_in_batch=j))
            else:
                findings.append(None)
    return findings


def find_new_duplicates(store: VectorStore | None, xb: np.ndarray, paths: list[str], *,
                        rule: DuplicateRule = DuplicateRule()) -> list[DuplicateFinding | None]:
    """Each new file's duplicate in ``store`` (if given and not empty), else among the earlier files of the
    batch, else None.  ``xb: (n, d) float32`` their embeddings, in the order of ``paths``.  Only the files of
    candidate pairs are decoded, each once."""
    cache = HashCache()

    def hash_of(row: int) -> ImageHashes | None:
        return cache.get(paths[row])

    in_store = (find_in_store(store, xb, hash_of, rule=rule, cache=cache) if store is not None
                else [None] * len(paths))
    in_batch = find_in_batch(xb, hash_of, rule=rule)
    logger.info("duplicate check of %d new files: %d files decoded", len(paths), len(cache))
    return [a if a is not None else b for a, b in zip(in_store, in_batch)]


def apply_policy(findings: list[DuplicateFinding | None], policy: str) -> tuple[np.ndarray, DuplicateCounts]:
    """The rows to store (``(m,) int64``) under ``policy`` and the counts of duplicates."""
    counts = DuplicateCounts(exact=sum(1 for f in findings if f is not None and f.exact),
                             near=sum(1 for f in findings if f is not None and not f.exact))
    found = counts.exact + counts.near
    if policy == "skip":
        counts.skipped = found
        return np.array([i for i, f in enumerate(findings) if f is None], dtype=np.int64), counts
    if policy == "flag":
        counts.flagged = found
    return np.arange(len(findings), dtype=np.int64), counts
