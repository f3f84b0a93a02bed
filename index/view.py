"""``IndexView``: one process's FAISS index over the items of the change log up to a sequence number.

The view is never the truth: it is loaded from a snapshot file (a FAISS index stamped with the log seq it
covers) and caught up by applying the log's tail; it can always be rebuilt from the vectors in SQLite.

Deletes are tombstones for every index type: the id is filtered out of searches with an ``IDSelector`` and
stays in the FAISS structure until the next rebuild (compaction).  That keeps every applied change O(1)
(``remove_ids`` on a flat index shifts the whole array; HNSW cannot remove at all).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import BinaryIO

import faiss
import numpy as np

from index import factory
from index.config import IndexConfig
from index.db import Changes
from index.rwlock import RWLock

logger = logging.getLogger(__name__)


class IndexView:
    """A FAISS index (None while the index type is undecided), its tombstones and the log seq it reflects.

    ``lock``: searches and serialisation hold it shared; applying changes holds it exclusively."""

    def __init__(self, index: faiss.Index | None, *, dim: int, config: IndexConfig, index_type: str | None,
                 factory_string: str | None, seq: int, gen: int, tombstones: np.ndarray | None = None,
                 trained_on: int = 0) -> None:
        self.index = index
        self.dim = dim
        self.config = config
        self.index_type = index_type
        self.factory = factory_string
        self.seq = seq
        self.gen = gen
        self.trained_on = trained_on
        self.lock = RWLock()
        self._dead: set[int] = set() if tombstones is None else {int(i) for i in tombstones}
        self._selector: faiss.IDSelector | None = None
        self._selector_parts: tuple = ()
        self._refresh_selector()

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, dim: int, config: IndexConfig, index_type: str | None, factory_string: str | None,
              seq: int = 0, gen: int = 0) -> "IndexView":
        index = factory.new_index(factory_string, dim, config) if factory_string else None
        return cls(index, dim=dim, config=config, index_type=index_type, factory_string=factory_string,
                   seq=seq, gen=gen)

    @classmethod
    def build(cls, chunks: Iterable[tuple[np.ndarray, np.ndarray]], *, sample: Callable[[int], np.ndarray],
              dim: int, config: IndexConfig, index_type: str, factory_string: str, seq: int) -> "IndexView":
        """A fresh view, no tombstones: trained first (IVF) on ``sample(m)``, which returns ``(<= m, d) float32``
        training vectors, then given ``chunks`` of ``(ids (c,) int64, xb (c, d) float32)`` one at a time, so
        that the build holds the index and one chunk, never every vector at once."""
        index = factory.new_index(factory_string, dim, config)
        size = factory.training_size(index, config)
        trained = factory.train_if_needed(index, sample(size), config) if size else 0
        with factory.omp_threads(faiss.omp_get_max_threads()):
            for ids, xb in chunks:
                if len(ids):
                    index.add_with_ids(np.ascontiguousarray(xb), ids)
        # ``trained_on`` counts the collection the quantizer was trained for (its sample stands for all of it):
        # compaction retrains once the collection has grown well past it, not at every snapshot of a large one
        trained_on = max(trained, index.ntotal) if trained else 0
        return cls(index, dim=dim, config=config, index_type=index_type, factory_string=factory_string, seq=seq,
                   gen=0, trained_on=trained_on)

    @classmethod
    def from_file(cls, handle: BinaryIO, *, dim: int, config: IndexConfig, index_type: str,
                  factory_string: str, seq: int, gen: int, tombstones: np.ndarray,
                  trained_on: int) -> "IndexView":
        """A view read from an open snapshot file (streamed: no second copy of the index in memory)."""
        index = faiss.read_index(faiss.PyCallbackIOReader(handle.read))
        if index.d != dim:
            raise ValueError(f"snapshot has dimension {index.d}, the index {dim}")
        _apply_search_defaults(index, config)
        return cls(index, dim=dim, config=config, index_type=index_type, factory_string=factory_string, seq=seq,
                   gen=gen, tombstones=tombstones, trained_on=trained_on)

    # ------------------------------------------------------------------ state
    @property
    def stored(self) -> int:
        return int(self.index.ntotal) if self.index is not None else 0

    @property
    def live(self) -> int:
        return self.stored - len(self._dead)

    @property
    def is_trained(self) -> bool:
        return self.index is None or bool(self.index.is_trained)

    def tombstones(self) -> np.ndarray:
        return np.array(sorted(self._dead), dtype=np.int64)

    @property
    def tombstone_count(self) -> int:
        return len(self._dead)

    # ------------------------------------------------------------------ changes (hold lock.write())
    def apply(self, changes: Changes) -> None:
        """Apply a resolved log tail: O(1) per change (adds go into FAISS, deletes become tombstones)."""
        if len(changes.add_ids):
            if self.index is None or not self.index.is_trained:
                raise RuntimeError("apply() on a view without a trained index; the store rebuilds instead")
            # a few adds in one OpenMP thread, as a few queries: a thread team's wake-up on busy cores costs
            # milliseconds (measured: one IVF-PQ add 0.035 ms in one thread, up to 11 ms in two)
            few = len(changes.add_ids) < self.config.parallel_min_queries
            with factory.omp_threads(1 if few else faiss.omp_get_max_threads()):
                self.index.add_with_ids(np.ascontiguousarray(changes.add_vectors), changes.add_ids)
        if len(changes.delete_ids):
            self._dead.update(int(i) for i in changes.delete_ids)
            self._refresh_selector()
        self.seq = changes.head

    def _refresh_selector(self) -> None:
        if not self._dead:
            self._selector, self._selector_parts = None, ()
            return
        dead = np.fromiter(self._dead, dtype=np.int64, count=len(self._dead))
        batch = faiss.IDSelectorBatch(dead)
        # keep the Python objects alive as long as the selector that points at them
        self._selector, self._selector_parts = faiss.IDSelectorNot(batch), (batch, dead)

    # ------------------------------------------------------------------ reads (hold lock.read())
    def search(self, xq: np.ndarray, k: int, *, ef_search: int, nprobe: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(D, I)``, each ``(nq, k')`` with ``k' = min(k, live)``; -1 ids pad short rows.  ``allowed``
        (``(m,) int64``): search only among these ids (a label filter), inside the FAISS search itself."""
        limit = self.live if allowed is None else min(self.live, len(allowed))
        if self.index is None or limit <= 0 or not len(xq):
            return np.zeros((len(xq), 0), np.float32), np.zeros((len(xq), 0), np.int64)
        k = min(k, limit)
        selector = self._selector
        if allowed is not None:  # ``batch`` and ``allowed`` stay referenced here until the search returns
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
            batch = selector = faiss.IDSelectorBatch(allowed)
            if self._selector is not None:
                selector = faiss.IDSelectorAnd(batch, self._selector)
        # HNSW keeps only ef_search candidates: below k it would return fewer than k hits
        params = factory.search_params(self.index, ef_search=max(ef_search, k), nprobe=nprobe, selector=selector)
        threads = 1 if len(xq) < self.config.parallel_min_queries else faiss.omp_get_max_threads()
        with factory.omp_threads(threads):
            return factory.search(self.index, xq, k, params)

    def rerank_depth(self, k: int, rerank: int) -> int | None:
        """How many candidates to take from FAISS and re-rank exactly for ``k`` results: ``max(k, rerank)`` for
        compressed codes (``ivfpq``); None where the view's own scores are exact, or ``rerank`` is 0."""
        return max(k, rerank) if self.index_type == "ivfpq" and rerank else None

    def write(self, path: str) -> None:
        """Write the FAISS index to the file ``path`` (streamed by faiss: no second copy in memory, as
        ``faiss.serialize_index`` would make); the caller holds ``lock.read()``."""
        assert self.index is not None
        faiss.write_index(self.index, path)

    @property
    def bytes_per_vector(self) -> float | None:
        """Resident bytes of the FAISS index per stored vector (:func:`factory.index_bytes`), None when empty."""
        return round(factory.index_bytes(self.index) / self.stored, 1) if self.stored else None


def _apply_search_defaults(index: faiss.Index, config: IndexConfig) -> None:
    hnsw = factory.hnsw_of(index)
    if hnsw is not None:
        hnsw.hnsw.efSearch = config.ef_search
    ivf = factory.ivf_of(index)
    if ivf is not None:
        factory.set_nprobe(ivf, config.nprobe)
