"""``IndexStore``: a faiss index, its SQLite metadata and a JSON manifest in one directory.

Scores: a neighbour's ``similarity`` is the raw inner product of L2-normalised vectors, i.e. the cosine in
[-1, 1] (approximate for IVF-PQ, which compares compressed codes); ``score = (1 + similarity) / 2``
clipped to [0, 1].

Concurrency: every public method is thread-safe. Searches and ``save`` share a read lock; ``add``,
``remove`` and ``compact`` take the write lock.  Unsaved changes live in memory until ``save()``;
ids handed out by an ``add`` that is never saved may be handed out again after a crash.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from index import factory, persist
from index.arrays import check_ids, check_positive_int, check_strings, check_vectors, normalized
from index.config import IndexConfig, choose_index_type
from index.errors import IndexStoreError
from index.metadata import ItemMeta, MetadataDB
from index.rwlock import RWLock

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Neighbor:
    """One search hit: ``similarity`` is the cosine in [-1, 1], ``score = (1 + similarity) / 2`` in [0, 1]."""

    id: int
    similarity: float
    score: float
    label: str
    path: str
    source: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class IndexStore:
    """Build with :meth:`create`, reopen with :meth:`open`; see the module docstring for guarantees."""

    def __init__(self, directory: str, dim: int, config: IndexConfig, manifest: dict, meta: MetadataDB,
                 index: faiss.Index | None) -> None:
        self._directory = directory
        self._dim = dim
        self._config = config
        self._manifest = manifest
        self._meta = meta
        self._index = index
        self._lock = RWLock()
        self._save_lock = threading.Lock()
        self._selector: faiss.IDSelector | None = None
        self._selector_parts: tuple = ()
        self._dirty = False
        self._refresh_selector()

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, directory: str | os.PathLike, dim: int, *, config: IndexConfig = IndexConfig(),
               model_info: dict) -> "IndexStore":
        """A new, empty index in ``directory`` (created if missing; must not already hold an index),
        saved at once.  ``model_info`` needs ``checkpoint_sha256``, ``embedding_dim`` (== ``dim``),
        ``metric`` and ``preprocess`` (a dict)."""
        dim = check_positive_int(dim, "dim")
        if not isinstance(config, IndexConfig):
            raise ValueError(f"config must be an IndexConfig, got {type(config).__name__}")
        model = persist.validate_model_info(model_info, dim)
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(os.path.join(directory, persist.MANIFEST)):
            raise IndexStoreError(f"{directory} already holds an index; open it or pick another directory")
        manifest = {"format": persist.FORMAT, "format_version": persist.FORMAT_VERSION, "generation": 0,
                    "dim": dim, "model": model, "config": config.to_dict(), "index_type": None,
                    "factory": None, "files": {}, "checksums": {}, "created_at": _now()}
        store = cls(directory, dim, config, manifest, MetadataDB.create(), None)
        if config.index_type in ("flat", "hnsw") or config.expected_size is not None:
            store._build_empty(config.expected_size or 0)
        store.save()
        return store

    @classmethod
    def open(cls, directory: str | os.PathLike, *, expect_model: dict | None = None,
             verify: bool = True) -> "IndexStore":
        """Load the index saved in ``directory``.

        Raises ``IndexMismatchError`` when ``expect_model`` differs from the stored model info in
        ``checkpoint_sha256``, ``embedding_dim``, ``metric`` or ``preprocess``, and ``IndexStoreError``
        when files are missing or corrupt (``verify`` checks their sha256 against the manifest).
        """
        directory = os.fspath(directory)
        manifest = persist.read_manifest(directory)
        if expect_model is not None:
            persist.check_model(manifest["model"], expect_model)
        try:
            config = IndexConfig.from_dict(manifest["config"])
            dim = int(manifest["dim"])
            files, sums = manifest["files"], manifest["checksums"]
            meta_name, index_name = files["metadata"], files.get("index")
        except (TypeError, ValueError, KeyError) as exc:
            raise IndexStoreError(f"index manifest in {directory} is invalid: {exc}") from None
        meta_path = persist.verify_file(directory, meta_name, sums.get("metadata") if verify else None)
        index = None
        if index_name is not None:
            index_path = persist.verify_file(directory, index_name, sums.get("index") if verify else None)
            try:
                index = faiss.read_index(index_path)
            except RuntimeError as exc:
                first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                raise IndexStoreError(f"faiss cannot read index file {index_path}: {first_line}") from None
            if index.d != dim:
                raise IndexStoreError(f"index file {index_path} has dimension {index.d}, manifest says {dim}")
        meta = MetadataDB.load(meta_path)
        store = cls(directory, dim, config, manifest, meta, index)
        expected = meta.count() + len(meta.tombstones())
        if (index.ntotal if index is not None else 0) != expected:
            meta.close()
            raise IndexStoreError(f"index in {directory} is inconsistent: faiss holds "
                                  f"{index.ntotal if index is not None else 0} vectors, metadata {expected}")
        logger.info("opened index %s: %d items, %s", directory, len(store), manifest.get("factory"))
        return store

    def _build_empty(self, n: int) -> None:
        index_type = choose_index_type(n, self._dim, self._config)
        fstring = factory.factory_string(index_type, self._dim, self._config, n)
        self._index = factory.new_index(fstring, self._dim, self._config)
        self._manifest.update(index_type=index_type, factory=fstring)
        logger.info("index type %s (%s) for %d expected vectors", index_type, fstring, n)

    # ------------------------------------------------------------------ properties
    @property
    def directory(self) -> str:
        return self._directory

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def config(self) -> IndexConfig:
        return self._config

    @property
    def index_type(self) -> str | None:
        """``"flat"``, ``"hnsw"``, ``"ivfpq"``, or None while an ``auto`` index is still empty."""
        return self._manifest["index_type"]

    @property
    def model_info(self) -> dict:
        return dict(self._manifest["model"])

    def __len__(self) -> int:
        return self._meta.count()

    # ------------------------------------------------------------------ mutation
    def add(self, vectors: np.ndarray, *, labels: list[str], paths: list[str],
            sources: list[str] | None = None) -> np.ndarray:
        """Append ``vectors: (n, d) float32`` with their labels/paths; returns their new ids, ``(n,) int64``."""
        xb = check_vectors(vectors, self._dim, "vectors")
        n = len(xb)
        labels = check_strings(labels, n, "labels")
        paths = check_strings(paths, n, "paths")
        sources = check_strings(sources, n, "sources", optional=True)
        if self._config.normalize and n:
            xb = normalized(xb, "vectors")
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        with self._lock.write():
            if self._index is None:
                self._build_empty(max(self._config.expected_size or 0, n))
            factory.train_if_needed(self._index, xb, self._config)
            ids = self._meta.allocate_ids(n)
            self._index.add_with_ids(xb, ids)
            self._meta.insert(ids, paths, labels, sources)
            self._dirty = True
        return ids

    def remove(self, ids: int | list[int] | np.ndarray) -> int:
        """Delete items by id (unknown or already deleted ids are ignored); returns how many were removed.

        Flat / IVF-PQ remove the vectors from faiss; HNSW (which cannot) records tombstones that every
        search filters out, until :meth:`compact` rebuilds the graph without them.
        """
        ids = check_ids(ids)
        with self._lock.write():
            if self._index is None or not len(ids):
                return 0
            is_hnsw = factory.hnsw_of(self._index) is not None
            deleted = self._meta.delete(ids, tombstone=is_hnsw)
            if len(deleted):
                if is_hnsw:
                    self._refresh_selector()
                else:
                    removed = self._index.remove_ids(faiss.IDSelectorBatch(deleted))
                    assert removed == len(deleted), (removed, len(deleted))
                self._dirty = True
        return len(deleted)

    def compact(self, *, force: bool = False) -> bool:
        """Rebuild an HNSW index without its tombstoned vectors when they exceed
        ``config.compact_fraction`` of the stored vectors (or whenever there are any, with ``force``).
        Returns whether it rebuilt.  No-op for Flat / IVF-PQ, which delete in place."""
        with self._lock.write():
            if self._index is None or factory.hnsw_of(self._index) is None:
                return False
            dead = self._meta.tombstones()
            if not len(dead) or (not force and len(dead) < self._config.compact_fraction * self._index.ntotal):
                return False
            ids, xb = factory.stored_ids(self._index), factory.stored_vectors(self._index)
            keep = ~np.isin(ids, dead)
            index = factory.new_index(self._manifest["factory"], self._dim, self._config)
            if keep.any():
                index.add_with_ids(np.ascontiguousarray(xb[keep]), ids[keep])
            self._index = index
            self._meta.clear_tombstones()
            self._refresh_selector()
            self._dirty = True
            logger.info("compacted HNSW index: dropped %d tombstones, %d vectors left", len(dead), index.ntotal)
            return True

    def _refresh_selector(self) -> None:
        dead = self._meta.tombstones()
        if not len(dead):
            self._selector, self._selector_parts = None, ()
            return
        batch = faiss.IDSelectorBatch(dead)
        # keep the Python objects alive as long as the selector that points at them
        self._selector, self._selector_parts = faiss.IDSelectorNot(batch), (batch, dead)

    # ------------------------------------------------------------------ search
    def search(self, xq: np.ndarray, k: int, *, ef_search: int | None = None,
               nprobe: int | None = None) -> list[list[Neighbor]]:
        """The ``k`` nearest items of each query ``xq: (nq, d) float32``, best first.

        Returns one list per query, shorter than ``k`` when the index holds fewer live items.
        ``ef_search`` (HNSW, raised to ``k`` if below) and ``nprobe`` (IVF) override the config defaults
        for this call.
        """
        xq = check_vectors(xq, self._dim, "xq")
        k = check_positive_int(k, "k")
        ef_search = check_positive_int(ef_search, "ef_search", allow_none=True) or self._config.ef_search
        nprobe = check_positive_int(nprobe, "nprobe", allow_none=True) or self._config.nprobe
        if self._config.normalize and len(xq):
            xq = normalized(xq, "xq")
        with self._lock.read():
            if self._index is None or self._index.ntotal == 0 or not len(xq):
                return [[] for _ in range(len(xq))]
            k = min(k, self._index.ntotal)
            # HNSW keeps only ef_search candidates: below k it would return fewer than k hits
            params = factory.search_params(self._index, ef_search=max(ef_search, k), nprobe=nprobe,
                                           selector=self._selector)
            threads = 1 if len(xq) < self._config.parallel_min_queries else faiss.omp_get_max_threads()
            with factory.omp_threads(threads):
                D, I = factory.search(self._index, xq, k, params)
            metas = self._meta.get_many(np.unique(I[I >= 0]))
        results = []
        for dists, ids in zip(D, I):
            hits = []
            for sim, i in zip(dists.tolist(), ids.tolist()):
                meta = metas.get(i)
                if i < 0 or meta is None:
                    continue
                sim = min(max(sim, -1.0), 1.0)
                hits.append(Neighbor(i, sim, (1.0 + sim) / 2.0, meta.label, meta.path, meta.source))
            results.append(hits)
        return results

    # ------------------------------------------------------------------ metadata
    def get(self, item_id: int) -> ItemMeta | None:
        """Metadata of one live item, or None if the id is unknown or deleted."""
        return self._meta.get_many([int(item_id)]).get(int(item_id))

    def label_counts(self) -> dict[str, int]:
        """Live items per label, sorted by label."""
        return self._meta.label_counts()

    def random_ids(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``min(n, len(self))`` distinct live ids drawn with ``rng``, ``(m,) int64``."""
        n = check_positive_int(n, "n")
        ids = self._meta.all_ids()
        return rng.choice(ids, size=min(n, len(ids)), replace=False) if len(ids) else ids

    def iter_items(self) -> Iterator[ItemMeta]:
        """Every live item in id order."""
        return self._meta.iter_items()

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids: (n,) int64, xb: (n, d) float32)`` of all live items sorted by id (as stored, i.e.
        normalised). Flat / HNSW only: IVF-PQ keeps compressed codes, not vectors."""
        with self._lock.read():
            if self._index is None:
                return np.zeros(0, dtype=np.int64), np.zeros((0, self._dim), dtype=np.float32)
            if not isinstance(self._index, faiss.IndexIDMap2):
                raise IndexStoreError("an IVF-PQ index stores compressed codes; its vectors are not kept")
            ids, xb = factory.stored_ids(self._index), factory.stored_vectors(self._index)
            dead = self._meta.tombstones()
        keep = ~np.isin(ids, dead) if len(dead) else np.ones(len(ids), dtype=bool)
        order = np.argsort(ids[keep], kind="stable")
        return ids[keep][order], xb[keep][order]

    def reconstruct(self, item_id: int) -> np.ndarray:
        """The stored vector of one live item, ``(d,) float32`` (Flat / HNSW only)."""
        item_id = int(item_id)
        if self.get(item_id) is None:
            raise KeyError(f"no item with id {item_id}")
        with self._lock.read():
            if not isinstance(self._index, faiss.IndexIDMap2):
                raise IndexStoreError("an IVF-PQ index stores compressed codes; its vectors are not kept")
            return factory.reconstruct(self._index, item_id)

    def stats(self) -> dict:
        """Counts (live items, stored vectors, tombstones, per label), index type and the manifest's info."""
        with self._lock.read():
            stored = self._index.ntotal if self._index is not None else 0
            tombstones = len(self._meta.tombstones())
            manifest = dict(self._manifest)
        return {"ntotal": stored - tombstones, "stored_vectors": stored, "tombstones": tombstones,
                "label_counts": self.label_counts(), "index_type": manifest["index_type"],
                "factory": manifest["factory"], "dim": self._dim, "metric": self._config.metric,
                "model": dict(manifest["model"]), "config": self._config.to_dict(),
                "generation": manifest["generation"], "created_at": manifest["created_at"],
                "updated_at": manifest.get("updated_at"), "unsaved_changes": self._dirty,
                "directory": self._directory}

    # ------------------------------------------------------------------ persistence
    def save(self) -> None:
        """Write a new generation crash-safely (see ``index.persist``); searches continue meanwhile."""
        with self._save_lock:
            self._save_generation()

    def _save_generation(self) -> None:
        with self._lock.read():
            gen = self._manifest["generation"] + 1
            d = self._directory
            files, sums = {"index": None}, {}
            if self._index is not None:
                files["index"] = persist.index_file(gen)
                persist.write_file_atomic(os.path.join(d, files["index"]),
                                          lambda tmp: faiss.write_index(self._index, tmp))
                sums["index"] = persist.sha256_file(os.path.join(d, files["index"]))
            files["metadata"] = persist.meta_file(gen)
            persist.write_file_atomic(os.path.join(d, files["metadata"]), self._meta.save)
            sums["metadata"] = persist.sha256_file(os.path.join(d, files["metadata"]))
            persist.fsync_dir(d)
            stored = self._index.ntotal if self._index is not None else 0
            tombstones = len(self._meta.tombstones())
            manifest = {**self._manifest, "generation": gen, "files": files, "checksums": sums,
                        "updated_at": _now(),
                        "counts": {"ntotal": stored - tombstones, "stored_vectors": stored,
                                   "tombstones": tombstones, "next_id": self._meta.next_id()}}
            persist.write_manifest(d, manifest)
            self._manifest = manifest
            self._dirty = False
        persist.remove_stale_generations(d, gen)  # under _save_lock: never races a concurrent save
        logger.info("saved index %s generation %d (%d vectors)", d, gen, stored)

    def close(self) -> None:
        """Release the metadata database (unsaved changes are dropped)."""
        with self._lock.write():
            self._meta.close()
            self._index = None
